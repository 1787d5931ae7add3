"""FLARE's ScatterAndGather, with its ``task_check_period`` actually applied.

In FLARE 2.9, ``Controller.set_communicator`` stores the controller's ``task_check_period`` as
``communicator.task_check_period``, but ``WFCommServer`` polls its tasks with its private
``_task_check_period``, which keeps the constructor default of 0.2 s (the server builds the
communicator with no arguments). So whatever a job sets, the server notices a finished round up
to 0.2 s late, and a site that asks for the next task in that window waits out the simulator's
0.5 s retry sleep as well. Passing the period through cut FLARE's share of a steady round here
from ~0.7 s to ~0.2 s (bench/run_bench.py, section fl). Nothing else changes.
"""

from __future__ import annotations

from nvflare.apis.wf_comm_spec import WFCommSpec
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather as FlareScatterAndGather

from fedgin.flare.compat import apply_task_check_period

__all__ = ["ScatterAndGather"]


class ScatterAndGather(FlareScatterAndGather):
    """:class:`nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather`, same arguments."""

    def set_communicator(self, communicator: WFCommSpec) -> None:
        super().set_communicator(communicator)
        apply_task_check_period(communicator, communicator.task_check_period)  # what FLARE just set
