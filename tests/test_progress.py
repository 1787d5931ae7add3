import math

from fedgin.progress import format_round, parse_round, save_progress


def test_round_line_round_trips_through_the_log():
    line = "2026-01-01 - SegmentationExecutor - INFO - [fedgin] " + format_round(3, 30, "site-ct", 0.5123, 0.25, 30)
    assert parse_round(line + " (7.5 s)") == {
        "round": 3, "rounds": 30, "site": "site-ct", "val_mean_dice": 0.512, "loss": 0.25, "steps": 30,
    }  # fmt: skip
    nan_line = format_round(1, 2, "site-mri", math.nan, math.nan, 0)
    assert math.isnan(parse_round(nan_line)["val_mean_dice"])
    assert parse_round("Round 3 started.") is None


def test_progress_plot_is_written(tmp_path):
    records = [parse_round(format_round(r, 3, s, 0.1 * r, 1.0 / r, 5)) for r in (1, 2, 3) for s in ("a", "b")]
    save_progress(records, tmp_path)
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "progress.json").is_file()
