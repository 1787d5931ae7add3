"""build_job's robustness and resume overrides, and the faulty test executor's updates."""

import json

import numpy as np
import pytest
import torch
from fedgin.flare.aggregation import update_problem
from fedgin.tools.federation.jobs import AGGREGATOR_PATH, build_job
from fedgin.tools.job_folder import FAULTY_EXECUTOR_PATH, JobError, job_training_config
from fedgin.tools.testing.faulty import FAULT_MODES, FaultyExecutor, faulty_update
from helpers import ABDOMEN, REPO


def _configs(job):
    server = json.loads((job / "app/config/config_fed_server.json").read_text())
    client = json.loads((job / "app/config/config_fed_client.json").read_text())
    components = {c["id"]: c for c in server["components"]}
    workflows = {w["id"]: w for w in server["workflows"]}
    return components, workflows, client


def test_aggregator_workflow_resume_and_executor_overrides(tmp_path):
    checkpoint = tmp_path / "FL_global_model.pt"
    torch.save({"model": {}}, checkpoint)
    job = build_job(
        REPO / "jobs/fedgin_abdomen",
        tmp_path / "job",
        min_clients=2,
        executor_overrides={"fault": {"sites": ["site-bad"], "modes": ["nan"]}},
        executor_path=FAULTY_EXECUTOR_PATH,
        aggregator={"max_norm_ratio": 5},
        workflow={"start_round": 4, "train_timeout": 60},
        resume_from=checkpoint,
    )
    components, workflows, client = _configs(job)
    assert components["aggregator"]["path"] == AGGREGATOR_PATH
    assert components["aggregator"]["args"]["max_norm_ratio"] == 5
    assert components["aggregator"]["args"]["expected_data_kind"] == "WEIGHT_DIFF"  # the job's own args kept
    assert components["persistor"]["args"]["source_ckpt_file_full_name"] == str(checkpoint.resolve())
    sag = workflows["scatter_and_gather"]["args"]
    assert sag["start_round"] == 4 and sag["train_timeout"] == 60
    assert client["executors"][0]["executor"]["path"] == FAULTY_EXECUTOR_PATH
    assert job_training_config(job).organs == ABDOMEN  # the fault args are not training options
    with pytest.raises(JobError, match="cannot resume from .*missing.pt: no such file"):
        build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job2", resume_from=tmp_path / "missing.pt")


@pytest.mark.parametrize("mode", ["nan", "inf", "wrong_shape", "huge", "missing_key", "unknown_key"])
def test_every_faulty_update_is_caught_by_validation_or_the_norm_bound(mode):
    weights = {"a.weight": np.zeros((3, 2), np.float32), "a.bias": np.zeros(3, np.float32)}
    diff = faulty_update(mode, weights)
    problem = update_problem(diff, {k: v.shape for k, v in weights.items()})
    if mode == "huge":
        assert problem is None and np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in diff.values())) > 1e4
    else:
        assert problem is not None


def test_faulty_executor_only_misbehaves_on_its_sites_and_rounds():
    ex = FaultyExecutor(ABDOMEN, fault={"sites": ["site-bad"], "modes": ["ok", "crash"]})
    ex.site_name = "site-bad"
    assert [ex.fault_mode(r) for r in range(3)] == ["ok", "crash", "ok"]
    ex.site_name = "site-ct"
    assert ex.fault_mode(1) == "ok"
    assert set(FAULT_MODES) >= {"nan", "hang", "crash"}
    with pytest.raises(ValueError, match="mode"):
        FaultyExecutor(ABDOMEN, fault={"modes": ["explode"]})


@pytest.mark.parametrize("job", ["fedgin_abdomen", "fedgin_heart", "fedavg_abdomen", "fedavg_heart"])
def test_the_jobs_aggregate_with_the_robust_aggregator(tmp_path, job):
    components, _, _ = _configs(build_job(REPO / "jobs" / job, tmp_path / job, min_clients=3))
    aggregator = components["aggregator"]
    assert aggregator["path"] == AGGREGATOR_PATH
    assert aggregator["args"] == {
        "expected_data_kind": "WEIGHT_DIFF",
        "max_norm_ratio": 10,
        "max_steps": 2000,  # the StepBalancer's cap: no site's claimed steps weigh more
        "min_valid_updates": 3,  # the job's min_clients, derived at build time
    }
