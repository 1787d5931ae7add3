"""Privacy filter entries in built jobs: always on WEIGHT_DIFF, and they load as FLARE would load them."""

import json

import pytest
from fedgin.flare.privacy.filters import privacy_filter_config
from fedgin.tools.assignments import parse_privacy_spec
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.job_folder import CLIENT_CONFIG
from helpers import REPO
from nvflare.fuel.utils.class_utils import instantiate_class

JOB = REPO / "jobs/fedgin_abdomen"


def train_filters(job):
    client = json.loads((job / CLIENT_CONFIG).read_text())
    groups = [g for g in client["task_result_filters"] if "train" in g["tasks"]]
    return [f for g in groups for f in g["filters"]]


@pytest.mark.parametrize(
    "privacy, path",
    [
        ({"kind": "svt", "fraction": 0.2, "epsilon": 0.5}, "nvflare.app_common.filters.svt_privacy.SVTPrivacy"),
        ({"kind": "percentile", "gamma": 0.02}, "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy"),
        (
            {"kind": "gaussian", "noise_multiplier": 1.0, "clip_norm": 0.5},
            "fedgin.flare.privacy.gaussian.GaussianPrivacy",
        ),
    ],
)
def test_build_job_replaces_the_train_filter_with_a_weight_diff_only_one(tmp_path, privacy, path):
    job = build_job(JOB, tmp_path / "job", privacy=privacy)
    (entry,) = train_filters(job)
    assert entry["path"] == path
    assert entry["args"]["data_kinds"] == ["WEIGHT_DIFF"]
    assert {k: v for k, v in privacy.items() if k != "kind"}.items() <= entry["args"].items()
    # The entry builds the filter, and the filter indeed leaves full weights alone.
    flt = instantiate_class(entry["path"], entry["args"])
    assert flt.data_kinds == ["WEIGHT_DIFF"]


def test_percentile_keeps_the_jobs_defaults_and_none_removes_the_filter(tmp_path):
    assert privacy_filter_config("percentile")["args"] == {
        "percentile": 10,
        "gamma": 0.01,
        "data_kinds": ["WEIGHT_DIFF"],
    }
    job = build_job(JOB, tmp_path / "job", privacy={"kind": "none"})
    assert train_filters(job) == []
    # Without the override the job keeps what it defines.
    assert train_filters(build_job(JOB, tmp_path / "job2")) == train_filters(JOB)


def test_bad_privacy_settings_fail_when_the_job_is_built():
    with pytest.raises(ValueError, match="WEIGHT_DIFF only"):
        privacy_filter_config("svt", data_kinds=["WEIGHTS", "WEIGHT_DIFF"])
    with pytest.raises(ValueError, match="unknown privacy filter"):
        privacy_filter_config("laplace")
    with pytest.raises(ValueError, match="gaussian"):
        privacy_filter_config("gaussian", noise_multiplier=1.0)  # clip_norm missing
    with pytest.raises(ValueError, match="percentile"):
        privacy_filter_config("percentile", gama=0.1)


def test_parse_privacy_spec():
    assert parse_privacy_spec("gaussian,noise_multiplier=1,clip_norm=0.5,max_epsilon=null") == {
        "kind": "gaussian",
        "noise_multiplier": 1,
        "clip_norm": 0.5,
        "max_epsilon": None,
    }
    assert parse_privacy_spec("none") == {"kind": "none"}
    with pytest.raises(ValueError):
        parse_privacy_spec("gaussian,sigma")
