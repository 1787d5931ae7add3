"""StepBalancer: the next train task carries the largest step count accepted in the last round."""

import pytest
from fedgin.flare.step_balance import TARGET_STEPS_HEADER, StepBalancer
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType


def _contribute(balancer, current_round, steps, accepted=True):
    ctx = FLContext()
    result = DXO(DataKind.WEIGHT_DIFF, {"w": [0.0]}, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: steps}).to_shareable()
    ctx.set_prop(AppConstants.CURRENT_ROUND, current_round, private=True, sticky=False)
    ctx.set_prop(AppConstants.TRAINING_RESULT, result, private=True, sticky=False)
    ctx.set_prop(AppConstants.AGGREGATION_ACCEPTED, accepted, private=True, sticky=False)
    balancer.handle_event(AppEventType.AFTER_CONTRIBUTION_ACCEPT, ctx)


def _next_task_target(balancer):
    ctx, task = FLContext(), Shareable()
    ctx.set_prop(AppConstants.TRAIN_SHAREABLE, task, private=True, sticky=False)
    balancer.handle_event(AppEventType.BEFORE_TRAIN_TASK, ctx)
    return task.get_header(TARGET_STEPS_HEADER)


def test_the_next_task_asks_for_the_busiest_sites_steps():
    balancer = StepBalancer(max_steps=500)
    assert _next_task_target(balancer) is None  # round 1: every site trains its own epochs
    _contribute(balancer, 0, 77)
    _contribute(balancer, 0, 6)
    _contribute(balancer, 0, 1000, accepted=False)  # a rejected update counts for nothing
    _contribute(balancer, 0, float("nan"))  # nor does a step count that is not a number
    assert _next_task_target(balancer) == 77
    # The latest round decides, not the largest ever; the cap bounds an absurd count.
    _contribute(balancer, 1, 40)
    assert _next_task_target(balancer) == 40
    _contribute(balancer, 2, 10_000)
    assert _next_task_target(balancer) == 500
    balancer.handle_event(EventType.START_RUN, FLContext())  # a new job starts from scratch
    assert _next_task_target(balancer) is None
    with pytest.raises(ValueError, match="max_steps"):
        StepBalancer(max_steps=0)
