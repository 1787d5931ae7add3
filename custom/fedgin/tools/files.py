"""Small file helpers the tools share."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON with a final newline; parent folders are created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
