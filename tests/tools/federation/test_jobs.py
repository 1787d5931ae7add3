"""Job definitions in jobs/ and the build step that packs our code into them."""

import hashlib
import inspect
import json
from pathlib import Path

import pytest
from fedgin.seg.config import TrainConfig
from fedgin.seg.model import SegmentationUNet
from fedgin.tools.federation.jobs import SHIPPED, build_job
from fedgin.tools.files import PACKAGE_DIR
from fedgin.tools.job_folder import (
    CLIENT_CONFIG,
    SERVER_CONFIG,
    JobError,
    executor_args,
    job_num_rounds,
    server_model_args,
)
from helpers import REPO

JOBS = ["fedgin_abdomen", "fedavg_abdomen", "fedgin_heart", "fedavg_heart"]


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize("name", JOBS)
def test_job_definition_is_consistent(name):
    job = REPO / "jobs" / name
    meta = json.loads((job / "meta.json").read_text())
    assert meta["name"] == name and meta["deploy_map"] == {"app": ["@ALL"]}
    assert not (job / "app" / "custom").exists()  # code is packed at build time, never hand-copied
    server = json.loads((job / SERVER_CONFIG).read_text())
    client = json.loads((job / CLIENT_CONFIG).read_text())
    cfg = TrainConfig.from_dict(executor_args(client))
    # The server's initial model and the sites' model are the same architecture (a key the server
    # config leaves out takes SegmentationUNet's default).
    defaults = {k: p.default for k, p in inspect.signature(SegmentationUNet).parameters.items()}
    model_args = {**defaults, **server_model_args(server)}
    expected = cfg.model_args()
    assert {k: json.loads(json.dumps(model_args[k])) for k in expected} == expected
    # Only global models go into cross-site evaluation: a site's own weights would leave unfiltered.
    cross_site = next(w for w in server["workflows"] if w["id"] == "cross_site_validate")
    assert cross_site["args"]["submit_model_task_name"] == ""
    assert (cfg.augmentation == "gin") == name.startswith("fedgin")
    aggregator = next(c for c in server["components"] if c["id"] == "aggregator")
    assert aggregator["args"]["expected_data_kind"] == "WEIGHT_DIFF"
    filters = client["task_result_filters"][0]
    assert filters["tasks"] == ["train"]
    assert all(f["args"]["data_kinds"] == ["WEIGHT_DIFF"] for f in filters["filters"])
    # Fast rounds: clients ask again 0.1 s after a task (FLARE's default 2 s), and the workflow is our
    # ScatterAndGather, whose task_check_period reaches FLARE's task monitor (fedgin.flare.workflow). The
    # server opens the next round 8-31 ms after the last result when it checks every 0.01 s (up to
    # 108 ms at 0.05 s): the 0.1 s request interval then never asks too early, which would cost the
    # simulator's fixed 0.5 s retry sleep.
    assert server["server"]["task_request_interval"] == 0.1
    sag = next(w for w in server["workflows"] if w["id"] == "scatter_and_gather")
    assert sag["path"] == "fedgin.flare.workflow.ScatterAndGather" and sag["args"]["task_check_period"] <= 0.01


def test_fedavg_jobs_differ_from_fedgin_only_in_gin():
    for task in ("abdomen", "heart"):
        a = json.loads((REPO / f"jobs/fedgin_{task}" / CLIENT_CONFIG).read_text())
        b = json.loads((REPO / f"jobs/fedavg_{task}" / CLIENT_CONFIG).read_text())
        executor_args(b)["augmentation"] = "gin"
        assert a == b
        sa = json.loads((REPO / f"jobs/fedgin_{task}" / SERVER_CONFIG).read_text())
        sb = json.loads((REPO / f"jobs/fedavg_{task}" / SERVER_CONFIG).read_text())
        assert sa == sb


def test_built_job_holds_the_current_code_and_overrides(tmp_path):
    out = build_job(
        REPO / "jobs/fedgin_abdomen",
        tmp_path / "job",
        num_rounds=3,
        min_clients=3,
        executor_overrides={"augmentation": "none", "local_epochs": 2},
    )
    shipped = {k: v for k, v in _files(PACKAGE_DIR).items() if k.split("/")[0] in SHIPPED}
    assert _files(out / "app/custom/fedgin") == shipped
    server = json.loads((out / SERVER_CONFIG).read_text())
    sag = next(w for w in server["workflows"] if w["id"] == "scatter_and_gather")["args"]
    assert sag["num_rounds"] == 3 and sag["min_clients"] == 3 and job_num_rounds(out) == 3
    aggregator = next(c for c in server["components"] if c["id"] == "aggregator")["args"]
    assert aggregator["min_valid_updates"] == 3  # derived from min_clients
    assert json.loads((out / "meta.json").read_text())["min_clients"] == 3
    args = executor_args(json.loads((out / CLIENT_CONFIG).read_text()))
    assert args["augmentation"] == "none" and args["local_epochs"] == 2
    assert args["spatial_size"] == [192, 192]  # untouched options kept
    # Building again replaces the old build (stale files do not survive).
    (out / "app/custom/fedgin/stale.py").write_text("x = 1\n")
    build_job(REPO / "jobs/fedgin_abdomen", out)
    assert not (out / "app/custom/fedgin/stale.py").exists()


def test_derived_server_settings_are_set_on_every_build(tmp_path):
    # A job folder whose server model was edited by hand out of step with the sites' model:
    # building it puts the sites' architecture back, overrides or not.
    job = tmp_path / "edited"
    build_job(REPO / "jobs/fedgin_heart", job)
    server = json.loads((job / SERVER_CONFIG).read_text())
    server_model_args(server)["num_res_units"] = 0
    (job / SERVER_CONFIG).write_text(json.dumps(server))
    out = build_job(job, tmp_path / "built")
    assert server_model_args(json.loads((out / SERVER_CONFIG).read_text()))["num_res_units"] == 2


def test_model_override_reaches_the_server_model(tmp_path):
    tiny = {"channels": [4, 8], "strides": [2], "num_res_units": 1}
    out = build_job(REPO / "jobs/fedgin_heart", tmp_path / "job", executor_overrides={"model": tiny})
    args = server_model_args(json.loads((out / SERVER_CONFIG).read_text()))
    assert args["channels"] == [4, 8] and args["strides"] == [2] and args["num_classes"] == 2
    assert args["in_channels"] == 1
    stacked = build_job(REPO / "jobs/fedgin_heart", tmp_path / "stacked", executor_overrides={"context_slices": 2})
    assert server_model_args(json.loads((stacked / SERVER_CONFIG).read_text()))["in_channels"] == 5  # 2.5D


def test_not_a_job_folder(tmp_path):
    with pytest.raises(JobError, match="no meta.json"):
        build_job(tmp_path, tmp_path / "out")
