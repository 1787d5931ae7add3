"""jobs/ is generated from fedgin.flare.job_definitions with FLARE's Job API, and kept in step."""

import json

import pytest
from fedgin.flare.job_definitions import JOBS, export_jobs, fedgin_job, training_options
from fedgin.tools.cli import main
from fedgin.tools.job_folder import CLIENT_CONFIG, SERVER_CONFIG, executor_args, job_num_rounds
from helpers import REPO


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_jobs_folder_is_what_the_definitions_export(tmp_path):
    assert main(["write-jobs", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(JOBS)
    stale = [name for name in JOBS if _tree(tmp_path / name) != _tree(REPO / "jobs" / name)]
    assert not stale, f"jobs/ is stale for {stale}: run `python -m fedgin write-jobs`"
    assert sorted(p.name for p in (REPO / "jobs").iterdir() if p.is_dir()) == sorted(JOBS)


def test_an_exported_job_holds_config_only_and_the_derived_settings(tmp_path):
    (job,) = export_jobs(tmp_path, ["fedgin_heart"])
    assert not (job / "app" / "custom").exists()  # the code goes in when a job is built
    server = json.loads((job / SERVER_CONFIG).read_text())
    client = json.loads((job / CLIENT_CONFIG).read_text())
    args = executor_args(client)
    assert args["organs"] == ["heart"] and args["augmentation"] == "gin"
    persistor = next(c for c in server["components"] if c["id"] == "persistor")
    assert persistor["args"]["model"]["args"]["num_classes"] == 2  # background + heart, derived
    aggregator = next(c for c in server["components"] if c["id"] == "aggregator")
    assert aggregator["args"]["min_valid_updates"] == json.loads((job / "meta.json").read_text())["min_clients"]
    (privacy,) = client["task_result_filters"][0]["filters"]
    assert privacy["args"] == {"percentile": 10, "gamma": 0.01, "data_kinds": ["WEIGHT_DIFF"]}
    assert job_num_rounds(job) == 30


def test_training_options_merge_and_are_checked():
    options = training_options("abdomen", False, {"model": {"num_res_units": 1}, "lr": 1e-3})
    assert options["model"]["channels"] == [16, 32, 64, 128] and options["model"]["num_res_units"] == 1
    assert options["augmentation"] == "none" and options["lr"] == 1e-3
    with pytest.raises(ValueError, match="unknown task"):
        training_options("brain", True)
    with pytest.raises(ValueError, match="learning_rate"):
        fedgin_job("x", "abdomen", training={"learning_rate": 1})


def test_every_job_declares_portable_resources_flare_accepts(tmp_path):
    from fedgin.tools.federation.jobs import build_job
    from nvflare.utils.job_launcher_utils import get_resource_manager_spec, validate_portable_resource_spec

    for name in JOBS:
        meta = json.loads((REPO / "jobs" / name / "meta.json").read_text())
        validate_portable_resource_spec(meta["resource_spec"])
        assert set(meta["resource_spec"]["@default"]) == {"num_of_gpus", "num_of_cpus", "memory"}
        # No GPU asked: a CPU-only site's resource manager is asked for nothing and runs the job.
        assert get_resource_manager_spec(meta, "site-ct") == {}
    built = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "gpu", gpus=1)
    meta = json.loads((built / "meta.json").read_text())
    validate_portable_resource_spec(meta["resource_spec"])
    assert get_resource_manager_spec(meta, "site-ct") == {"num_of_gpus": 1}  # what a GPUResourceManager reserves
    with pytest.raises(ValueError, match="gpus"):
        build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "bad", gpus=-1)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_trains_with_the_dataclass_defaults(name):
    """One source of defaults: a job's sites train exactly as TrainConfig's defaults say, apart from
    the task's organs and GIN on or off (the jobs in jobs/ are read, so a hand edit fails here too)."""
    from fedgin.seg.config import TrainConfig

    args = executor_args(json.loads((REPO / "jobs" / name / CLIENT_CONFIG).read_text()))
    job = TrainConfig.from_dict({k: v for k, v in args.items() if k in TrainConfig.__dataclass_fields__})
    library = TrainConfig(organs=list(args["organs"]), augmentation=args["augmentation"])
    as_json = lambda config: json.loads(json.dumps(config.to_dict()))  # noqa: E731 (tuples vs lists)
    assert as_json(job) == as_json(library)
    assert args["augmentation"] == ("gin" if JOBS[name][1] else "none")
