"""The quick study end to end: every method trains (federated ones in the real FLARE simulator),
the report holds every setting, method, test modality and organ, and a re-run reuses finished runs."""

import csv
import json

import pytest
from fedgin.tools.cli import build_parser
from fedgin.tools.study.commands import experiment_config
from fedgin.tools.study.experiment import ExperimentConfig, run_grid
from fedgin.tools.study.experiment.report import METHOD_LABELS
from helpers import ABDOMEN, REPO, TINY_TRAINING


def test_cli_quick_grid_is_the_quick_config():
    args = build_parser().parse_args(["experiment", "--quick", "--rounds", "3"])
    assert experiment_config(args) == ExperimentConfig.quick().with_overrides(rounds=3)
    args = build_parser().parse_args(["experiment", "--seeds", "2", "--ratios", "1,5", "--partial-organs", ""])
    config = experiment_config(args)
    assert config.seeds == (0, 1) and config.ratios == (1, 5) and "partial_mri1_ct2" not in config.settings()
    args = build_parser().parse_args(["experiment", "--partial-methods", "fedgin_marginal"])
    partial = [r.method for r in experiment_config(args).runs() if r.setting.startswith("partial")]
    assert partial == ["fedgin_marginal"] * 3  # three seeds
    with pytest.raises(ValueError, match="unknown partial-labels method"):
        ExperimentConfig(partial_methods=("fedgin",))
    args = build_parser().parse_args(["experiment", "--ratios", "1", "--augmentations", "randconv,gin_ipa"])
    config = experiment_config(args)
    # The comparison's ratio (1:2) joins the grid with the baselines it is compared against.
    assert config.settings()[:2] == ["mri1_ct1", "mri1_ct2"]
    assert {"centralized_gin", "fedavg_randconv", "centralized_gin_ipa"} <= set(config.methods_for(2))
    assert "fedavg_randconv" not in config.methods_for(1)


@pytest.mark.simulator
def test_quick_study_runs_every_method_and_writes_the_report(tmp_path):
    # The --quick grid, shrunk further for CI: same settings and methods, tiny data and model.
    config = ExperimentConfig.quick().with_overrides(
        rounds=2,
        training=TINY_TRAINING,
        phantom_size=0.4,
        phantom_cases={"CT": [2, 1, 1], "MR": [2, 1, 1]},
        methods=("local_ct", "local_mri", "centralized", "centralized_gin", "fedavg", "fedgin"),
        # The family with its own plumbing (norm weights kept per site); the others (gin_ipa, randconv,
        # amplitude) take plain GIN's path through the study (every family trains in test_augmentation).
        augmentations=("local_norm",),
        partial_methods=("fedgin_marginal", "fedgin_background"),  # FedAvg's pair runs the same way
    )
    lines = []
    outcome = run_grid(config, tmp_path / "study", REPO / "jobs", echo=lines.append)
    assert outcome["failed"] == {}
    ran = {(r["setting"], r["method"]) for r in outcome["results"]}
    assert ran == {(run.setting, run.method) for run in config.runs()}
    families = ("randconv", "amplitude", "gin_ipa")
    left_out = {f"{kind}_{family}" for kind in ("fedavg", "centralized") for family in families}
    left_out |= {"fedavg_marginal", "fedavg_background"}
    assert {m for _, m in ran} == set(METHOD_LABELS) - left_out  # every other method of the study ran

    report = outcome["report"]
    text = (report / "report.md").read_text()
    for heading in ("MRI:CT training cases 1:2", "zero MRI labels", "partial labels"):
        assert heading in text
    for method, label in METHOD_LABELS.items():
        assert method in left_out or f"| {label} |" in text or f" {label} |" in text
    assert "FedGIN over FedAvg, MRI" in text and "FedGIN as % of centralized, CT" in text
    assert "FedGIN: marginal loss over absent = background, MRI" in text
    # The augmentation comparison: every family trained centralized and federated (through FLARE).
    assert "## Augmentation families" in text and "**FedAvg, test on MRI**" in text
    assert "| family | ms per step | extra vs none |" in text
    for family in ("local_norm",):
        run = next(r for r in outcome["results"] if r["method"] == f"fedavg_{family}")
        assert run["augmentation"] == family and run["steps"] > 0 and run["progress"]
        run = next(r for r in outcome["results"] if r["method"] == f"centralized_{family}")
        assert run["augmentation"] == family and run["steps"] > 0
    centralized_table = text.split("**centralized, test on CT**")[1].split("**FedAvg")[0]
    assert "| domain-specific norm (DSBN / FedBN) |" in centralized_table
    # Domain-specific norm: each site was scored with the shared weights plus its own norm weights,
    # kept at the site (FedBN) or per site in one process (DSBN).
    fedbn = tmp_path / "study/runs/mri1_ct2/fedavg_local_norm/seed0"
    assert (fedbn / "site_model_site-ct.pt").is_file() and (fedbn / "site_model_site-mri.pt").is_file()
    dsbn = tmp_path / "study/runs/mri1_ct2/centralized_local_norm/seed0"
    assert (dsbn / "model_site-ct.pt").is_file() and (dsbn / "model_site-mri.pt").is_file()
    with (report / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    fed = {(r["test_modality"], r["organ"]) for r in rows if r["method"] == "fedgin" and r["setting"] == "mri1_ct2"}
    assert fed >= {(m, o) for m in ("CT", "MRI") for o in ABDOMEN + ["mean"]}
    summary = json.loads((report / "summary.json").read_text())["summary"]
    assert set(summary) == set(config.settings())
    for setting in config.settings():
        assert (report / f"dice_{setting}.png").stat().st_size > 10_000
    assert (report / "rounds_mri1_ct2.png").stat().st_size > 10_000
    # Federated runs went through FLARE: per-round records of both sites.
    fedgin = next(r for r in outcome["results"] if r["method"] == "fedgin")
    assert {p["site"] for p in fedgin["progress"]} == {"site-ct", "site-mri"}
    # Partial labels: the MRI site trained without pancreas and gallbladder, was scored on all organs.
    partial = next(r for r in outcome["results"] if r["method"] == "fedgin_marginal")
    assert {"pancreas", "gallbladder"} & set(partial["dice"]["MRI"])

    # Resumable: a re-run trains nothing and gives the same report numbers.
    before = (report / "results.csv").read_text()
    lines.clear()
    again = run_grid(config, tmp_path / "study", REPO / "jobs", echo=lines.append)
    assert sum("reused" in line for line in lines) == len(config.runs())
    assert not any("training ..." in line for line in lines)
    assert (again["report"] / "results.csv").read_text() == before
