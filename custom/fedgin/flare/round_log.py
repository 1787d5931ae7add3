"""The line a site logs after each round's local training, and its parser.

Sites write it to their FLARE log; the simulator and POC runner read the logs on this machine
(:mod:`fedgin.tools.federation.progress` plots them), so the format and its parser live together here. The
line holds aggregate numbers only. (In a real deployment the server cannot read site logs; FLARE's
analytics streaming would be the channel.)
"""

from __future__ import annotations

import math
import re

_ROUND = re.compile(
    r"round (?P<round>\d+)/(?P<rounds>\d+) (?P<site>\S+): global model val mean Dice (?P<dice>\S+), "
    r"local loss (?P<loss>\S+) over (?P<steps>\d+) steps"
)


NOT_AVAILABLE = "n/a"  # a figure that was not scored or stays at the site (never "nan")


def _figure(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else NOT_AVAILABLE


def format_round(current_round: int, num_rounds: int, site: str, dice: float, loss: float, steps: int) -> str:
    """``current_round`` is 1-based; ``dice`` is the received global model's validation mean Dice
    (NaN: not scored, written n/a); ``loss`` NaN (e.g. it stays at a DP-SGD site) is written n/a."""
    return (
        f"round {current_round}/{num_rounds} {site}: global model val mean Dice {_figure(dice, 3)}, "
        f"local loss {_figure(loss, 4)} over {steps} steps"
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
        "val_mean_dice": _parse_figure(g["dice"]),
        "loss": _parse_figure(g["loss"]),
        "steps": int(g["steps"]),
    }


def _parse_figure(text: str) -> float:
    return math.nan if text == NOT_AVAILABLE else float(text)
