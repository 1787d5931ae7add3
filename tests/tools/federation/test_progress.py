from fedgin.flare.round_log import format_round, parse_round
from fedgin.tools.federation.progress import save_progress


def test_progress_plot_is_written(tmp_path):
    records = [parse_round(format_round(r, 3, s, 0.1 * r, 1.0 / r, 5)) for r in (1, 2, 3) for s in ("a", "b")]
    save_progress(records, tmp_path)
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "progress.json").is_file()
