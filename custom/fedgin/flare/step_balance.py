"""Balanced local work: every site trains as many optimizer steps a round as the busiest site did.

Why: FedAvg weighs each update by its local steps, and one local epoch of a small site is a few
steps. With a CT site of 1,228 training slices (77 steps) and an MRI site of 86 (6 steps), the MRI
update entered the global model with weight 6 / 83 = 7 %: on the real development set the federated
model reached MRI Dice 0.62 where the same code trained centrally reached 0.73. When the MRI site
instead trains as many steps as the CT site (more passes over its own data, fresh shuffles), both
updates weigh alike and MRI Dice reached 0.75 (bench/fed_ablation.py, docs/results-real-scans.md).

:class:`StepBalancer` is a server component: it reads the step count of every accepted update
(the ``NUM_STEPS_CURRENT_ROUND`` meta the sites already send as their aggregation weight) and puts
the largest of the last round into the next ``train`` task's header :data:`TARGET_STEPS_HEADER`.
The executor (training option ``match_site_steps``) trains at least that many steps. What other
sites learn from it: the largest site's step count, about its training slices / batch size; no
site is named. Round 1 carries no target: every site trains its ``local_epochs``.
"""

from __future__ import annotations

import math
import threading

from nvflare.apis.dxo import MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType

__all__ = ["TARGET_STEPS_HEADER", "StepBalancer"]

TARGET_STEPS_HEADER = "fedgin.target_steps"


class StepBalancer(FLComponent):
    """Tells every site, with each ``train`` task, the most local steps a site made last round.

    Args:
        max_steps: upper bound of the target, so one site reporting an absurd step count cannot
            make every other site train for hours.
    """

    def __init__(self, max_steps: int = 2000):
        super().__init__()
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self._lock = threading.Lock()
        self._steps: dict[int, int] = {}  # round -> largest step count accepted in it

    @property
    def target(self) -> int | None:
        """The largest step count of the latest round with an accepted update, capped."""
        with self._lock:
            if not self._steps:
                return None
            return min(self._steps[max(self._steps)], self.max_steps)

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            with self._lock:
                self._steps = {}
        elif event_type == AppEventType.AFTER_CONTRIBUTION_ACCEPT:
            self._record(fl_ctx)
        elif event_type == AppEventType.BEFORE_TRAIN_TASK:
            target = self.target
            task = fl_ctx.get_prop(AppConstants.TRAIN_SHAREABLE)
            if target is not None and task is not None:
                task.set_header(TARGET_STEPS_HEADER, target)

    def _record(self, fl_ctx: FLContext) -> None:
        result = fl_ctx.get_prop(AppConstants.TRAINING_RESULT)
        current_round = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        if result is None or current_round is None or not fl_ctx.get_prop(AppConstants.AGGREGATION_ACCEPTED):
            return
        try:
            steps = from_shareable(result).get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
        except Exception:  # not a DXO (e.g. an error reply): nothing to count
            return
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not math.isfinite(steps) or steps < 1:
            return
        with self._lock:
            self._steps[current_round] = max(self._steps.get(current_round, 0), int(steps))
