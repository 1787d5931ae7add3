"""``progress.json`` and ``progress.png``: the sites' round lines (:mod:`fedgin.flare.round_log`) as a plot."""

from __future__ import annotations

import math
from pathlib import Path

from fedgin.tools.files import write_json


def save_progress(records: list[dict], out_dir: Path) -> None:
    """``progress.json`` and ``progress.png`` (validation Dice and training loss per round, per site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "progress.json", records)
    if not records:
        return
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for site in sorted({r["site"] for r in records}):
        rows = sorted((r for r in records if r["site"] == site), key=lambda r: r["round"])
        x = [r["round"] for r in rows]
        ax_dice.plot(x, [r["val_mean_dice"] for r in rows], marker=".", label=site)
        ax_loss.plot(x, [r["loss"] if math.isfinite(r["loss"]) else None for r in rows], marker=".", label=site)
    ax_dice.set(xlabel="round", ylabel="mean Dice (site validation)", title="Global model at the start of each round")
    ax_dice.set_ylim(0, 1)
    ax_loss.set(xlabel="round", ylabel="Dice + CE loss", title="Local training loss")
    for ax in (ax_dice, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "progress.png", dpi=100)
    plt.close(fig)
