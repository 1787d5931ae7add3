"""Faults in real FLARE simulator runs: bad updates, a crashing site, a hanging site, a site with
broken data, and resuming a stopped job from its last global model.

Four runs share the assertions (about 2.5 minutes on 2 cores):
- clean: two good tiny phantom sites, 6 rounds, RobustAggregator;
- faulty: the same two sites plus ``site-bad`` (FaultyExecutor: NaN, wrong shape, huge, missing
  key, crash, hang in rounds 1-6) and ``site-broken`` (a truncated NIfTI), min_clients 2;
- resumed: the clean run's final model, continued for one round from round 6;
- aborted: two sites, min_clients 2, one crashes in round 2.
"""

import json
import re

import numpy as np
import pytest
import torch
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.simulation import simulate
from fedgin.tools.federation.simulator_process import EARLY_STOP_NOTE, SimulationError
from fedgin.tools.job_folder import FAULTY_EXECUTOR_PATH
from helpers import REPO, TINY_TRAINING, write_nifti, write_site

pytestmark = pytest.mark.simulator

JOB = REPO / "jobs/fedgin_abdomen"
ROUNDS = 6
MODES = ["nan", "wrong_shape", "huge", "missing_key", "crash", "hang"]
REASONS = {  # what the server logs for site-bad's update in each round
    0: r"NaN or Inf in 1 tensor\(s\)",
    1: r"wrong shape\(s\): 'model\.0\.",
    2: r"L2 norm per step \S+ is more than 10 x the median of the others",
    3: r"missing key\(s\) 'model\.0\.",
}
# A round waits this long for late sites once min_clients results are in (the hang round only:
# a round whose sites all answered ends at once).
WAIT_S = 15
# No privacy filter: FLARE runs a site's result filters on whatever its executor returns, and
# PercentilePrivacy would clip the huge update to +-gamma before it left the faulty site.
RUN = {
    "num_rounds": ROUNDS,
    "executor_overrides": TINY_TRAINING,
    "evaluate_split": None,
    "timeout_s": 400,
    "privacy": {"kind": "none"},
}


def _state(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    good = generate_phantom_dataset("abdomen", root / "data", seed=3, size=0.5, max_cases=1)
    broken = root / "broken"
    write_nifti(broken / "lab.nii.gz", np.ones((8, 8, 4), np.uint8))
    write_nifti(broken / "img.nii.gz", np.ones((8, 8, 4), np.float32))
    raw = (broken / "img.nii.gz").read_bytes()
    (broken / "img.nii.gz").write_bytes(raw[: len(raw) // 2])
    case = [("img.nii.gz", "lab.nii.gz")]
    broken_cfg = write_site(broken, "CT", {"training": case, "validation": case}, {"liver": 1})
    return {**good, "site-bad": good["site-ct"], "site-broken": broken_cfg, "_root": root}


@pytest.fixture(scope="module")
def clean(sites):
    two = {k: sites[k] for k in ("site-ct", "site-mri")}
    return simulate(JOB, two, sites["_root"] / "clean", aggregator={}, echo=None, **RUN)


@pytest.fixture(scope="module")
def faulty(sites):
    four = {k: sites[k] for k in ("site-ct", "site-mri", "site-bad", "site-broken")}
    overrides = {**TINY_TRAINING, "fault": {"sites": ["site-bad"], "modes": MODES, "hang_s": WAIT_S + 15}}
    lines = []
    run = {**RUN, "executor_overrides": overrides}
    result = simulate(
        JOB,
        four,
        sites["_root"] / "faulty",
        aggregator={},
        min_clients=2,
        executor_path=FAULTY_EXECUTOR_PATH,
        workflow={"wait_time_after_min_received": WAIT_S},
        echo=lines.append,
        **run,
    )
    return result, lines


def test_bad_updates_and_failing_sites_leave_the_global_model_as_if_they_were_absent(clean, faulty):
    result, _ = faulty
    state, reference = _state(result.global_model), _state(clean.global_model)
    assert all(torch.isfinite(v).all() for v in state.values())
    # Exactly the two good sites' updates were averaged every round: the same model as without
    # the faulty ones, so its Dice is untouched too.
    for k, v in reference.items():
        torch.testing.assert_close(state[k], v, rtol=1e-5, atol=1e-6)


def test_each_rejected_update_is_logged_with_site_and_reason(faulty):
    result, _ = faulty
    log = (result.workspace / "simulate/server/log.txt").read_text()
    for r, reason in REASONS.items():
        assert re.search(rf"rejected the update of site-bad at round {r}: {reason}", log), (r, reason)
        assert re.search(rf"round {r}: 2 valid update\(s\) \(site-ct, site-mri\), 1 rejected: site-bad: ", log)
    # Round 5 (index 4): site-bad crashed; FLARE ignores its error while min_clients still holds.
    assert re.search(r"Ignore the result from site-bad at round 4\. Result error code: EXECUTION_\w+", log)
    # Round 6 (index 5): site-bad hangs; the round ends without it after WAIT_S, its late result is dropped.
    assert re.search(r"round 5: 2 valid update\(s\) \(site-ct, site-mri\)(?!, 1 rejected)", log)
    assert re.search(r"peer=site-bad.*task \S+ is not found", log)  # FLARE drops the late result
    assert "4 update(s) rejected in this job: site-bad 4" in log
    # Rejected means invisible: FLARE never logs site-bad's update as accepted, the best-model
    # selector never reads its claimed Dice of 1.0 (the StepBalancer never takes its 500 steps as the
    # next round's target: the global model equals the clean run's, test above).
    assert "Contribution from site-bad ACCEPTED" not in log
    assert "Contribution from site-bad REJECTED by the aggregator at round 2" in log
    assert not re.search(r"validation metric \S+ from client site-bad", log)
    assert re.search(r"validation metric \S+ from client site-ct", log)
    # The values of the updates never reach the log, only names, shapes and norms.
    assert "nan, nan" not in log.lower()


def test_a_site_with_broken_data_reports_it_and_the_others_go_on(faulty):
    result, lines = faulty
    site_log = (result.workspace / "simulate/site-broken/log.txt").read_text()
    assert re.search(r"site-broken cannot start: DataError: \S*img.nii.gz: not a readable NIfTI file", site_log)
    server_log = (result.workspace / "simulate/server/log.txt").read_text()
    for r in range(ROUNDS):
        assert f"Ignore the result from site-broken at round {r}. Result error code: EXECUTION_EXCEPTION" in server_log
    assert ".nii.gz" not in server_log  # the file name stays at the site
    # Cross-site validation still ran on every site that can validate.
    assert {"site-ct", "site-mri", "site-bad"} <= set(result.cross_site)
    assert "site-broken" not in result.cross_site


def test_resume_starts_from_the_saved_global_model(clean, sites):
    two = {k: sites[k] for k in ("site-ct", "site-mri")}
    saved = clean.workspace / "results/FL_global_model.pt"
    resumed = simulate(
        JOB,
        two,
        sites["_root"] / "resumed",
        aggregator={},
        echo=None,
        **{**RUN, "num_rounds": 1},
        resume_from=saved,
        start_round=ROUNDS,
    )
    server_log = (resumed.workspace / "simulate/server/log.txt").read_text()
    assert "Loading checkpoint from" in server_log and f"Round {ROUNDS} started." in server_log
    assert f"Round {ROUNDS - 1} started." not in server_log
    # Each site scored the model it received in the resumed run's first round: the saved one.
    progress = json.loads((resumed.workspace / "results/progress.json").read_text())
    for site in two:
        first = next(p for p in progress if p["site"] == site)
        assert first["round"] == ROUNDS + 1
        saved_dice = clean.cross_site[site]["SRV_FL_global_model.pt"]["val_mean_dice"]
        assert first["val_mean_dice"] == pytest.approx(saved_dice, abs=1e-3)
    # And it trained on: one more round changed the model.
    assert any(not torch.equal(v, _state(saved)[k]) for k, v in _state(resumed.global_model).items())


def test_when_min_clients_cannot_hold_the_job_ends_with_the_last_good_model_saved(sites):
    two = {k: sites[k] for k in ("site-ct", "site-mri")}
    overrides = {**TINY_TRAINING, "fault": {"sites": ["site-mri"], "modes": ["ok", "crash"]}}
    run = {**RUN, "num_rounds": 3, "executor_overrides": overrides}
    ws = sites["_root"] / "aborted"
    with pytest.raises(SimulationError, match=r"aborted: Result from site-mri is bad.*Cannot reach min_responses") as e:
        simulate(JOB, two, ws, aggregator={}, executor_path=FAULTY_EXECUTOR_PATH, echo=None, **run)
    assert e.value.global_model == ws / "results/FL_global_model.pt"
    assert str(e.value.global_model) in str(e.value)
    state = _state(e.value.global_model)
    assert state and all(torch.isfinite(v).all() for v in state.values())
    server_log = (ws / "simulate/server/log.txt").read_text()
    # An aborted job runs FLARE's own shutdown and exit code (only a normal end is cut short).
    assert EARLY_STOP_NOTE not in (ws / "simulator.log").read_text()
    # The saved model is round 1's: persisted once, before the failed round 2.
    assert server_log.count("End persist model on server.") == 1
    assert "Round 1 started." in server_log and "Round 2 started." not in server_log
