"""What leaves a site: every task result and every forwarded metric event a site sent in a real
simulator run holds only weight names and shapes and metric scalars — no voxel arrays, file paths,
file names or case ids."""

import json
import shutil

import pytest
from fedgin.seg.config import TrainConfig
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.simulation import simulate
from fedgin.tools.testing.capture import CAPTURE_FILE
from helpers import ABDOMEN, REPO, TINY_TRAINING

CLIENT = "app/config/config_fed_client.json"


@pytest.mark.simulator
def test_a_site_sends_only_weights_and_aggregate_metrics(tmp_path):
    job = tmp_path / "fedgin_abdomen"
    shutil.copytree(REPO / "jobs/fedgin_abdomen", job)
    client = json.loads((job / CLIENT).read_text())
    # The recorder goes last, after the privacy filter: it sees exactly what is sent. (FLARE allows
    # one filter chain per task.)
    capture = {"path": "fedgin.tools.testing.capture.CaptureOutgoing"}
    (train,) = [c for c in client["task_result_filters"] if c["tasks"] == ["train"]]
    train["filters"].append(capture)
    client["task_result_filters"].append({"tasks": ["validate", "submit_model"], "filters": [capture]})
    # The metric stream: the forwarder of analytics events records what it forwards.
    (forward,) = [c for c in client["components"] if c["id"] == "event_to_fed"]
    forward["path"] = "fedgin.tools.testing.capture.CaptureForwardedEvents"
    (job / CLIENT).write_text(json.dumps(client))
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=5, size=0.5, max_cases=1)
    result = simulate(job, sites, tmp_path / "ws", num_rounds=2, executor_overrides=TINY_TRAINING, echo=None)

    shapes = {
        k: list(v.shape)
        for k, v in TrainConfig.from_dict({"organs": ABDOMEN, **TINY_TRAINING}).build_model().state_dict().items()
    }
    secrets = ["nii", "imagesTr", "labelsTr", "ct_0", "mri_0", str(tmp_path), "datalist", "site_config"]
    for site in sites:
        lines = (result.workspace / "simulate" / site / "simulate_job" / CAPTURE_FILE).read_text().splitlines()
        records = [json.loads(line) for line in lines]
        tasks = [r["task"] for r in records]
        assert tasks.count("train") == 2 and tasks.count("validate") >= 2, tasks  # cross-site validation too
        events = [r for r in records if r["task"].startswith("event:")]
        assert {r["task"] for r in events} == {"event:analytix_log_stats"} and len(events) >= 2 * 4
        for event in events:  # one scalar under a fixed tag per event, nothing else
            strings = {leaf["value"] for leaf in event["leaves"] if leaf["kind"] == "string"}
            assert any(s.startswith(("val_dice/", "train/")) for s in strings), event
            assert not [leaf for leaf in event["leaves"] if leaf["kind"] not in ("string", "number")], event
        for record in records:
            for leaf in record["leaves"]:
                if leaf["kind"] == "array":
                    # Arrays only as the model's own weights (diffs), each with the model's shape.
                    key = leaf["path"].removeprefix("/DXO/data/")
                    assert record["task"] == "train" and leaf["path"].startswith("/DXO/data/"), leaf
                    assert shapes[key] == leaf["shape"], leaf
                elif leaf["kind"] == "string":
                    assert not any(s in leaf["value"] for s in secrets), leaf
                else:
                    assert leaf["kind"] == "number", leaf
            metrics = [leaf for leaf in record["leaves"] if leaf["path"].startswith("/DXO/data/")]
            if record["task"] == "validate":
                assert metrics and all(leaf["kind"] == "number" for leaf in metrics)
