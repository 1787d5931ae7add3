"""End to end: patient-level DP-SGD and its budget in a real FLARE simulator run on two tiny phantom sites."""

import json
import re

import pytest
from fedgin.flare.metrics import TB_FOLDER
from fedgin.seg.dp_sgd import epsilon_of
from fedgin.tools.phantoms import generate_phantom_dataset
from fedgin.tools.progress import read_tb_scalars
from fedgin.tools.simulation import SimulationError, simulate
from helpers import REPO, TINY_TRAINING

# patients_per_step above the sites' patients: q = 1, one step a round, so epsilon is 4.73 after
# round 1, 7.08 after 2, 9.01 after 3 (sigma 1), and a budget of 8 ends after round 2.
DP_SGD = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "patients_per_step": 8, "max_epsilon": 8.0}


@pytest.mark.simulator
def test_dp_sgd_in_the_flare_simulator(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=4, size=0.5, max_cases=2)
    lines = []
    with pytest.raises(SimulationError, match="EARLY_TERMINATION"):
        simulate(
            REPO / "jobs/fedgin_abdomen",
            sites,
            tmp_path / "ws",
            num_rounds=3,
            executor_overrides={**TINY_TRAINING, "dp_sgd": DP_SGD},
            evaluate_split=None,
            echo=lines.append,
            timeout_s=300,
        )
    workspace = tmp_path / "ws"
    expected = [epsilon_of("rdp", [(1.0, 1.0, k)], 1e-5) for k in (1, 2)]
    for site in sites:
        site_log = (workspace / f"simulate/{site}/log.txt").read_text()
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
        datalist = json.loads((tmp_path / "data" / site / "datalist.json").read_text())
        assert record["patients"] == len(datalist["training"])
        assert [r["round"] for r in record["rounds"]] == [1, 2] and record["budget_spent"] is True
        assert [r["epsilon"] for r in record["rounds"]] == pytest.approx(expected)
        assert isinstance(record["noise_seed"], int)  # drawn at the site; not the job's seed
        tags = read_tb_scalars(workspace / "results" / TB_FOLDER)[site]
        assert tags["privacy/dp_sgd_epsilon"] == {
            1: pytest.approx(expected[0], rel=1e-5),
            2: pytest.approx(expected[1], rel=1e-5),
        }
        assert tags["privacy/dp_sgd_delta"] == {1: pytest.approx(1e-5), 2: pytest.approx(1e-5)}
        assert f"privacy: {site} trained its last DP-SGD round within budget" in site_log
    logs = [(workspace / f"simulate/{site}/log.txt").read_text() for site in sites]
    assert any("round 3: privacy budget spent" in log and "not training" in log for log in logs)
