"""The sites' streamed figures also go to MLflow when a job asks (FLARE's MLflowReceiver on the server)."""

import importlib.util
import json

import pytest
from fedgin.flare.metrics import FED_METRICS_EVENT
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.federation.simulation import simulate
from fedgin.tools.job_folder import SERVER_CONFIG
from helpers import REPO, TINY_TRAINING


def test_the_receiver_is_added_only_when_asked(tmp_path):
    plain = json.loads((build_job(REPO / "jobs/fedgin_heart", tmp_path / "a") / SERVER_CONFIG).read_text())
    assert "mlflow_receiver" not in {c["id"] for c in plain["components"]}
    job = build_job(REPO / "jobs/fedgin_heart", tmp_path / "b", mlflow_uri="file:///tmp/mlruns")
    (receiver,) = [
        c for c in json.loads((job / SERVER_CONFIG).read_text())["components"] if c["id"] == "mlflow_receiver"
    ]
    assert receiver["path"] == "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver"
    assert receiver["args"]["tracking_uri"] == "file:///tmp/mlruns" and receiver["args"]["events"] == [
        FED_METRICS_EVENT
    ]


@pytest.mark.simulator
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="the mlflow package is not installed")
def test_a_simulated_job_logs_each_sites_figures_to_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # A file store keeps the test self-contained; MLflow 3 asks for this to allow one.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    uri = (tmp_path / "mlruns").as_uri()
    simulate(
        REPO / "jobs/fedgin_abdomen",
        sites,
        tmp_path / "ws",
        num_rounds=2,
        executor_overrides=TINY_TRAINING,
        evaluate_split=None,
        echo=None,
        timeout_s=300,
        mlflow_uri=uri,
    )
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "fedgin fedgin_abdomen"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(sites)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_dice/mean")
        assert sorted(m.step for m in history) == [1, 2]
        assert {"train/loss", "train/steps"} <= set(run.data.metrics)
