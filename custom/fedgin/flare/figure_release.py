"""Which of a site's per-round figures leave it, and when: after its update passed every filter.

A site's figures (validation Dice, loss, steps, seconds; the privacy figures) are held in the task's
FLContext while its result filters run. FLARE's ``ClientRunner`` fires ``AFTER_TASK_RESULT_FILTER``
with the filtered reply only when every result filter passed; only then does the executor send them
(:func:`release`). An update a filter refused (a spent budget, an error) sends none.

One policy for both kinds of differential privacy. Under DP (the reply's DXO meta holds the
Gaussian filter's ``epsilon``, or the site trains with DP-SGD) the Dice, loss and time are computed
from the site's data outside the mechanism, so by default only :data:`DP_FIGURES` leave: the step
count (fixed by the job's target and already the update's aggregation weight in its meta) and the
privacy figures (``privacy/*``: epsilon, delta, a spent budget). The Gaussian filter's
``release_figures`` (the site's own policy, e.g. in its ``local/privacy.json`` scope) names more
(or fewer) tags; it also strips the validation metrics from the update's meta unless
``val_dice/mean`` is named. Without DP every figure leaves.
"""

from __future__ import annotations

from collections.abc import Iterable

from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext

from fedgin.flare.metrics import send_scalars

DP_FIGURES = ("train/steps",)
PRIVACY_PREFIX = "privacy/"
HELD = "fedgin.held_figures"  # FLContext prop: [(step, {tag: value}), ...] in the order held
RELEASE_FIGURES = "fedgin.release_figures"  # FLContext prop: the Gaussian filter's allow list
META_EPSILON = "epsilon"  # set by fedgin.flare.privacy.gaussian on the update it let through


def hold(fl_ctx: FLContext, figures: dict[str, float], step: int) -> None:
    """Keep ``figures`` of round ``step`` until the result filters have passed."""
    held = fl_ctx.get_prop(HELD) or []
    fl_ctx.set_prop(HELD, [*held, (int(step), dict(figures))], private=True, sticky=False)


def allowed(tag: str, allow: Iterable[str] | None) -> bool:
    """Whether a figure may leave: any privacy figure; others if ``allow`` names them (None: all)."""
    return tag.startswith(PRIVACY_PREFIX) or allow is None or tag in allow


def under_dp(fl_ctx: FLContext, dp_sgd: bool) -> bool:
    """Whether this task's reply was made under DP (DP-SGD, or the Gaussian filter ran on it)."""
    if dp_sgd:
        return True
    reply = fl_ctx.get_prop(FLContextKey.TASK_RESULT)
    try:
        return from_shareable(reply).get_meta_prop(META_EPSILON) is not None
    except Exception:  # an error reply or no DXO: no filter put an epsilon on it
        return False


def release(component: FLComponent, fl_ctx: FLContext, dp_sgd: bool = False) -> int:
    """Send the held figures the policy allows (called at ``AFTER_TASK_RESULT_FILTER``); returns how many."""
    held = fl_ctx.get_prop(HELD) or []
    fl_ctx.set_prop(HELD, [], private=True, sticky=False)
    reply = fl_ctx.get_prop(FLContextKey.TASK_RESULT)
    if reply is None or reply.get_return_code(ReturnCode.OK) not in (ReturnCode.OK, ReturnCode.EARLY_TERMINATION):
        return 0
    allow = None
    if under_dp(fl_ctx, dp_sgd):
        allow = fl_ctx.get_prop(RELEASE_FIGURES)
        allow = DP_FIGURES if allow is None else allow
    sent = 0
    for step, figures in held:
        sent += send_scalars(component, fl_ctx, {t: v for t, v in figures.items() if allowed(t, allow)}, step)
    return sent
