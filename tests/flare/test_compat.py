"""fedgin.flare.compat against the installed FLARE: each of the three behaviours it relies on still
holds, so a FLARE release that changes one fails here by name."""

import inspect
import json

import pytest
from fedgin.flare.compat import advertise_keyword_options, apply_task_check_period, serialize_always
from fedgin.flare.executor import SegmentationExecutor
from nvflare.apis.impl.controller import Controller
from nvflare.apis.impl.wf_comm_server import WFCommServer
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather as FlareScatterAndGather
from nvflare.job_config.api import FedJob


def test_flare_still_polls_with_the_private_period_that_set_communicator_leaves_alone():
    """The workaround is needed while FLARE's own controller leaves WFCommServer's polling period at its
    default; once FLARE passes it through, this fails and fedgin.flare.workflow can go."""
    assert "task_check_period" in inspect.signature(WFCommServer.__init__).parameters
    communicator = WFCommServer()  # as FLARE's server config builds it
    default = communicator._task_check_period
    FlareScatterAndGather(min_clients=2, num_rounds=1, task_check_period=default / 4).set_communicator(communicator)
    assert communicator.task_check_period == default / 4  # what Controller.set_communicator writes ...
    assert communicator._task_check_period == default  # ... and what the server polls with
    apply_task_check_period(communicator, communicator.task_check_period)
    assert communicator._task_check_period == default / 4
    assert issubclass(FlareScatterAndGather, Controller)


def test_applying_the_period_to_a_communicator_without_it_names_the_change():
    with pytest.raises(RuntimeError, match="_task_check_period.*update fedgin.flare.compat"):
        apply_task_check_period(object(), 0.1)


class _Component:
    def __init__(self, chosen: int = 3, other: int = 5):
        self.chosen = chosen
        self.other = other


def _exported_args(tmp_path, component) -> dict:
    job = FedJob(name="compat", min_clients=1)
    job.to_server(component, id="probe")
    job.export_job(str(tmp_path))
    config = json.loads((tmp_path / "compat" / "app_server" / "config" / "config_fed_server.json").read_text())
    (probe,) = [c for c in config["components"] if c["id"] == "probe"]
    return probe.get("args", {})


def test_the_job_api_leaves_defaults_out_unless_told_to_serialize_them(tmp_path):
    assert _exported_args(tmp_path / "plain", _Component(chosen=3)) == {}
    assert _exported_args(tmp_path / "always", serialize_always(_Component(chosen=3), ["chosen"])) == {"chosen": 3}


def test_the_job_api_reads_arguments_from_the_advertised_signature(tmp_path):
    class Options:
        def __init__(self, name: str = "x", **options):
            self.name = name
            for key, value in options.items():
                setattr(self, key, value)

    advertise_keyword_options(Options.__init__, [("lr", 0.1)])
    assert list(inspect.signature(Options.__init__).parameters) == ["self", "name", "lr"]
    assert _exported_args(tmp_path, Options(lr=0.5)) == {"lr": 0.5}
    # The executor advertises every training option.
    assert {"lr", "spatial_size", "organ_sampling"} <= set(inspect.signature(SegmentationExecutor.__init__).parameters)
