"""``progress.json`` and ``progress.png``: the sites' per-round figures as a plot.

The figures come from the TensorBoard files the server wrote from the sites' metric events
(:mod:`fedgin.flare.metrics`); the sites' round lines (:mod:`fedgin.flare.round_log`) are the
fallback for a run without them.
"""

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


def read_tb_scalars(tb_root: str | Path) -> dict[str, dict[str, dict[int, float]]]:
    """``{site: {tag: {step: value}}}`` from the event files under ``tb_root/<site>/``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[str, dict[int, float]]] = {}
    root = Path(tb_root)
    for site_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        accumulator = EventAccumulator(str(site_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = scalars.setdefault(site_dir.name, {})
        for tag in accumulator.Tags()["scalars"]:
            tags[tag] = {event.step: event.value for event in accumulator.Scalars(tag)}
    return scalars


def progress_from_scalars(scalars: dict[str, dict[str, dict[int, float]]], rounds: int) -> list[dict]:
    """The per-round records of :func:`save_progress` from :func:`read_tb_scalars`'s figures."""
    records = []
    for site, tags in scalars.items():
        for step in sorted(tags.get("train/steps", {})):
            records.append(
                {
                    "round": step,
                    "rounds": rounds,
                    "site": site,
                    "val_mean_dice": tags.get("val_dice/mean", {}).get(step, math.nan),
                    "loss": tags.get("train/loss", {}).get(step, math.nan),
                    "steps": int(tags["train/steps"][step]),
                }
            )
    return records
