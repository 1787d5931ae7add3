"""Build a runnable FLARE job from a job definition in ``jobs/``.

The job definitions in the repository hold only ``meta.json`` and ``app/config``. Building one
copies it and packs the code the sites and the server run (``fedgin.flare`` and ``fedgin.seg``, see
:data:`SHIPPED`) into ``app/custom``, so the code that reaches the sites is always the code in this
checkout (no hand-kept copies), and FLARE treats the job as bring-your-own-code instead of checking
it against its built-in class allow list. The tools (phantoms, converters, launchers) stay here;
the test doubles of ``fedgin.tools.testing`` go only into jobs whose configs name them. Reading a job
folder (its configs, training options, rounds) is :mod:`fedgin.tools.job_folder`'s.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from fedgin.tools.files import PACKAGE_DIR, write_json
from fedgin.tools.job_folder import (
    CLIENT_CONFIG,
    SERVER_CONFIG,
    JobError,
    executor_args,
    executor_entry,
    find_component,
    find_workflow,
    read_json,
    server_model_args,
    training_args,
)

AGGREGATOR_PATH = "fedgin.flare.aggregation.RobustAggregator"
ROUND_REPORTER_PATH = "fedgin.flare.metrics.RoundReporter"
# FLARE's homomorphic-encryption path (TenSEAL CKKS), swapped in by build_job(he=True).
HE = "nvflare.app_opt.he."
HE_ENCRYPTOR_PATH = HE + "model_encryptor.HEModelEncryptor"
HE_DECRYPTOR_PATH = HE + "model_decryptor.HEModelDecryptor"
HE_SERVER_COMPONENTS = {
    # Sites weigh their update by its steps before encrypting; the server only adds ciphertexts
    # and divides by the sum of the steps (their meta stays in the clear).
    "aggregator": {
        "path": HE + "intime_accumulate_model_aggregator.HEInTimeAccumulateWeightedAggregator",
        "args": {"expected_data_kind": "WEIGHT_DIFF", "weigh_by_local_iter": False},
    },
    "shareable_generator": {"path": HE + "model_shareable_generator.HEModelShareableGenerator", "args": {}},
    # FLARE's HEModelSerializeFilter, fixed for 2.9's cross-site evaluation (fedgin.flare.he).
    "serialize_filter": {"path": "fedgin.flare.he.HEModelSerializeFilter", "args": {}},
}
HE_CROSS_SITE_PATH = HE + "cross_site_model_eval.HECrossSiteModelEval"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# What runs inside FLARE: the package's root module, its FLARE components and the ML core.
SHIPPED = ("__init__.py", "flare", "seg")
TEST_DOUBLES = ("tools/__init__.py", "tools/testing")


def build_job(
    job_dir: str | Path,
    out_dir: str | Path,
    num_rounds: int | None = None,
    min_clients: int | None = None,
    executor_overrides: dict | None = None,
    privacy: dict | None = None,
    executor_path: str | None = None,
    aggregator: dict | None = None,
    workflow: dict | None = None,
    resume_from: str | Path | None = None,
    gpus: int | None = None,
    mlflow_uri: str | None = None,
    he: bool = False,
    installed_code: bool = False,
) -> Path:
    """Copy ``job_dir`` to ``out_dir`` with our package in ``app/custom`` and optional overrides.

    Args:
        job_dir: a job definition (meta.json + app/config).
        out_dir: where the runnable job is written (replaced if it exists).
        num_rounds: overrides the server's ``num_rounds``.
        min_clients: overrides ``min_clients`` in meta.json and the server config.
        executor_overrides: merged into our executor's args (e.g. ``{"augmentation": "none"}``).
        privacy: replaces the sites' filters of ``train`` results, e.g. ``{"kind": "gaussian",
            "noise_multiplier": 1.0, "clip_norm": 1.0}`` or ``{"kind": "none"}``; the other keys
            are the filter's args (see :func:`fedgin.flare.privacy.filters.privacy_filter_config`).
        executor_path: replaces our executor's class (tests: :data:`FAULTY_EXECUTOR_PATH`).
        aggregator: makes the server's aggregator a :class:`fedgin.flare.aggregation.RobustAggregator`
            with these args merged in (e.g. ``{"max_norm_ratio": 10}``).
        workflow: merged into the ScatterAndGather args (``train_timeout``,
            ``wait_time_after_min_received``, ``start_round``, ...).
        resume_from: a saved global model (``FL_global_model.pt``) the persistor starts from
            instead of a fresh model; pair it with ``workflow={"start_round": N}``.
        gpus: GPUs each site's resource manager reserves for the job (``resource_spec``'s portable
            ``num_of_gpus``; the jobs ask for none).
        mlflow_uri: also send the sites' figures to MLflow, at this tracking URI (see
            :func:`mlflow_receiver`).
        he: encrypted aggregation with FLARE's TenSEAL CKKS components (see :func:`use_he`); the
            system needs the HE contexts of ``nvflare poc prepare --he`` or provisioning's HEBuilder.
        installed_code: no ``app/custom``: the participants run their installed fedgin, FLARE checks
            each class against their ``class_allow_list`` (:mod:`fedgin.tools.federation.site_policy`).

    Returns:
        The path of the built job.
    """
    job_dir, out_dir = Path(job_dir), Path(out_dir)
    if not (job_dir / "meta.json").is_file():
        raise JobError(f"{job_dir} is not a job folder: it has no meta.json")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(job_dir, out_dir, ignore=_IGNORE)
    meta = read_json(out_dir / "meta.json")
    server = read_json(out_dir / SERVER_CONFIG)
    client = read_json(out_dir / CLIENT_CONFIG)
    executor_args(client, out_dir / CLIENT_CONFIG)  # checks ours is there

    _set_rounds_and_clients(meta, server, num_rounds, min_clients)
    if gpus is not None:
        _set_gpus(meta, gpus)
    if privacy is not None:
        set_train_result_filter(client, privacy)
    _set_aggregation(server, client, aggregator, he)
    if workflow:
        find_workflow(server, "ScatterAndGather").setdefault("args", {}).update(workflow)
    if resume_from is not None:
        _resume_from(server, resume_from)
    if executor_path:
        executor_entry(client)["path"] = executor_path
    if executor_overrides:
        _override_executor_args(executor_args(client, out_dir / CLIENT_CONFIG), executor_overrides)
    _derive_server_settings(server, client)
    if mlflow_uri is not None:
        server.setdefault("components", []).append(mlflow_receiver(meta.get("name", job_dir.name), mlflow_uri))

    write_json(out_dir / "meta.json", meta)
    write_json(out_dir / SERVER_CONFIG, server)
    write_json(out_dir / CLIENT_CONFIG, client)
    (drop_code if installed_code else pack_code)(out_dir)
    return out_dir


def _override_executor_args(args: dict, overrides: dict) -> None:
    """``overrides`` into our executor's ``args``; a dict value is merged into a dict arg (``model``)."""
    for key, value in overrides.items():
        args[key] = {**args[key], **value} if isinstance(value, dict) and isinstance(args.get(key), dict) else value


def _set_aggregation(server: dict, client: dict, aggregator: dict | None, he: bool) -> None:
    """The RobustAggregator with ``aggregator``'s args merged in, or encrypted aggregation (:func:`use_he`)."""
    if he and aggregator is not None:
        raise JobError("he and aggregator exclude each other: the RobustAggregator cannot read ciphertexts")
    if aggregator is not None:
        component = find_component(server, "aggregator")
        component["path"] = AGGREGATOR_PATH
        component.setdefault("args", {}).update(aggregator)
    if he:
        use_he(server, client)  # after the privacy filters: it encrypts last


def _set_gpus(meta: dict, gpus: int) -> None:
    if isinstance(gpus, bool) or int(gpus) != gpus or gpus < 0:
        raise JobError(f"gpus must be a whole number >= 0, got {gpus!r}")
    meta.setdefault("resource_spec", {}).setdefault("@default", {})["num_of_gpus"] = int(gpus)


def _resume_from(server: dict, model: str | Path) -> None:
    checkpoint = Path(model).resolve()
    if not checkpoint.is_file():
        raise JobError(f"cannot resume from {checkpoint}: no such file")
    find_component(server, "persistor").setdefault("args", {})["source_ckpt_file_full_name"] = str(checkpoint)


def _set_rounds_and_clients(meta: dict, server: dict, num_rounds: int | None, min_clients: int | None) -> None:
    sag = find_workflow(server, "ScatterAndGather").setdefault("args", {})
    if num_rounds is not None:
        sag["num_rounds"] = int(num_rounds)
    if min_clients is not None:
        meta["min_clients"] = sag["min_clients"] = int(min_clients)


def _derive_server_settings(server: dict, client: dict) -> None:
    """What the server's settings follow from, set every build: the initial model is the sites'
    model; a RobustAggregator waits for ``min_clients`` valid updates and does not expect the norm
    weights that sites keep (``local_norm``); the round reporter counts the job's rounds."""
    from fedgin.seg.config import TrainConfig

    config = TrainConfig.from_dict(training_args(executor_args(client)))
    server_model_args(server).update(config.model_args())
    sag = find_workflow(server, "ScatterAndGather")["args"]
    for component in server.get("components", []):  # round lines say "round r/N" with the job's N
        if component.get("path") == ROUND_REPORTER_PATH:
            component.setdefault("args", {})["num_rounds"] = sag["num_rounds"]
    component = find_component(server, "aggregator")
    if component.get("path") == AGGREGATOR_PATH:
        args = component.setdefault("args", {})
        args["min_valid_updates"] = sag["min_clients"]
        if config.local_norm:
            from fedgin.seg.model import norm_parameter_names

            args["site_local_keys"] = sorted(norm_parameter_names(config.build_model()))
        else:
            args.pop("site_local_keys", None)
    if config.local_norm and component.get("path") == HE_SERVER_COMPONENTS["aggregator"]["path"]:
        # The global model would keep those layers plain, outside the aggregate's list of encrypted
        # layers, and FLARE's HEModelDecryptor fails on them at the sites (KeyError) from round 2 on.
        raise JobError("he and local_norm exclude each other: FLARE's HE decryptor fails on the layers sites keep")


def pack_code(job: Path) -> Path:
    """Put the code FLARE runs into ``job/app/custom/fedgin``: :data:`SHIPPED`, plus the test doubles
    when the job's configs name one."""
    custom = job / "app" / "custom"
    if custom.exists():
        shutil.rmtree(custom)
    configs = " ".join(p.read_text() for p in (job / "app" / "config").glob("*.json"))
    parts = SHIPPED + (TEST_DOUBLES if "fedgin.tools.testing." in configs else ())
    for part in parts:
        src, dst = PACKAGE_DIR / part, custom / "fedgin" / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=_IGNORE)
        else:
            shutil.copy2(src, dst)
    return custom


def drop_code(job: Path) -> None:
    """No ``app/custom``: the participants run their installed fedgin (see :mod:`fedgin.tools.federation.site_policy`).

    Raises:
        JobError: when the job names test doubles (``fedgin.tools.*``), which are never installed code.
    """
    configs = " ".join(p.read_text() for p in (job / "app" / "config").glob("*.json"))
    if "fedgin.tools." in configs:
        raise JobError(f"{job}: names fedgin.tools classes, which only travel with a job (not installed_code)")
    shutil.rmtree(job / "app" / "custom", ignore_errors=True)


def set_train_result_filter(client_config: dict, privacy: dict) -> None:
    """Make ``privacy`` the only result filter of task ``train`` (other tasks keep theirs)."""
    from fedgin.flare.privacy.filters import privacy_filter_config

    args = dict(privacy)
    entry = privacy_filter_config(args.pop("kind", None), **args)
    kept = []
    for group in client_config.get("task_result_filters", []):
        tasks = [t for t in group.get("tasks", []) if t != "train"]
        if tasks:
            kept.append({**group, "tasks": tasks})
    if entry is not None:
        kept.append({"tasks": ["train"], "filters": [entry]})
    client_config["task_result_filters"] = kept


def use_he(server_config: dict, client_config: dict) -> None:
    """Encrypted aggregation: FLARE's HE components in place of the plain ones (idempotent).

    Sites: each layer of a ``train`` result is weighted by its steps and encrypted last, after the
    privacy filters (a ``submit_model`` result too, unweighted); the global model is decrypted first,
    before anything reads it, for ``train`` and ``validate``. Server: it adds ciphertexts (HE
    aggregator and shareable generator), keeps the global model encrypted on disk (the persistor's
    serialize filter) and runs HE cross-site evaluation. Our RobustAggregator's checks (NaN, norm
    bound) need plain updates and are gone.
    """
    components = server_config.setdefault("components", [])
    for component_id, entry in HE_SERVER_COMPONENTS.items():
        components[:] = [c for c in components if c.get("id") != component_id]
        components.append({"id": component_id, **copy.deepcopy(entry)})
    find_component(server_config, "persistor").setdefault("args", {})["filter_id"] = "serialize_filter"
    for workflow in server_config.get("workflows", []):
        if workflow.get("path", "").endswith("CrossSiteModelEval"):
            workflow["path"] = HE_CROSS_SITE_PATH
    for task in ("train", "validate"):
        chain = _own_chain(client_config.setdefault("task_data_filters", []), task)
        chain[:] = [{"path": HE_DECRYPTOR_PATH, "args": {}}] + [f for f in chain if f.get("path") != HE_DECRYPTOR_PATH]
    for task, weigh in (("train", True), ("submit_model", False)):
        chain = _own_chain(client_config.setdefault("task_result_filters", []), task)
        chain[:] = [f for f in chain if f.get("path") != HE_ENCRYPTOR_PATH]
        chain.append({"path": HE_ENCRYPTOR_PATH, "args": {"weigh_by_local_iter": weigh}})


def _own_chain(groups: list[dict], task: str) -> list[dict]:
    """The filters of ``task`` in a filter config (a list of ``{"tasks", "filters"}``), moved into a
    group of its own (FLARE allows one chain per task and direction) or new; edit the list in place."""
    filters = []
    for group in groups:
        if task in group.get("tasks", []):
            group["tasks"] = [t for t in group["tasks"] if t != task]
            filters = copy.deepcopy(group.get("filters", []))
    groups[:] = [g for g in groups if g.get("tasks")]
    groups.append({"tasks": [task], "filters": filters})
    return filters


def mlflow_receiver(job_name: str, tracking_uri: str) -> dict:
    """The server component that also writes the sites' figures (fedgin.flare.metrics) to MLflow:
    FLARE's ``MLflowReceiver``, which needs the ``mlflow`` package on the server. ``tracking_uri``:
    ``http://host:5000``, ``sqlite:///path/mlflow.db`` or ``file:///path/mlruns``; "" for FLARE's
    default (an SQLite file in the job's results; the full ``mlflow`` package)."""
    from fedgin.flare.metrics import FED_METRICS_EVENT

    return {
        "id": "mlflow_receiver",
        "path": "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver",
        "args": {
            "tracking_uri": tracking_uri or None,
            "kw_args": {"experiment_name": f"fedgin {job_name}"},
            "events": [FED_METRICS_EVENT],
        },
    }
