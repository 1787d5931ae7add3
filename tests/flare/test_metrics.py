"""A site's per-round figures as analytics events, and the server's round line built from them."""

import math

from fedgin.flare.metrics import DP_SGD_EPSILON, REPORT_PREFIX, RoundReporter, round_scalars
from fedgin.flare.round_log import parse_round
from nvflare.apis.analytix import AnalyticsDataType
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo


def test_round_scalars_name_each_figure():
    scalars = round_scalars({"dice_liver": 0.8, "dice_spleen": math.nan, "mean_dice": 0.8}, 0.5, 30, 4.2)
    assert scalars == {
        "val_dice/liver": 0.8,
        "val_dice/spleen": scalars["val_dice/spleen"],
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
    # A round whose Dice never came (NaN is not sent) is still reported at the end of the run.
    reporter.save(
        FLContext(),
        create_analytic_dxo("train/loss", 1.0, AnalyticsDataType.SCALAR, global_step=4).to_shareable(),
        "site-mri",
    )
    reporter.finalize(FLContext())
    assert parse_round(lines[-1])["site"] == "site-mri" and math.isnan(parse_round(lines[-1])["val_mean_dice"])


def test_a_dp_sgd_sites_line_needs_its_epsilon_instead_of_its_loss_and_seconds():
    reporter = RoundReporter(num_rounds=20)
    lines = []
    reporter.log_info = lambda ctx, msg, **kw: lines.append(msg)
    for tag, value in (("val_dice/mean", 0.2), ("train/steps", 5.0), (DP_SGD_EPSILON, 3.25)):
        assert lines == []
        dxo = create_analytic_dxo(tag, value, AnalyticsDataType.SCALAR, global_step=2)
        reporter.save(FLContext(), dxo.to_shareable(), "site-ct")
    (line,) = lines
    assert line.endswith("(DP-SGD, epsilon 3.25: loss and time stay at the site)")
    assert parse_round(line)["steps"] == 5 and math.isnan(parse_round(line)["loss"])
