"""A site's per-round figures as analytics events, and the server's round line built from them."""

import itertools
import math
import random

import pytest
from fedgin.flare.metrics import (
    BUDGET_SPENT,
    DP_SGD_EPSILON,
    GAUSSIAN_DELTA,
    GAUSSIAN_EPSILON,
    REPORT_PREFIX,
    RoundReporter,
    round_scalars,
)
from fedgin.flare.privacy.dp_sgd_record import SCALAR_DELTA as DP_SGD_DELTA
from fedgin.flare.round_log import parse_round
from nvflare.apis.analytix import AnalyticsDataType
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo


def test_round_scalars_name_each_figure():
    scalars = round_scalars({"dice_liver": 0.8, "dice_spleen": math.nan, "mean_dice": 0.8}, 0.5, 30, 4.2)
    assert math.isnan(scalars.pop("val_dice/spleen"))  # kept under its tag; send_scalars skips it
    assert scalars == {
        "val_dice/liver": 0.8,
        "val_dice/mean": 0.8,
        "train/loss": 0.5,
        "train/steps": 30.0,
        "train/seconds": 4.2,
    }


def test_the_server_line_waits_for_all_figures_in_any_order_and_parses_as_a_round_line():
    reporter = RoundReporter(num_rounds=20)
    lines = []
    reporter.log_info = lambda ctx, msg, **kw: lines.append(msg)
    figures = {
        "train/seconds": 5.5,
        "train/steps": 30.0,
        "val_dice/liver": 0.3,
        "val_dice/mean": 0.21,
        "train/loss": 0.9,
    }
    for i, (tag, value) in enumerate(figures.items()):
        assert lines == [] or i == len(figures) - 1
        dxo = create_analytic_dxo(tag, value, AnalyticsDataType.SCALAR, global_step=3)
        reporter.save(FLContext(), dxo.to_shareable(), "site-ct")
    (line,) = lines
    assert line.startswith(REPORT_PREFIX) and line.endswith("(5.5 s)")
    assert parse_round(line) == {
        "round": 3,
        "rounds": 20,
        "site": "site-ct",
        "val_mean_dice": 0.21,
        "loss": 0.9,
        "steps": 30,
    }
    # A round whose Dice never came (NaN is not sent) is still reported at the end of the run, n/a.
    for tag, value in (("train/loss", 1.0), ("train/steps", 6.0), ("train/seconds", 2.0)):
        _save(reporter, tag, value, 4, "site-mri")
    reporter.finalize(FLContext())
    assert "val mean Dice n/a" in lines[-1] and "nan" not in lines[-1]
    assert parse_round(lines[-1])["site"] == "site-mri" and math.isnan(parse_round(lines[-1])["val_mean_dice"])


def test_a_site_whose_budget_is_spent_gets_one_error_line_and_no_round_line():
    reporter = RoundReporter(num_rounds=5)
    infos, errors = [], []
    reporter.log_info = lambda ctx, msg, **kw: infos.append(msg)
    reporter.log_error = lambda ctx, msg, **kw: errors.append(msg)
    _save(reporter, BUDGET_SPENT, 7.08, 3, "site-ct")
    _save(reporter, BUDGET_SPENT, 7.08, 3, "site-ct")  # a repeat changes nothing
    reporter.finalize(FLContext())
    assert infos == []
    assert errors == [
        f"{REPORT_PREFIX}round 3/5 site-ct: privacy budget spent (epsilon 7.08 over its jobs): the site "
        "declines this and every later round"
    ]


def test_a_dp_sgd_sites_line_needs_its_epsilon_instead_of_its_loss_and_seconds():
    reporter = RoundReporter(num_rounds=20)
    lines = []
    reporter.log_info = lambda ctx, msg, **kw: lines.append(msg)
    for tag, value in (("val_dice/mean", 0.2), ("train/steps", 5.0), (DP_SGD_EPSILON, 3.25)):
        assert lines == []
        dxo = create_analytic_dxo(tag, value, AnalyticsDataType.SCALAR, global_step=2)
        reporter.save(FLContext(), dxo.to_shareable(), "site-ct")
    (line,) = lines
    assert line.endswith("(DP-SGD, epsilon 3.25: figures outside it stay at the site)")
    assert "local loss n/a over 5 steps" in line
    assert parse_round(line)["steps"] == 5 and math.isnan(parse_round(line)["loss"])


def _save(reporter, tag, value, step, site):
    dxo = create_analytic_dxo(tag, value, AnalyticsDataType.SCALAR, global_step=step)
    reporter.save(FLContext(), dxo.to_shareable(), site)


# What one site sends for one round: the executor's figures (finite ones), then its filters'.
DEFAULT_ROUND = {
    "val_dice/liver": 0.4,
    "val_dice/spleen": 0.2,
    "val_dice/mean": 0.3,
    "train/loss": 0.9,
    "train/steps": 30.0,
    "train/seconds": 5.5,
}
# Under DP only the steps and the privacy figures leave by default (fedgin.flare.figure_release).
GAUSSIAN_ROUND = {"train/steps": 30.0, GAUSSIAN_EPSILON: 1.5, GAUSSIAN_DELTA: 1e-5}
DP_SGD_ROUND = {"train/steps": 5.0, DP_SGD_EPSILON: 2.0, DP_SGD_DELTA: 1e-5}


@pytest.mark.parametrize("sent", [DEFAULT_ROUND, GAUSSIAN_ROUND, DP_SGD_ROUND], ids=["default", "gaussian", "dp_sgd"])
def test_every_arrival_order_gives_one_round_line_and_no_bogus_one(sent):
    """Any order of a round's events (two sites, interleaved), then the end of the run: one line per
    site and round with its real steps, a privacy line for the Gaussian filter's figures, no nan."""
    orders = list(itertools.permutations(sent))
    random.Random(0).shuffle(orders)
    for order in orders[:150]:
        reporter = RoundReporter(num_rounds=20)
        lines: list[str] = []
        reporter.log_info = lambda ctx, msg, out=lines, **kw: out.append(msg)
        events = [(tag, site) for tag in order for site in ("site-ct", "site-mri")]
        for tag, site in events:
            _save(reporter, tag, sent[tag], 8, site)
        reporter.finalize(FLContext())
        rounds = [parse_round(line) for line in lines if parse_round(line)]
        assert sorted(r["site"] for r in rounds) == ["site-ct", "site-mri"], (order, lines)
        assert all(r["round"] == 8 and r["steps"] == sent["train/steps"] for r in rounds)
        dice = 0.3 if "val_dice/mean" in sent else None
        assert all(r["val_mean_dice"] == dice or (dice is None and math.isnan(r["val_mean_dice"])) for r in rounds)
        privacy = [line for line in lines if "privacy of the update's Gaussian noise" in line]
        assert len(privacy) == (2 if GAUSSIAN_EPSILON in sent else 0)
        assert all("epsilon 1.5, delta 1e-05" in line for line in privacy)
        assert len(lines) == len(rounds) + len(privacy)
        assert not any("nan" in line for line in lines)
