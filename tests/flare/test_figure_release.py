"""A site's figures leave after its result filters passed, and under DP only as its policy allows."""

from fedgin.flare.figure_release import DP_FIGURES, RELEASE_FIGURES, hold, release
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import make_reply

FIGURES = {"val_dice/mean": 0.3, "train/loss": 0.9, "train/steps": 30.0, "train/seconds": 5.5}


class _Sender(FLComponent):
    """The component the figures are sent from: records what it would fire."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def fire_event(self, event_type, fl_ctx):
        dxo = from_shareable(fl_ctx.get_prop(FLContextKey.EVENT_DATA))
        self.sent.append((dxo.data["track_key"], dxo.data["track_value"]))


def _task(reply, figures=FIGURES, policy=None):
    fl_ctx = FLContext()
    hold(fl_ctx, figures, 3)
    hold(fl_ctx, {"privacy/epsilon": 4.7}, 3)  # a filter's, held after the executor's
    if policy is not None:
        fl_ctx.set_prop(RELEASE_FIGURES, policy, private=True, sticky=False)
    fl_ctx.set_prop(FLContextKey.TASK_RESULT, reply, private=True, sticky=False)
    return fl_ctx


def _sent(fl_ctx, dp_sgd=False):
    sender = _Sender()
    release(sender, fl_ctx, dp_sgd=dp_sgd)
    return sender.sent


def _update(epsilon=None):
    meta = {} if epsilon is None else {"epsilon": epsilon}
    return DXO(DataKind.WEIGHT_DIFF, {}, meta=meta).to_shareable()


def test_without_dp_every_figure_leaves_in_order_once():
    fl_ctx = _task(_update())
    assert _sent(fl_ctx) == [*FIGURES.items(), ("privacy/epsilon", 4.7)]
    assert _sent(fl_ctx) == []  # released once


def test_under_dp_only_the_steps_and_privacy_figures_leave():
    assert DP_FIGURES == ("train/steps",)
    gaussian = _sent(_task(_update(epsilon=4.7)))
    dp_sgd = _sent(_task(_update()), dp_sgd=True)
    assert gaussian == dp_sgd == [("train/steps", 30.0), ("privacy/epsilon", 4.7)]


def test_a_sites_policy_names_what_else_may_leave():
    sent = _sent(_task(_update(epsilon=4.7), policy=["train/steps", "val_dice/mean"]))
    assert sent == [("val_dice/mean", 0.3), ("train/steps", 30.0), ("privacy/epsilon", 4.7)]
    assert _sent(_task(_update(epsilon=4.7), policy=[])) == [("privacy/epsilon", 4.7)]


def test_a_refused_update_sends_nothing():
    assert _sent(_task(make_reply(ReturnCode.TASK_RESULT_FILTER_ERROR))) == []
    assert _sent(_task(None)) == []
