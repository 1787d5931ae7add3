"""The line a site logs after each round's local training, and its parser.

Sites write it to their FLARE log; the simulator and POC runner read the logs on this machine
(:mod:`fedgin.tools.progress` plots them), so the format and its parser live together here. The
line holds aggregate numbers only. (In a real deployment the server cannot read site logs; FLARE's
analytics streaming would be the channel.)
"""

from __future__ import annotations

import re

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
