import math

from fedgin.flare.round_log import format_round, parse_round


def test_round_line_round_trips_through_the_log():
    line = "2026-01-01 - SegmentationExecutor - INFO - [fedgin] " + format_round(3, 30, "site-ct", 0.5123, 0.25, 30)
    assert parse_round(line + " (7.5 s)") == {
        "round": 3,
        "rounds": 30,
        "site": "site-ct",
        "val_mean_dice": 0.512,
        "loss": 0.25,
        "steps": 30,
    }
    nan_line = format_round(1, 2, "site-mri", math.nan, math.nan, 0)
    assert math.isnan(parse_round(nan_line)["val_mean_dice"])
    assert parse_round("Round 3 started.") is None
