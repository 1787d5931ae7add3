"""AMOS22 converter on a tiny fake copy of the downloaded layout."""

from __future__ import annotations

import json

import pytest
from fedgin.tools.data.datasets import amos
from fedgin.tools.data.datasets.common import DatasetError, Options
from helpers import write_nifti

# structures in blocks 0..3: liver (6), spleen (1), stomach (7, not ours), pancreas (10)
IDS = [6, 1, 7, 10]
DATASET_JSON = {
    "name": "AMOS",
    "labels": {
        "0": "background",
        "1": "spleen",
        "2": "right kidney",
        "3": "left kidney",
        "4": "gall bladder",
        "5": "esophagus",
        "6": "liver",
        "7": "stomach",
        "8": "arota",
        "9": "postcava",
        "10": "pancreas",
    },
}


def make_amos(root, fake, tr=(1, 3, 4, 5, 6, 507, 508, 509), va=(8, 510), ts=(2,)):
    for folder, ids, labelled in (("Tr", tr, True), ("Va", va, True), ("Ts", ts, False)):
        for i in ids:
            name = f"amos_{i:04d}.nii.gz"
            write_nifti(root / f"images{folder}" / name, fake.image_volume(i))
            if labelled:
                write_nifti(root / f"labels{folder}" / name, fake.label_volume(IDS))
    (root / "dataset.json").write_text(json.dumps(DATASET_JSON))
    return root


def test_ct_and_mr_sites_with_the_official_validation_split(tmp_path, fake, load_site):
    src = make_amos(tmp_path / "amos22", fake)
    sites = amos.convert(src, tmp_path / "out", options=Options(val=0.1, test=1, seed=3))
    assert set(sites) == {"amos-ct", "amos-mr"}
    ct = json.loads((tmp_path / "out" / "amos-ct" / "datalist.json").read_text())
    assert ct["validation"] == [{"image": "imagesVa/amos_0008.nii.gz", "label": "labelsVa/amos_0008.nii.gz"}]
    ct_train = {e["image"] for e in ct["training"]}
    assert len(ct["test"]) == 1 and len(ct_train) == 4 and ct["test"][0]["image"] not in ct_train
    assert all(int(e["image"][-11:-7]) <= 500 for s in ct.values() for e in s)  # CT ids only
    mr = json.loads((tmp_path / "out" / "amos-mr" / "datalist.json").read_text())
    assert [e["image"] for e in mr["validation"]] == ["imagesVa/amos_0510.nii.gz"]
    assert all(int(e["image"][-11:-7]) > 500 for s in mr.values() for e in s)

    site, data, counts = load_site(sites["amos-ct"])
    assert site.modality == "CT" and site.data_root == src.resolve()
    # classes: 1 liver (AMOS 6), 2 spleen (AMOS 1), 5 pancreas (AMOS 10); stomach (7) is background
    n = len(ct["training"])
    assert counts == {1: n * fake.block_voxels(0), 2: n * fake.block_voxels(1), 5: n * fake.block_voxels(3)}
    assert site.labels["gallbladder"] == (4,) and site.labels["kidney_right"] == (2,)
    _, mr_data, _ = load_site(sites["amos-mr"])
    assert mr_data.modality == "MR"


def test_one_modality_site_name_and_cap(tmp_path, fake):
    src = make_amos(tmp_path / "amos22", fake)
    sites = amos.convert(src, tmp_path / "out", "MR", Options(max_cases=1), site_name="hospital-mr")
    datalist = json.loads((tmp_path / "out" / "hospital-mr" / "datalist.json").read_text())
    assert list(sites) == ["hospital-mr"]
    assert all(len(v) <= 1 for v in datalist.values()) and len(datalist["training"]) == 1


def test_errors_name_the_folder_and_problem(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty/imagesTr: expected the AMOS22 imagesTr folder"):
        amos.convert(tmp_path / "empty", tmp_path / "out")
    src = make_amos(tmp_path / "ct_only", fake, tr=(1, 3), va=(), ts=())
    with pytest.raises(DatasetError, match="no labelled MR case"):
        amos.convert(src, tmp_path / "out", "MR")
    with pytest.raises(DatasetError, match="AMOS22 has no heart"):
        amos.convert(src, tmp_path / "out", options=Options(task="heart"))
    (src / "dataset.json").write_text(json.dumps({"labels": {"6": "stomach"}}))
    with pytest.raises(DatasetError, match="label 6 is 'stomach', expected liver"):
        amos.convert(src, tmp_path / "out")
