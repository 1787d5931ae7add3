"""End to end: the Gaussian filter and patient-level DP-SGD, each with its budget, in one real FLARE
simulator run on two tiny phantom sites."""

import json
import re

import pytest
import torch
from fedgin.flare.metrics import TB_FOLDER
from fedgin.flare.privacy.accounting import gaussian_epsilon
from fedgin.seg.dp_sgd import epsilon_of
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.progress import read_tb_scalars
from fedgin.tools.federation.simulation import simulate
from fedgin.tools.federation.simulator_process import SimulationError
from helpers import REPO, TINY_TRAINING

# sigma 1: epsilon 4.73 after round 1, 7.08 after 2, 9.01 after 3, so a budget of 8 ends after round 2.
PRIVACY = {"kind": "gaussian", "noise_multiplier": 1.0, "clip_norm": 1.0, "seed": 3, "max_epsilon": 8.0}
# DP-SGD with patients_per_step above the sites' patients: q = 1, one step a round, so its epsilon
# per patient follows the same curve (sigma 1), and its budget of 8 also ends after round 2.
DP_SGD = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "patients_per_step": 8, "max_epsilon": 8.0}


@pytest.mark.simulator
def test_gaussian_filter_and_dp_sgd_in_the_flare_simulator(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    lines = []
    # Both sites spend their budget after round 2 and decline round 3; with no site left the server
    # ends the job and keeps the global model of round 2.
    with pytest.raises(SimulationError, match="EARLY_TERMINATION") as stopped:
        simulate(
            REPO / "jobs/fedgin_abdomen",
            sites,
            tmp_path / "ws",
            num_rounds=3,
            executor_overrides={**TINY_TRAINING, "dp_sgd": DP_SGD},
            evaluate_split=None,
            echo=lines.append,
            timeout_s=300,
            privacy=PRIVACY,
        )
    workspace = tmp_path / "ws"
    expected = [gaussian_epsilon(1.0, k) for k in (1, 2)]
    for site in sites:
        # The site's own log holds one privacy line per round, after the only filter of train results.
        site_log = (workspace / f"simulate/{site}/log.txt").read_text()
        found = re.findall(r"\[fedgin\] privacy: round (\d) sigma 1 clip 1 epsilon (\S+) delta 1e-05", site_log)
        assert [(int(r), float(e)) for r, e in found] == [
            (1, pytest.approx(expected[0], rel=1e-3)),
            (2, pytest.approx(expected[1], rel=1e-3)),
        ]
        assert "PercentilePrivacy" not in site_log
        # The per-round epsilon lands in the job's results.
        record = json.loads((workspace / f"results/privacy_{site}.json").read_text())
        assert record["site"] == site and record["noise_multiplier"] == 1.0 and record["budget_spent"] is True
        # Round 3 would exceed the budget: nothing more leaves.
        assert [r["round"] for r in record["rounds"]] == [1, 2]
        assert f"privacy: {site} released its last update within max_epsilon 8" in site_log
        assert [r["epsilon"] for r in record["rounds"]] == pytest.approx(expected)
        # ... and in the figures the site streams to the server (TensorBoard files, kept with the results).
        tags = read_tb_scalars(workspace / "results" / TB_FOLDER)[site]
        assert tags["privacy/epsilon"] == {
            1: pytest.approx(expected[0], rel=1e-5),
            2: pytest.approx(expected[1], rel=1e-5),
        }
        assert tags["privacy/delta"] == {1: pytest.approx(1e-5), 2: pytest.approx(1e-5)}
        _check_dp_sgd(workspace, site, site_log, tmp_path / "data" / site / "datalist.json")
    assert any("privacy: round 2" in line for line in lines)
    # The first site asked for round 3 declines it (the server then ends the job before the other asks).
    logs = [(workspace / f"simulate/{site}/log.txt").read_text() for site in sites]
    assert any("round 3: privacy budget spent" in log and "not training" in log for log in logs)
    state = torch.load(stopped.value.global_model, map_location="cpu", weights_only=False)
    weights = state["model"] if "model" in state else state
    assert all(torch.isfinite(v).all() for v in weights.values())
    # No validation Dice reached the server, in figures or in the updates' meta (best-model selection).
    server_log = (workspace / "simulate/server/log.txt").read_text()
    assert not re.search(r"validation metric \S+ from client", server_log)
    assert "metrics: round 2/3 site-ct: global model val mean Dice n/a" in server_log
    # A later run in the same workspace (as a resume is) starts from the sites' ledgers: their
    # budgets are spent, so round 1 is declined at once and nothing more is released.
    with pytest.raises(SimulationError, match="EARLY_TERMINATION"):
        simulate(
            REPO / "jobs/fedgin_abdomen",
            sites,
            workspace,
            num_rounds=1,
            executor_overrides={**TINY_TRAINING, "dp_sgd": DP_SGD},
            evaluate_split=None,
            echo=None,
            timeout_s=300,
            privacy=PRIVACY,
        )
    logs = [(workspace / f"simulate/{site}/log.txt").read_text() for site in sites]
    assert any("round 1: privacy budget spent" in log and "in 1 job(s)" in log for log in logs)
    for site in sites:
        assert len(json.loads((workspace / f"results/privacy_{site}.json").read_text())["rounds"]) == 2


def _check_dp_sgd(workspace, site: str, site_log: str, datalist) -> None:
    """DP-SGD's round lines, record, streamed figures and budget stop at one site."""
    expected = [epsilon_of("rdp", [(1.0, 1.0, k)], 1e-5) for k in (1, 2)]
    found = re.findall(
        r"\[fedgin\] privacy: round (\d) DP-SGD sigma 1 clip 1 q 1 steps 1 epsilon (\S+) delta 1e-05 per patient",
        site_log,
    )
    assert [(int(r), float(e)) for r, e in found] == [
        (1, pytest.approx(expected[0], rel=1e-3)),
        (2, pytest.approx(expected[1], rel=1e-3)),
    ]
    record = json.loads((workspace / f"results/privacy_dp_sgd_{site}.json").read_text())
    assert record["mechanism"] == "dp-sgd" and record["unit"].startswith("patient")
    assert record["patients"] == len(json.loads(datalist.read_text())["training"])
    assert [r["round"] for r in record["rounds"]] == [1, 2] and record["budget_spent"] is True
    assert [r["epsilon"] for r in record["rounds"]] == pytest.approx(expected)
    assert isinstance(record["noise_seed"], int)  # drawn at the site; not the job's seed
    tags = read_tb_scalars(workspace / "results" / TB_FOLDER)[site]
    assert tags["privacy/dp_sgd_epsilon"] == {
        1: pytest.approx(expected[0], rel=1e-5),
        2: pytest.approx(expected[1], rel=1e-5),
    }
    assert tags["privacy/dp_sgd_delta"] == {1: pytest.approx(1e-5), 2: pytest.approx(1e-5)}
    # Under DP the Dice, loss and seconds are outside the mechanism: only the steps and the privacy
    # figures leave (fedgin.flare.figure_release), and the update carries no validation metrics.
    assert {t for t in tags if not t.startswith("privacy/")} == {"train/steps"}
    assert f"privacy: {site} trained its last DP-SGD round within budget" in site_log
