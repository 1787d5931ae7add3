import json

import pytest
from fedgin.seg.site_config import SiteConfigError, load_site_config, with_absolute_paths


def _write(tmp_path, **cfg):
    base = {"modality": "CT", "data_root": ".", "datalist": "datalist.json", "labels": {"liver": 6}}
    base.update(cfg)
    base = {k: v for k, v in base.items() if v is not None}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    path = tmp_path / "site.json"
    path.write_text(json.dumps(base))
    return path


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path):
    cfg = load_site_config(_write(tmp_path, labels={"liver": 6, "heart": [205, 500]}, modality="mri"))
    assert cfg.modality == "MR"
    assert cfg.data_root == tmp_path.resolve()
    assert cfg.labels == {"liver": (6,), "heart": (205, 500)}
    assert cfg.missing_organs(["liver", "spleen"]) == ["spleen"]


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(SiteConfigError, match="unknown key.*'modalty'"):
        load_site_config(_write(tmp_path, modalty="CT"))


def test_missing_key_is_named(tmp_path):
    with pytest.raises(SiteConfigError, match=r"missing required key.*'labels'"):
        load_site_config(_write(tmp_path, labels=None))


def test_unknown_modality(tmp_path):
    with pytest.raises(SiteConfigError, match="unknown modality 'PET'"):
        load_site_config(_write(tmp_path, modality="PET"))


@pytest.mark.parametrize("labels", [{"liver": 0}, {"liver": "6"}, {"liver": []}, {}])
def test_bad_label_ids(tmp_path, labels):
    with pytest.raises(SiteConfigError, match="labels"):
        load_site_config(_write(tmp_path, labels=labels))


def test_error_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SiteConfigError, match="broken.json"):
        load_site_config(path)


def test_missing_data_file_is_named(tmp_path):
    cfg = load_site_config(_write(tmp_path))
    with pytest.raises(SiteConfigError, match=r"training\[0\] image file .*a.nii.gz does not exist"):
        cfg.cases("training")


def test_with_absolute_paths(tmp_path):
    raw = with_absolute_paths(_write(tmp_path))
    assert raw["data_root"] == str(tmp_path.resolve())
    assert raw["datalist"] == str(tmp_path.resolve() / "datalist.json")


def test_example_site_configs_describe_the_phantom_sites(tmp_path):
    from fedgin.tools.data.phantoms import generate_phantom_dataset
    from helpers import REPO

    generated = generate_phantom_dataset("abdomen", tmp_path, size=0.25, max_cases=1)
    for name, path in generated.items():
        example = json.loads((REPO / "site_configs" / f"{name}.json").read_text())
        made = json.loads(path.read_text())
        assert example["labels"] == made["labels"] and example["modality"] == made["modality"]
        assert example.get("eval_labels") == made.get("eval_labels")
        assert example["data_root"] == f"../workspace/demo/data/{name}"  # where the demo writes them


def test_eval_labels_name_what_the_held_out_volumes_carry(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "site.json"
    base = {"modality": "MR", "data_root": "data", "datalist": "dl.json", "labels": {"liver": 1}}
    path.write_text(json.dumps({**base, "eval_labels": {"liver": 1, "pancreas": [5, 6]}}))
    cfg = load_site_config(path)
    assert cfg.labels == {"liver": (1,)}
    assert cfg.scoring_config().labels == {"liver": (1,), "pancreas": (5, 6)}
    path.write_text(json.dumps(base))
    plain = load_site_config(path)
    assert plain.eval_labels is None and plain.scoring_config() is plain


@pytest.mark.parametrize(
    "eval_labels, message",
    [
        ({"pancreas": 5}, r"'eval_labels' must name every organ of 'labels'; it lacks \['liver'\]"),
        ({"liver": 0}, r"eval_labels\['liver'\] must be a positive integer id"),
        ([1, 2], r"'eval_labels' must map organ names to label ids"),
    ],
)
def test_bad_eval_labels_are_named(tmp_path, eval_labels, message):
    (tmp_path / "data").mkdir()
    path = tmp_path / "site.json"
    raw = {
        "modality": "MR",
        "data_root": "data",
        "datalist": "dl.json",
        "labels": {"liver": 1},
        "eval_labels": eval_labels,
    }
    path.write_text(json.dumps(raw))
    with pytest.raises(SiteConfigError, match=message):
        load_site_config(path)
