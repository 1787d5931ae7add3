"""Best-model selection that counts only the updates the aggregator accepted.

FLARE's ``IntimeModelSelector`` adds a site's validation metric to the round's figure at
``BEFORE_CONTRIBUTION_ACCEPT``, i.e. before the aggregator has looked at the update: a site whose
update is then refused (NaN weights, wrong keys, an outlying norm) still votes on which global model
is "best". :class:`AcceptedModelSelector` is the same selector, fed at
``AFTER_CONTRIBUTION_ACCEPT`` and only when ``AGGREGATION_ACCEPTED`` is true. The shareable and the
peer context it reads are the same at both events (ScatterAndGather fires them on one context).
"""

from __future__ import annotations

from nvflare.apis.fl_context import FLContext
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.widgets.intime_model_selector import IntimeModelSelector


class AcceptedModelSelector(IntimeModelSelector):
    """``IntimeModelSelector`` (same arguments) over accepted contributions only."""

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == AppEventType.BEFORE_CONTRIBUTION_ACCEPT:
            return  # not yet known whether the update counts
        if event_type == AppEventType.AFTER_CONTRIBUTION_ACCEPT:
            if fl_ctx.get_prop(AppConstants.AGGREGATION_ACCEPTED):
                super().handle_event(AppEventType.BEFORE_CONTRIBUTION_ACCEPT, fl_ctx)
            return
        super().handle_event(event_type, fl_ctx)
