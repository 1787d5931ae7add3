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

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsData, AnalyticsDataType
from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo
from nvflare.app_common.widgets.streaming import AnalyticsReceiver

from fedgin.flare.round_log import format_round

METRICS_EVENT = ANALYTIC_EVENT_TYPE
FED_METRICS_EVENT = f"fed.{ANALYTIC_EVENT_TYPE}"
TB_FOLDER = "tb_events"
REPORT_PREFIX = "[fedgin] metrics: "


# Streamed by a site that trains with DP-SGD (fedgin.flare.privacy.dp_sgd_record).
DP_SGD_EPSILON = "privacy/dp_sgd_epsilon"
# Figures of the local training itself (a non-DP round line waits for them).
TRAINING_FIGURES = ("train/loss", "train/seconds")


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


# Figures of the Gaussian result filter (fedgin.flare.privacy.gaussian), sent after the site's round
# line figures (the filter runs once the executor is done): they get a privacy line of their own.
GAUSSIAN_EPSILON, GAUSSIAN_DELTA = "privacy/epsilon", "privacy/delta"
# Sent by a site that declines a round because its privacy budget is spent (value: the epsilon its
# ledger holds, over all its jobs): the server's log then says why the site is gone.
BUDGET_SPENT = "privacy/budget_spent"


class RoundReporter(AnalyticsReceiver):
    """Server side: one log line per site and round, from the figures the sites streamed.

    ``[fedgin] metrics: round 3/20 site-ct: global model val mean Dice 0.210, local loss 0.8861 over
    30 steps (5.5 s)``: the line a person watches in the server's log (and the simulator runner
    echoes), from the events alone; a site's own log keeps its own line. Events may arrive in any
    order, and some come after the line's figures (a per-organ Dice overtaken by the mean, the
    Gaussian filter's epsilon and delta, DP-SGD's delta after its epsilon). A round's line is
    written once, when its figures are in, or at the end of the run when one never came (a Dice
    that was NaN is not sent; the line says n/a); never for a round whose step count never came.
    Figures that arrive after their round's line join it silently (TensorBoard has them all), except
    the Gaussian filter's epsilon and delta, which get a privacy line. Under DP a site sends only its
    steps and privacy figures by default (fedgin.flare.figure_release), and the line says so. A
    site whose privacy budget is spent gets an error line for the round it declined.
    """

    LINE_FIGURES = ("val_dice/mean", "train/steps")

    def __init__(self, num_rounds: int = 0, events: list[str] | None = None):
        super().__init__(events=events or [FED_METRICS_EVENT])
        self.num_rounds = int(num_rounds)  # the job's rounds, for "round 3/20" (set by the job build)
        self._rounds: dict[tuple[str, int], dict[str, float]] = {}
        self._written: set[tuple[str, int, str]] = set()  # (site, round, "round" | "privacy" | "spent")

    def initialize(self, fl_ctx: FLContext):
        self._rounds.clear()
        self._written.clear()

    def save(self, fl_ctx: FLContext, shareable: Shareable, record_origin: str):
        data = AnalyticsData.from_dxo(from_shareable(shareable))
        key = (record_origin, int(data.step or 0))
        self._rounds.setdefault(key, {})[data.tag] = float(data.value)
        self._write(fl_ctx, key, final=False)

    def finalize(self, fl_ctx: FLContext):
        for key in sorted(self._rounds):
            self._write(fl_ctx, key, final=True)

    def _write(self, fl_ctx: FLContext, key: tuple[str, int], final: bool) -> None:
        site, step = key
        figures = self._rounds[key]
        if (site, step, "round") not in self._written and "train/steps" in figures:
            # Under DP a site sends its steps and privacy figures, other figures only if its policy
            # allows (fedgin.flare.figure_release): its epsilon comes last, so the line waits for it.
            private = DP_SGD_EPSILON in figures or GAUSSIAN_EPSILON in figures
            needed = ("train/steps",) if private else self.LINE_FIGURES + TRAINING_FIGURES
            if final or all(tag in figures for tag in needed):
                self._written.add((site, step, "round"))
                self.log_info(fl_ctx, REPORT_PREFIX + self._round_line(site, step, figures), fire_event=False)
        if (site, step, "spent") not in self._written and BUDGET_SPENT in figures:
            self._written.add((site, step, "spent"))
            self.log_error(
                fl_ctx,
                f"{REPORT_PREFIX}round {step}/{self.num_rounds} {site}: privacy budget spent (epsilon "
                f"{figures[BUDGET_SPENT]:.3g} over its jobs): the site declines this and every later round",
                fire_event=False,
            )
        if (site, step, "privacy") not in self._written and GAUSSIAN_EPSILON in figures:
            if final or GAUSSIAN_DELTA in figures:
                self._written.add((site, step, "privacy"))
                delta = figures.get(GAUSSIAN_DELTA)
                tail = f", delta {delta:.3g}" if delta is not None else ""
                line = f"round {step}/{self.num_rounds} {site}: privacy of the update's Gaussian noise: epsilon "
                self.log_info(fl_ctx, f"{REPORT_PREFIX}{line}{figures[GAUSSIAN_EPSILON]:.3g}{tail}", fire_event=False)

    def _round_line(self, site: str, step: int, figures: dict[str, float]) -> str:
        loss, steps = figures.get("train/loss", math.nan), int(figures["train/steps"])
        line = format_round(step, self.num_rounds, site, figures.get("val_dice/mean", math.nan), loss, steps)
        if DP_SGD_EPSILON in figures:
            return f"{line} (DP-SGD, epsilon {figures[DP_SGD_EPSILON]:.2f}: figures outside it stay at the site)"
        if GAUSSIAN_EPSILON in figures and "train/seconds" not in figures:
            return f"{line} (Gaussian DP: figures outside it stay at the site)"
        seconds = figures.get("train/seconds")
        return f"{line} ({seconds:.1f} s)" if seconds is not None else line
