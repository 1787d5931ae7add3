"""fedgin's FLARE jobs, defined once in Python with FLARE's Job API (``FedJob``).

``jobs/`` holds these jobs exported (``python -m fedgin write-jobs``; a test fails when the folders
are stale). Four jobs, one definition: the abdominal and the whole-heart task, each with GIN
(``fedgin_*``) and without (``fedavg_*``, the baseline). Everything derivable is derived here: the
server's initial model is built from the sites' training options, the aggregator waits for as many
valid updates as the job's ``min_clients``.

Server: ScatterAndGather (FedAvg of weight differences, :mod:`fedgin.flare.workflow`) with our
:class:`~fedgin.flare.aggregation.RobustAggregator` and :class:`~fedgin.flare.step_balance.StepBalancer`,
FLARE's model persistor, model selector and cross-site evaluation. Sites: our
:class:`~fedgin.flare.executor.SegmentationExecutor`, and FLARE's PercentilePrivacy on every
``train`` result (weight differences only).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
from nvflare.app_common.shareablegenerators.full_model_shareable_generator import FullModelShareableGenerator
from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent
from nvflare.app_common.widgets.validation_json_generator import ValidationJsonGenerator
from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval
from nvflare.app_opt.pt.file_model_locator import PTFileModelLocator
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor
from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType

from fedgin.flare.aggregation import RobustAggregator
from fedgin.flare.compat import serialize_always
from fedgin.flare.executor import SegmentationExecutor
from fedgin.flare.metrics import FED_METRICS_EVENT, METRICS_EVENT, TB_FOLDER, RoundReporter
from fedgin.flare.model_selection import AcceptedModelSelector
from fedgin.flare.step_balance import StepBalancer
from fedgin.flare.workflow import ScatterAndGather
from fedgin.seg.config import TrainConfig

TASK_ORGANS = {
    "abdomen": ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "gallbladder"],
    "heart": ["heart"],
}
# The training options a job writes out for its sites (so a job's config shows them); their values
# are TrainConfig's defaults, the one source (chosen on the real development set: docs/results-real-scans.md,
# "Results on real scans"). Any other TrainConfig option takes its default at the site too.
JOB_TRAINING_KEYS = (
    "spatial_size",
    "local_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "organ_sampling",
    "dice_batch",
    "distillation_weight",
    "seed",
)
JOB_MODEL_KEYS = ("spatial_dims", "channels", "strides", "num_res_units")


def shipped_training() -> dict:
    """The options every job names, with TrainConfig's default values (JSON types)."""
    defaults = TrainConfig(organs=["_"]).to_dict()
    options = {key: _json(defaults[key]) for key in JOB_TRAINING_KEYS}
    model = {key: _json(defaults["model"][key]) for key in JOB_MODEL_KEYS}
    return {"spatial_size": options.pop("spatial_size"), "model": model, **options}


def _json(value):
    return list(value) if isinstance(value, tuple) else value


TRAINING = shipped_training()
NUM_ROUNDS = 30
# What a site's launcher reserves for the job (FLARE 2.9's portable fields, for every site): no GPU
# is required (a site trains on its GPU when it has one; `build-job --gpus 1` makes the sites'
# GPUResourceManager reserve one), 2 CPUs and 8 GiB, which the docker/k8s/slurm launchers enforce.
RESOURCES = {"@default": {"num_of_gpus": 0, "num_of_cpus": 2, "memory": "8Gi"}}
MIN_CLIENTS = 2
# The most local steps a round's target may ask of a site (StepBalancer) and an update is weighed by
# in the average (RobustAggregator): one site's claim of 10^6 steps neither stalls nor owns the job.
MAX_STEPS_PER_ROUND = 2000
# Exported into jobs/: name -> (task, GIN on).
JOBS = {
    "fedgin_abdomen": ("abdomen", True),
    "fedavg_abdomen": ("abdomen", False),
    "fedgin_heart": ("heart", True),
    "fedavg_heart": ("heart", False),
}


def training_options(task: str, gin: bool, overrides: dict | None = None) -> dict:
    """The executor's arguments for a task: organs, :data:`TRAINING`, GIN on or off, then ``overrides``."""
    if task not in TASK_ORGANS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_ORGANS)}")
    options = {"organs": list(TASK_ORGANS[task]), **copy.deepcopy(TRAINING), "augmentation": "gin" if gin else "none"}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            options[key] = {**options[key], **value}
        else:
            options[key] = value
    return options


def fedgin_job(
    name: str,
    task: str,
    gin: bool = True,
    num_rounds: int = NUM_ROUNDS,
    min_clients: int = MIN_CLIENTS,
    training: dict | None = None,
) -> FedJob:
    """One fedgin job as a ``FedJob``.

    Args:
        name: the job's name.
        task: "abdomen" or "heart" (:data:`TASK_ORGANS`).
        gin: GIN augmentation on (FedGIN) or off (FedAvg).
        num_rounds, min_clients: ScatterAndGather's rounds and sites per round.
        training: training options over :data:`TRAINING` (any :class:`fedgin.seg.config.TrainConfig` key).
    """
    options = training_options(task, gin, training)
    config = TrainConfig.from_dict(options)  # checks every option now, not at the sites
    job = FedJob(name=name, min_clients=min_clients, meta_props={"resource_spec": copy.deepcopy(RESOURCES)})

    # Server. FLARE's default 2 s between a site's task requests would dominate a short round.
    job.to_server({"server": {"task_request_interval": 0.1}})
    model = _given(config.build_model(), *config.model_args())
    job.to_server(_given(PTFileModelPersistor(model=model), "model"), id="persistor")
    job.to_server(FullModelShareableGenerator(), id="shareable_generator")
    aggregator = _make(
        RobustAggregator,
        expected_data_kind="WEIGHT_DIFF",
        max_norm_ratio=10,
        max_steps=MAX_STEPS_PER_ROUND,
        min_valid_updates=min_clients,
    )
    job.to_server(aggregator, id="aggregator")
    job.to_server(_make(AcceptedModelSelector, key_metric="val_mean_dice"), id="model_selector")
    job.to_server(_make(PTFileModelLocator, pt_persistor_id="persistor"), id="model_locator")
    job.to_server(ValidationJsonGenerator(), id="json_generator")
    job.to_server(_make(StepBalancer, max_steps=MAX_STEPS_PER_ROUND), id="step_balancer")
    # The sites' per-round figures (fedgin.flare.metrics) as TensorBoard files in the job's workspace.
    job.to_server(_make(TBAnalyticsReceiver, tb_folder=TB_FOLDER, events=[FED_METRICS_EVENT]), id="tb_receiver")
    # ... and as one line per site and round in the server's log (what the simulator runner echoes).
    job.to_server(_make(RoundReporter, num_rounds=num_rounds, events=[FED_METRICS_EVENT]), id="round_reporter")
    workflow = _make(
        ScatterAndGather,
        min_clients=min_clients,
        num_rounds=num_rounds,
        start_round=0,
        wait_time_after_min_received=0,
        aggregator_id="aggregator",
        persistor_id="persistor",
        shareable_generator_id="shareable_generator",
        train_task_name="train",
        train_timeout=0,
        task_check_period=0.01,  # notice a finished round within 10 ms (fedgin.flare.workflow)
        memory_gc_rounds=0,
    )
    job.to_server(workflow, id="scatter_and_gather")
    # Sites send their last local model for cross-site evaluation only when asked to (empty task name:
    # the global models are scored on every site, the sites' own models are not sent).
    evaluation = _make(
        CrossSiteModelEval,
        model_locator_id="model_locator",
        submit_model_timeout=600,
        validation_timeout=600,
        submit_model_task_name="",
    )
    job.to_server(evaluation, id="cross_site_validate")

    # Sites.
    job.to_clients(SegmentationExecutor(**options), tasks=["train", "validate", "submit_model"])
    privacy = _make(PercentilePrivacy, percentile=10, gamma=0.01, data_kinds=["WEIGHT_DIFF"])
    job.to_clients(privacy, filter_type=FilterType.TASK_RESULT, tasks=["train"])
    # Forwards the executor's analytics events (metric scalars only) to the server.
    job.to_clients(
        _make(ConvertToFedEvent, events_to_convert=[METRICS_EVENT], fed_event_prefix="fed."), id="event_to_fed"
    )
    return job


def _make(cls, **kwargs):
    """``cls(**kwargs)``, with every argument given written into the job even where it equals the
    default (FLARE's Job API leaves defaults out): the job file then shows what the job chose."""
    return _given(cls(**kwargs), *kwargs)


def _given(component, *names: str):
    return serialize_always(component, names)


def export_jobs(out_dir: str | Path, names: list[str] | None = None) -> list[Path]:
    """Write the jobs of :data:`JOBS` (or ``names``) as job folders under ``out_dir``; returns them.

    The folders hold ``meta.json`` and ``app/config`` only: the code goes in when a job is built to
    run (``fedgin.tools.federation.jobs.build_job``), so jobs/ never holds a stale copy of it.
    """
    out_dir = Path(out_dir)
    written = []
    for name in names or list(JOBS):
        if name not in JOBS:
            raise ValueError(f"unknown job {name!r}; fedgin defines {sorted(JOBS)}")
        task, gin = JOBS[name]
        fedgin_job(name, task, gin).export_job(str(out_dir))
        custom = out_dir / name / "app" / "custom"
        if custom.exists():
            shutil.rmtree(custom)
        written.append(out_dir / name)
    return written
