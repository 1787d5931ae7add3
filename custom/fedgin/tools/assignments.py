"""``NAME=VALUE`` pairs from the command line, VALUE read as JSON where it parses; ``--privacy`` specs."""

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


def parse_privacy_spec(spec: str) -> dict:
    """``KIND[,NAME=VALUE...]`` (command line) -> ``{"kind": KIND, NAME: VALUE, ...}``.

    Values are read as JSON where they parse (numbers, true, null), else kept as strings, e.g.
    ``gaussian,noise_multiplier=1,clip_norm=0.5,max_epsilon=30``.
    """
    kind, *pairs = [part.strip() for part in spec.split(",")]
    out = {"kind": kind}
    for pair in pairs:
        try:
            name, value = parse_assignment(pair)
        except ValueError:
            raise ValueError(f"--privacy expects KIND[,NAME=VALUE...], got {spec!r}") from None
        out[name] = value
    return out
