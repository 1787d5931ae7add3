"""Our ScatterAndGather hands its task_check_period to the server's task monitor."""

from fedgin.flare.workflow import ScatterAndGather
from nvflare.apis.impl.wf_comm_server import WFCommServer


def test_task_check_period_reaches_the_communicator():
    sag = ScatterAndGather(min_clients=2, num_rounds=1, task_check_period=0.05)
    communicator = WFCommServer()  # as FLARE's server config builds it: default period 0.2 s
    sag.set_communicator(communicator)
    assert communicator._task_check_period == 0.05
    assert communicator.controller is sag
