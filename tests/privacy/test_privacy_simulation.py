"""End to end: the Gaussian filter in a real FLARE simulator run on two tiny phantom sites."""

import json
import re

import pytest
from fedgin.phantoms import generate_phantom_dataset
from fedgin.privacy.accounting import gaussian_epsilon
from fedgin.simulation import simulate
from helpers import REPO, TINY_TRAINING

PRIVACY = {"kind": "gaussian", "noise_multiplier": 1.0, "clip_norm": 1.0, "seed": 3}


@pytest.mark.simulator
def test_gaussian_filter_in_the_flare_simulator(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    lines = []
    result = simulate(
        REPO / "jobs/fedgin_abdomen", sites, tmp_path / "ws", num_rounds=2, executor_overrides=TINY_TRAINING,
        evaluate_split=None, echo=lines.append, timeout_s=300, privacy=PRIVACY,
    )  # fmt: skip
    expected = [gaussian_epsilon(1.0, k) for k in (1, 2)]
    for site in sites:
        # The site's own log holds one privacy line per round, after the only filter of train results.
        site_log = (result.workspace / f"simulate/{site}/log.txt").read_text()
        found = re.findall(r"\[fedgin\] privacy: round (\d) sigma 1 clip 1 epsilon (\S+) delta 1e-05", site_log)
        assert [(int(r), float(e)) for r, e in found] == [
            (1, pytest.approx(expected[0], rel=1e-3)),
            (2, pytest.approx(expected[1], rel=1e-3)),
        ]
        assert "PercentilePrivacy" not in site_log
        # The per-round epsilon lands in the job's results.
        record = json.loads((result.workspace / f"results/privacy_{site}.json").read_text())
        assert record["site"] == site and record["noise_multiplier"] == 1.0 and record["budget_spent"] is False
        assert [r["round"] for r in record["rounds"]] == [1, 2]
        assert [r["epsilon"] for r in record["rounds"]] == pytest.approx(expected)
    assert any("privacy: round 2" in line for line in lines)
