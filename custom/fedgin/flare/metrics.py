"""Per-round figures a site streams to the server through FLARE's experiment tracking.

Each figure is one analytics event (``analytix_log_stats``, a SCALAR DXO tagged e.g.
``val_dice/liver`` at step = round): the job's ``ConvertToFedEvent`` forwards it to the server,
whose ``TBAnalyticsReceiver`` writes TensorBoard event files in the job's workspace
(``tb_events/<site>/``), which come back with the job's download. Only finite numbers under fixed
tags travel: never a file name, a path or a case id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsDataType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo

METRICS_EVENT = ANALYTIC_EVENT_TYPE
FED_METRICS_EVENT = f"fed.{ANALYTIC_EVENT_TYPE}"
TB_FOLDER = "tb_events"


def round_scalars(validation: Mapping[str, float], loss: float, steps: int, seconds: float) -> dict[str, float]:
    """A training round's figures under their tags: the received global model's validation Dice per
    organ and mean (``dice_<organ>`` / ``mean_dice`` keys of the Trainer's evaluation), the local
    loss, optimizer steps and the task's seconds."""
    scalars = {}
    for key, value in validation.items():
        name = "mean" if key == "mean_dice" else key.removeprefix("dice_")
        scalars[f"val_dice/{name}"] = value
    scalars.update({"train/loss": loss, "train/steps": float(steps), "train/seconds": seconds})
    return scalars


def send_scalars(component: FLComponent, fl_ctx: FLContext, scalars: Mapping[str, float], step: int) -> int:
    """Fire one analytics event per finite scalar; returns how many were sent."""
    sent = 0
    for tag, value in scalars.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue  # organs a site does not label are NaN: nothing to plot
        dxo = create_analytic_dxo(tag, float(value), AnalyticsDataType.SCALAR, global_step=int(step))
        send_analytic_dxo(component, dxo, fl_ctx, event_type=METRICS_EVENT)
        sent += 1
    return sent
