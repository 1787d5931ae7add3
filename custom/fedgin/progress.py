"""Per-round progress: the line a site logs after local training, read back into a plot.

Sites write it to their FLARE log; the simulator and POC runner read the logs on this machine, so
the format and its parser live together here. The line holds aggregate numbers only. (In a real
deployment the server cannot read site logs; FLARE's analytics streaming would be the channel.)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

_ROUND = re.compile(
    r"round (?P<round>\d+)/(?P<rounds>\d+) (?P<site>\S+): global model val mean Dice (?P<dice>\S+), "
    r"local loss (?P<loss>\S+) over (?P<steps>\d+) steps"
)


def format_round(current_round: int, num_rounds: int, site: str, dice: float, loss: float, steps: int) -> str:
    """``current_round`` is 1-based; ``dice`` is the received global model's validation mean Dice."""
    return (
        f"round {current_round}/{num_rounds} {site}: global model val mean Dice {dice:.3f}, "
        f"local loss {loss:.4f} over {steps} steps"
    )


def parse_round(line: str) -> dict | None:
    match = _ROUND.search(line)
    if match is None:
        return None
    g = match.groupdict()
    return {
        "round": int(g["round"]),
        "rounds": int(g["rounds"]),
        "site": g["site"],
        "val_mean_dice": float(g["dice"]),
        "loss": float(g["loss"]),
        "steps": int(g["steps"]),
    }


def save_progress(records: list[dict], out_dir: Path) -> None:
    """``progress.json`` and ``progress.png`` (validation Dice and training loss per round, per site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "progress.json").write_text(json.dumps(records, indent=2) + "\n")
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
