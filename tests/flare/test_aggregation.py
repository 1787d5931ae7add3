"""RobustAggregator called the way ScatterAndGather calls it: accept() per result, then aggregate()."""

import logging
import re
import zlib

import numpy as np
import pytest
from fedgin.flare.aggregation import RobustAggregator, norm_outlier, update_problem
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import make_reply
from nvflare.app_common.abstract.model import make_model_learnable
from nvflare.app_common.app_constant import AppConstants

GLOBAL = {"conv.weight": np.zeros((4, 1, 3, 3), np.float32), "conv.bias": np.zeros(4, np.float32)}


def _update(site, scale=1.0, steps=10, data=None, round_=0, kind=DataKind.WEIGHT_DIFF):
    rng = np.random.default_rng(zlib.crc32(site.encode()))
    if data is None:
        data = {k: (rng.normal(size=v.shape) * scale).astype(np.float32) for k, v in GLOBAL.items()}
    s = DXO(kind, data, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: steps}).to_shareable()
    s.set_peer_props({ReservedKey.IDENTITY_NAME: site})
    s.add_cookie(AppConstants.CONTRIBUTION_ROUND, round_)
    return s


def _ctx(round_=0, with_global=True):
    ctx = FLContext()
    ctx.set_prop(AppConstants.CURRENT_ROUND, round_, private=True, sticky=False)
    if with_global:
        ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(dict(GLOBAL), {}), private=True, sticky=False)
    return ctx


def _aggregator(**kwargs):
    agg = RobustAggregator(**kwargs)
    agg.handle_event(EventType.START_RUN, FLContext())
    return agg


def _run_round(agg, updates, ctx=None):
    ctx = ctx or _ctx()
    accepted = {u.get_peer_prop(ReservedKey.IDENTITY_NAME, "?"): agg.accept(u, ctx) for u in updates}
    return accepted, from_shareable(agg.aggregate(ctx)).data


def _mean(*updates):
    datas = [from_shareable(u).data for u in updates]
    return {k: sum(d[k] for d in datas) / len(datas) for k in GLOBAL}


BAD_UPDATES = {
    "nan": (
        {**GLOBAL, "conv.bias": np.array([0, np.nan, 0, 0], np.float32)},
        r"NaN or Inf in 1 tensor\(s\): 'conv.bias'",
    ),
    "inf": ({**GLOBAL, "conv.weight": np.full((4, 1, 3, 3), np.inf, np.float32)}, "NaN or Inf.*'conv.weight'"),
    "missing": ({"conv.weight": GLOBAL["conv.weight"]}, r"missing key\(s\) 'conv.bias'"),
    "unknown": ({**GLOBAL, "fc.weight": np.zeros(2, np.float32)}, r"unknown key\(s\) 'fc.weight'"),
    "shape": (
        {**GLOBAL, "conv.bias": np.zeros(5, np.float32)},
        r"wrong shape\(s\): 'conv.bias' \(5,\) instead of \(4,\)",
    ),
    "text": ({**GLOBAL, "conv.bias": np.array(["a"] * 4)}, r"non-numeric value\(s\) for 'conv.bias'"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_a_bad_update_is_rejected_and_logged_with_site_and_reason(case, caplog):
    data, reason = BAD_UPDATES[case]
    agg = _aggregator()
    good = [_update("site-a"), _update("site-b")]
    with caplog.at_level(logging.INFO):
        accepted, result = _run_round(agg, [good[0], _update("site-bad", data=data), good[1]])
    assert accepted == {"site-a": True, "site-bad": False, "site-b": True}
    for k, v in _mean(*good).items():  # the round went on with the two valid updates
        np.testing.assert_allclose(result[k], v, rtol=1e-5, atol=1e-6)
    rejection = [
        r.getMessage() for r in caplog.records if "rejected the update of site-bad at round 0" in r.getMessage()
    ]
    assert len(rejection) == 1
    assert re.search(reason, rejection[0]), rejection[0]
    assert agg.rejections == [{"round": 0, "site": "site-bad", "reason": rejection[0].split("round 0: ", 1)[1]}]
    summary = [r.getMessage() for r in caplog.records if "round 0: 2 valid update(s)" in r.getMessage()]
    assert summary and "1 rejected: site-bad: " in summary[0]


def test_a_huge_update_is_refused_on_arrival_by_the_median_norm_bound(caplog):
    agg = _aggregator(max_norm_ratio=10)
    good = [_update("site-a"), _update("site-b")]
    with caplog.at_level(logging.INFO):
        accepted, result = _run_round(agg, [good[0], _update("site-huge", scale=1e6), good[1]])
    # Decided in accept(): what ScatterAndGather logs, the StepBalancer and the model selector count.
    assert accepted == {"site-a": True, "site-huge": False, "site-b": True}
    for k, v in _mean(*good).items():
        np.testing.assert_allclose(result[k], v, rtol=1e-5, atol=1e-6)
    assert [r["site"] for r in agg.rejections] == ["site-huge"]
    assert "is more than 10 x the median of the others" in agg.rejections[0]["reason"]
    assert "round 0: 2 valid update(s) (site-a, site-b), 1 rejected: site-huge: " in caplog.text


def test_the_first_update_of_a_round_is_compared_with_the_previous_rounds():
    agg = _aggregator(max_norm_ratio=10)
    _run_round(agg, [_update("site-a"), _update("site-b")])
    ctx = _ctx(round_=1)
    assert not agg.accept(_update("site-a", scale=1e3, round_=1), ctx)  # first arrival, yet refused
    assert agg.accept(_update("site-b", scale=2.0, round_=1), ctx)
    # Its reference: round 0's two accepted updates.
    assert re.search(r"the median of the others \(\S+, 2 accepted update\(s\)\)", agg.rejections[0]["reason"])


def test_the_first_update_of_a_job_is_bounded_by_the_global_models_norm():
    weights = {k: np.ones_like(v) for k, v in GLOBAL.items()}  # L2 norm sqrt(40) = 6.32
    ctx = _ctx()
    ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(weights, {}), private=True, sticky=False)
    agg = _aggregator(max_norm_ratio=10)
    assert not agg.accept(_update("site-huge", scale=1e3), ctx)
    assert "x the global model's own (6.32" in agg.rejections[0]["reason"]
    assert agg.accept(_update("site-a", scale=1.0), ctx)  # a training step's size is far below
    assert _aggregator(max_norm_ratio=None).accept(_update("site-huge", scale=1e3), ctx)


def test_the_median_bound_refuses_only_large_norms():
    assert "more than 10 x the median" in norm_outlier(1e6, [1.0], 10)
    assert norm_outlier(5.0, [1.0], 10) is None
    assert norm_outlier(1e-6, [1.0, 2.0], 10) is None  # small updates are never outliers
    assert norm_outlier(1e6, [], 10) is None  # nothing to compare with
    assert norm_outlier(1e6, [1.0], None) is None


def test_absolute_max_norm():
    agg = _aggregator(max_norm=100.0)
    accepted, _ = _run_round(agg, [_update("site-a"), _update("site-b", scale=1e3)])
    assert accepted == {"site-a": True, "site-b": False}
    assert "exceeds max_norm 100" in agg.rejections[0]["reason"]


def test_bad_step_count_late_result_and_wrong_kind_are_rejected():
    agg = _aggregator()
    ctx = _ctx(round_=3)
    assert not agg.accept(_update("a", steps=float("nan"), round_=3), ctx)
    assert not agg.accept(_update("b", steps=-1, round_=3), ctx)
    assert not agg.accept(_update("c", round_=2), ctx)
    assert not agg.accept(_update("d", round_=3, kind=DataKind.WEIGHTS), ctx)
    reasons = [r["reason"] for r in agg.rejections]
    assert "NUM_STEPS_CURRENT_ROUND nan" in reasons[0] and "NUM_STEPS_CURRENT_ROUND -1" in reasons[1]
    assert reasons[2] == "late: it was computed for round 2"
    assert reasons[3].startswith("data kind WEIGHTS")


def test_a_failed_site_is_refused_without_counting_as_rejected_update():
    agg = _aggregator()
    failed = make_reply(ReturnCode.EXECUTION_EXCEPTION)
    failed.set_peer_props({ReservedKey.IDENTITY_NAME: "site-x"})
    assert not agg.accept(failed, _ctx())
    assert agg.rejections == []


def test_too_few_valid_updates_keep_the_global_model(caplog):
    agg = _aggregator(min_valid_updates=2)
    with caplog.at_level(logging.ERROR):
        accepted, result = _run_round(
            agg, [_update("site-a"), _update("site-b", data={"conv.bias": GLOBAL["conv.bias"]})]
        )
    assert accepted == {"site-a": True, "site-b": False}
    assert result == {}  # FullModelShareableGenerator adds nothing: the global model stays as it was
    assert any("fewer than min_valid_updates=2: global model kept" in r.getMessage() for r in caplog.records)


def test_without_a_global_model_the_first_update_defines_keys_and_shapes():
    agg = _aggregator()
    ctx = _ctx(with_global=False)
    assert agg.accept(_update("site-a"), ctx)
    assert not agg.accept(_update("site-b", data={**GLOBAL, "conv.bias": np.zeros(3, np.float32)}), ctx)
    assert "wrong shape" in agg.rejections[0]["reason"]


def test_rounds_are_independent_and_the_job_summary_counts_rejections(caplog):
    agg = _aggregator()
    for r in range(2):
        ctx = _ctx(round_=r)
        _run_round(agg, [_update("a", round_=r), _update("b", round_=r, scale=1e9)], ctx)
        agg.reset(ctx)
    with caplog.at_level(logging.WARNING):
        agg.handle_event(EventType.END_RUN, FLContext())
    assert [(r["round"], r["site"]) for r in agg.rejections] == [(0, "b"), (1, "b")]
    assert any("2 update(s) rejected in this job: b 2" in r.getMessage() for r in caplog.records)


def test_update_problem_accepts_a_clean_update_and_bad_args_are_refused():
    assert update_problem(dict(GLOBAL), {k: v.shape for k, v in GLOBAL.items()}) is None
    assert "non-empty dict" in update_problem({}, None)
    with pytest.raises(ValueError, match="expected_data_kind"):
        RobustAggregator(expected_data_kind=DataKind.METRICS)
    with pytest.raises(ValueError, match="min_valid_updates"):
        RobustAggregator(min_valid_updates=0)


def test_round_one_of_an_unbalanced_federation_keeps_both_updates():
    """77 CT steps against 6 MRI steps (the real development set's round 1): the CT update's raw norm
    is 13 x the MRI one's, its norm per step is not an outlier; a truly outlying update still is."""
    agg = _aggregator(max_norm_ratio=10)
    ct, mri = _update("site-ct", scale=77 / 6, steps=77), _update("site-mri", scale=1.0, steps=6)
    accepted, result = _run_round(agg, [ct, mri])
    assert accepted == {"site-ct": True, "site-mri": True} and agg.rejections == []
    expected = (77 * from_shareable(ct).data["conv.bias"] + 6 * from_shareable(mri).data["conv.bias"]) / 83
    np.testing.assert_allclose(result["conv.bias"], expected, rtol=1e-5)
    # The same steps, a hundred times the norm: refused, by its norm per step.
    outlying = [_update("site-ct", scale=100 * 77 / 6, steps=77, round_=1), _update("site-mri", steps=6, round_=1)]
    _run_round(agg, outlying, _ctx(round_=1))
    assert [r["site"] for r in agg.rejections] == ["site-ct"]
    assert "L2 norm per step" in agg.rejections[0]["reason"]


def test_a_claimed_step_count_above_the_jobs_bound_is_weighed_as_the_bound(caplog):
    agg = _aggregator(max_steps=100)
    greedy, honest = _update("site-greedy", steps=10**6), _update("site-honest", steps=100)
    with caplog.at_level(logging.WARNING):
        accepted, result = _run_round(agg, [greedy, honest])
    assert all(accepted.values())
    for k, v in _mean(greedy, honest).items():  # equal weights: 100 and 100, not 10^6 and 100
        np.testing.assert_allclose(result[k], v, rtol=1e-5, atol=1e-6)
    assert "site-greedy claims 1e+06 local steps at round 0: weighed as the job's max_steps 100" in caplog.text
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        RobustAggregator(max_steps=0)
