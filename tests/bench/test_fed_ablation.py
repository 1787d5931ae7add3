"""bench/fed_ablation.py: its in-process FedAvg is the FLARE job's, so its ablations speak for the job."""

import importlib.util
import json
import sys
import tempfile

import numpy as np
import pytest
import torch
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.simulation import simulate
from helpers import REPO, TINY_TRAINING


def load_ablation():
    spec = importlib.util.spec_from_file_location("fed_ablation", REPO / "bench" / "fed_ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_variant_parsing_splits_training_and_federation_options():
    ablation = load_ablation()
    name, training, federation = ablation.parse_variant("small:lr=0.0005,model.num_res_units=2,filter=0")
    assert name == "small"
    assert training == {"lr": 0.0005, "model": {"num_res_units": 2}}
    _, training, _ = ablation.parse_variant("big:spatial_size=[192,192],lr=0.001")
    assert training == {"spatial_size": [192, 192], "lr": 0.001}
    assert federation == {**ablation.FEDERATION_KEYS, "filter": 0}
    with pytest.raises(SystemExit, match="weighting"):
        ablation.parse_variant("x:weighting=sometimes")


@pytest.mark.simulator
def test_in_process_fedavg_gives_the_flare_simulators_global_model(tmp_path, monkeypatch):
    ablation = load_ablation()
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=5, size=0.5, max_cases=1)
    monkeypatch.setattr(tempfile, "tempdir", tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short socket paths
    job = REPO / "jobs/fedgin_abdomen"
    flare = simulate(
        job,
        sites,
        tmp_path / "ws",
        num_rounds=2,
        executor_overrides=TINY_TRAINING,
        evaluate_split=None,
        echo=None,
        timeout_s=300,
    )
    flare_state = torch.load(flare.global_model, weights_only=True)["model"]

    run = ablation.Sites({name: str(path) for name, path in sites.items()})
    result = ablation.run_variant(job, run, "defaults", TINY_TRAINING, dict(ablation.FEDERATION_KEYS), 2, 0, echo=None)
    ours = result["model"]
    assert set(ours) == set(flare_state)
    # Same seeds, data, filter (PercentilePrivacy), step weighting and order of float32 sums as
    # FLARE's aggregator: the same global model, bit for bit.
    worst = max(float((torch.as_tensor(ours[k]) - flare_state[k]).abs().max()) for k in ours)
    assert worst == 0.0, worst
    # ... and a variant that changes the weighting moves it by far more than that.
    equal = ablation.run_variant(
        job, run, "equal", TINY_TRAINING, {**ablation.FEDERATION_KEYS, "weighting": "equal"}, 2, 0, echo=None
    )
    moved = max(float((torch.as_tensor(equal["model"][k]) - flare_state[k]).abs().max()) for k in ours)
    assert moved > 100 * max(worst, 1e-7)
    # The checkpoint chosen on validation is one of the rounds' global models, scored on the test split.
    assert result["best_val_round"] in (1, 2)
    if result["best_val_round"] == 2:
        assert all((result["best_val_model"][k] == ours[k]).all() for k in ours)
    assert set(result["test_best_val"]) == set(result["test"])
    # The phantom MRI site trains without pancreas and gallbladder labels and is scored on them.
    assert result["transferred"] == {"site-ct": [], "site-mri": ["pancreas", "gallbladder"]}
    assert "dice_pancreas" in result["test"]["site-mri"]
    assert [p["round"] for p in result["val_curve"]] == [1, 2]
    assert "dice_gallbladder" in result["val_curve"][-1]["site-mri"]
    json.dumps({k: v for k, v in result.items() if k not in ("model", "best_val_model", "config")})  # plain JSON


def test_the_best_checkpoint_is_the_round_with_the_best_mean_validation_dice():
    ablation = load_ablation()
    best = ablation.BestCheckpoint()

    def val(ct, mri):
        return {"site-ct": {"mean_dice": ct}, "site-mri": {"mean_dice": mri}}

    weights = {"w": np.zeros(2)}
    best.offer(1, val(0.2, 0.4), weights)
    weights["w"] += 1  # the caller's array changes on: the checkpoint keeps a copy
    best.offer(2, val(0.5, 0.3), weights)  # mean 0.4: better
    best.offer(3, val(0.1, 0.2), {"w": np.full(2, 3.0)})
    assert best.round == 2 and best.val == pytest.approx(0.4)
    weights["w"] += 1
    assert best.weights["w"].tolist() == [1.0, 1.0]
    best.offer(4, val(0.4, float("nan")), {"w": np.full(2, 4.0)})  # a site without organs: mean of the rest
    assert best.round == 4
    best.offer(5, val(0.4, 0.4), {"w": np.full(2, 5.0)})  # a tie: the later round
    assert best.round == 5 and best.weights["w"].tolist() == [5.0, 5.0]


def test_report_gives_the_seed_mean_and_range_and_every_runs_organs(tmp_path):
    ablation = load_ablation()

    def run(seed, ct, mri):
        test = {"site-ct": {"dice_liver": ct, "mean_dice": ct}, "site-mri": {"dice_liver": mri, "mean_dice": mri}}
        best = {s: {"mean_dice": d["mean_dice"] + 0.1} for s, d in test.items()}
        return {
            "variant": "fedgin",
            "seed": seed,
            "test": test,
            "seconds": 60.0,
            "best_val_round": 5 + seed,
            "test_best_val": best,
        }

    ablation.write_report([run(0, 0.7, 0.6), run(1, 0.8, 0.7)], tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert (
        "| fedgin | 0,1 | 0.750 (0.700-0.800) | 0.650 (0.600-0.700) | 0.850 (0.800-0.900) | 0.750 (0.700-0.800) "
        "| 5,6 | 1.0 |" in report
    )
    assert "| fedgin | 1 | site-mri | 0.700 | 0.700 |" in report


def test_transfer_curves_plot_the_organs_a_site_never_trains_on(tmp_path):
    ablation = load_ablation()

    def run(variant, seed, values):
        curve = [{"round": i + 1, "site-mri": {"dice_spleen": v, "mean_dice": v}} for i, v in enumerate(values)]
        test = {"site-mri": {"dice_spleen": values[-1], "mean_dice": values[-1]}}
        return {
            "variant": variant,
            "seed": seed,
            "test": test,
            "seconds": 1.0,
            "val_curve": curve,
            "transferred": {"site-mri": ["spleen"]},
        }

    runs = [run("fedgin", 0, [0.1, 0.5]), run("fedgin", 1, [0.2, 0.6]), run("fedavg", 0, [0.0, 0.1])]
    path = ablation.plot_transfer_curves(runs, tmp_path)
    assert path == tmp_path / "transfer_curves.png" and path.stat().st_size > 1000
    (tmp_path / "r").mkdir()
    ablation.write_report(runs, tmp_path / "r")  # the report draws them too
    assert (tmp_path / "r" / "transfer_curves.png").is_file()
    no_transfer = [{**r, "transferred": {"site-mri": []}} for r in runs]
    assert ablation.plot_transfer_curves(no_transfer, tmp_path / "r") is None
