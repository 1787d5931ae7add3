"""What a job folder holds: its configs, our executor's args, the training options its sites use, its
name and rounds; and where this checkout's job folders are.

Every room reads job folders: the federation builds and runs them (:mod:`fedgin.tools.federation.jobs`),
a trained model's predict and export read the job that trained it, local training takes a job's settings.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fedgin.tools.files import CHECKOUT

if TYPE_CHECKING:  # the CLI imports this module; torch only when a config is read
    from fedgin.seg.config import TrainConfig

CLIENT_CONFIG = Path("app/config/config_fed_client.json")
SERVER_CONFIG = Path("app/config/config_fed_server.json")
EXECUTOR_PATH = "fedgin.flare.executor.SegmentationExecutor"
FAULTY_EXECUTOR_PATH = "fedgin.tools.testing.faulty.FaultyExecutor"  # tests only: misbehaves on chosen sites


class JobError(ValueError):
    """A job folder is not usable; the message names the file."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise JobError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise JobError(f"{path}: not valid JSON ({e})") from None


def client_config_path(folder: str | Path) -> Path:
    """The client config of a job folder, or of a deployed app folder (``app_server/``)."""
    folder = Path(folder)
    for rel in (CLIENT_CONFIG, CLIENT_CONFIG.relative_to("app")):
        if (folder / rel).is_file():
            return folder / rel
    raise JobError(f"{folder}: no {CLIENT_CONFIG} (is it a job folder?)")


def executor_entry(client_config: dict) -> dict:
    """Our executor's entry (``path`` and ``args``) in a client config (a live reference)."""
    for entry in client_config.get("executors", []):
        if entry.get("executor", {}).get("path") in (EXECUTOR_PATH, FAULTY_EXECUTOR_PATH):
            return entry["executor"]
    raise JobError(f"{CLIENT_CONFIG}: no executor with path {EXECUTOR_PATH}")


def executor_args(client_config: dict, path: Path | str = CLIENT_CONFIG) -> dict:
    """The args of our executor in a client config (a live reference, for editing)."""
    try:
        return executor_entry(client_config).setdefault("args", {})
    except JobError:
        raise JobError(f"{path}: no executor with path {EXECUTOR_PATH}") from None


def training_args(executor_args: dict) -> dict:
    """The executor's arguments that are training options (not task names or test faults)."""
    skip = ("train_task_name", "validate_task_name", "submit_model_task_name", "fault")
    return {k: v for k, v in executor_args.items() if k not in skip}


def job_training_config(folder: str | Path):
    """The TrainConfig a job's sites use (read from its client config)."""
    from fedgin.seg.config import TrainConfig

    path = client_config_path(folder)
    return TrainConfig.from_dict(training_args(executor_args(read_json(path), path)))


def training_config_for(model_path: str | Path, job_dir: str | Path | None) -> TrainConfig:
    """The job's TrainConfig: from ``job_dir``, or from the app folder FLARE saved the model in."""
    if job_dir is not None:
        return job_training_config(job_dir)
    folder = Path(model_path).resolve().parent
    try:
        return job_training_config(folder)
    except JobError:
        raise JobError(f"cannot tell which job trained {model_path}: pass --job JOB_FOLDER") from None


def find_component(server_config: dict, component_id: str) -> dict:
    """The server component with this id (a live reference)."""
    for component in server_config.get("components", []):
        if component.get("id") == component_id:
            return component
    raise JobError(f"{SERVER_CONFIG}: no component with id {component_id!r}")


def find_workflow(server_config: dict, class_name: str) -> dict:
    """The server workflow of this class, e.g. ``ScatterAndGather`` (a live reference)."""
    for workflow in server_config.get("workflows", []):
        if workflow.get("path", "").rsplit(".", 1)[-1] == class_name:
            return workflow
    raise JobError(f"{SERVER_CONFIG}: no {class_name} workflow")


def server_model_args(server_config: dict) -> dict:
    """The args of the model that the server's persistor builds (a live reference)."""
    for component in server_config.get("components", []):
        if component.get("id") == "persistor":
            return component.setdefault("args", {}).setdefault("model", {}).setdefault("args", {})
    raise JobError(f"{SERVER_CONFIG}: no component with id 'persistor'")


def job_num_rounds(job: str | Path) -> int:
    """The number of rounds a job folder runs."""
    server = read_json(Path(job) / SERVER_CONFIG)
    return int(find_workflow(server, "ScatterAndGather")["args"]["num_rounds"])


def job_identity(model_path: str | Path, job_dir: str | Path | None) -> tuple[str, int | None]:
    """The name and number of rounds of the job that trained a model: from ``job_dir``, or from the
    app folder FLARE saved the model in (its job folder's name; rounds from its server config)."""
    if job_dir is not None:
        return read_json(Path(job_dir) / "meta.json").get("name", Path(job_dir).name), job_num_rounds(job_dir)
    app = Path(model_path).resolve().parent
    server = app / SERVER_CONFIG.relative_to("app")
    if not server.is_file():
        return app.parent.name, None
    return app.parent.name, int(find_workflow(read_json(server), "ScatterAndGather")["args"]["num_rounds"])


def find_jobs_dir() -> Path:
    """``jobs/`` of the current folder or of this checkout; without a checkout (a plain ``pip install``),
    the jobs exported from their definitions into a temporary folder."""
    for candidate in (Path.cwd() / "jobs", CHECKOUT / "jobs"):
        if (candidate / "fedgin_abdomen" / "meta.json").is_file():
            return candidate
    from fedgin.flare.job_definitions import export_jobs

    out = Path(tempfile.mkdtemp(prefix="fedgin_jobs_"))
    export_jobs(out)
    return out
