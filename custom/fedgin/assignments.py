"""``NAME=VALUE`` pairs from the command line, VALUE read as JSON where it parses."""

from __future__ import annotations

import json


def parse_assignment(text: str) -> tuple[str, object]:
    """``"lr=1e-3"`` -> ``("lr", 0.001)``; ``"augmentation=randconv"`` -> ``("augmentation", "randconv")``.

    Numbers, ``true``/``false``, ``null``, lists and objects are read as JSON; anything else stays
    a string.

    Raises:
        ValueError: if there is no ``=`` or no name before it.
    """
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value
