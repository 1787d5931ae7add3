"""The study's grid: settings, ratios, partial labels, fingerprints, and the report's arithmetic."""

import json

import pytest
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.study.experiment.grid import ExperimentConfig, Run
from fedgin.tools.study.experiment.report import markdown, summarize
from fedgin.tools.study.experiment.sites import _case_counts, prepare_setting

MOD = {"ct": "CT", "mr": "MR"}


@pytest.mark.parametrize(
    ("counts", "k", "expected"),
    [
        ({"ct": 10, "mr": 10}, 1, {"ct": 10, "mr": 10}),
        ({"ct": 10, "mr": 10}, 2, {"ct": 10, "mr": 5}),
        ({"ct": 10, "mr": 10}, 5, {"ct": 10, "mr": 2}),
        ({"ct": 10, "mr": 3}, 1, {"ct": 3, "mr": 3}),  # MRI short: CT is cut to keep the ratio
        ({"ct": 10, "mr": 10}, None, {"ct": 10, "mr": 0}),  # zero MRI labels
    ],
)
def test_ratio_case_counts(counts, k, expected):
    assert _case_counts(counts, MOD, k) == expected


def test_settings_cut_training_lists_and_partial_sites_lose_organs(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", size=0.25, max_cases=4)
    ratio = prepare_setting("mri1_ct2", sites, tmp_path / "r")
    assert ratio.n_train == {"site-ct": 4, "site-mri": 2}  # 4 CT and 3 MRI cases exist
    partial = prepare_setting("partial_mri1_ct2", sites, tmp_path / "p", ("pancreas", "gallbladder"))
    mr = json.loads(partial.train["site-mri"].read_text())
    ct = json.loads(partial.train["site-ct"].read_text())
    assert "pancreas" not in mr["labels"] and "gallbladder" not in mr["labels"] and "liver" in mr["labels"]
    assert "pancreas" in ct["labels"]
    # Evaluation always uses the original configs: every test volume, every label.
    assert partial.evaluate == {k: v for k, v in sites.items()}
    zero = prepare_setting("mri0", sites, tmp_path / "z")
    assert list(zero.train) == ["site-ct"]
    # MRI short for 1:1: CT is cut to 3. Smaller ratios keep a subset of the larger ones' MRI cases.
    assert prepare_setting("mri1_ct1", sites, tmp_path / "r1").n_train == {"site-ct": 3, "site-mri": 3}
    two, one = ((tmp_path / d / "site-mri_datalist.json").read_text() for d in ("r", "r1"))
    two, one = ([c["image"] for c in json.loads(t)["training"]] for t in (two, one))
    assert len(two) == 2 and set(two) < set(one)


def test_grid_runs_and_fingerprints():
    config = ExperimentConfig(ratios=(1, 5), seeds=(0, 1), methods=("fedavg", "fedgin"))
    runs = config.runs()
    assert Run("mri1_ct5", "fedgin", 1) in runs and Run("mri0", "local_ct_gin", 0) in runs
    assert Run("partial_mri1_ct2", "fedgin_background", 1) in runs
    assert Run("partial_mri1_ct2", "fedavg_marginal", 0) in runs
    assert len(runs) == 2 * (2 * 2 + 2 + 4)
    run = Run("mri1_ct1", "fedgin", 0)
    # A run is reused only while what decides its result is unchanged; the grid's extent does not matter.
    assert config.fingerprint(run) == config.with_overrides(seeds=(0, 1, 2), ratios=(1,)).fingerprint(run)
    assert config.fingerprint(run) != config.with_overrides(rounds=3).fingerprint(run)
    assert config.fingerprint(run) == config.with_overrides(partial_organs=("liver",)).fingerprint(run)
    with pytest.raises(ValueError, match="unknown method"):
        ExperimentConfig(methods=("fedprox",))


def test_report_gain_is_relative_as_in_the_paper():
    """The paper's "498 %": (new - old) / old; FedGIN as a share of centralized."""

    def result(method, seed, mri):
        return {
            "setting": "mri1_ct1",
            "method": method,
            "seed": seed,
            "n_train_cases": {"CT": 2, "MRI": 2},
            "dice": {"CT": {"pancreas": 0.5}, "MRI": {"pancreas": mri}},
            "mean_dice": {"CT": 0.5, "MRI": mri},
            "train_s": 1.0,
            "progress": [],
        }

    results = [
        result("fedavg", 0, 0.07),
        result("fedavg", 1, 0.07),
        result("fedgin", 0, 0.40),
        result("fedgin", 1, 0.44),
        result("centralized", 0, 0.5),
    ]
    from fedgin.tools.study.experiment.report import long_rows

    summary = summarize(long_rows(results))
    stats = summary["mri1_ct1"]["fedgin"]["MRI"]["pancreas"]
    assert stats["mean"] == pytest.approx(0.42) and stats["std"] == pytest.approx(0.02828, abs=1e-4)
    text = markdown(ExperimentConfig(ratios=(1,), zero_mri=False, partial_organs=()), results, {}, summary)
    assert "0.420 ± 0.028" in text
    assert "+500 %" in text  # (0.42 - 0.07) / 0.07
    assert "84 %" in text  # FedGIN MRI 0.42 of centralized 0.5
