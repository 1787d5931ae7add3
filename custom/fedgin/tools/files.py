"""Small file helpers the tools share, and where the checkout's own files are."""

from __future__ import annotations

import json
from pathlib import Path

import fedgin

PACKAGE_DIR = Path(fedgin.__file__).resolve().parent
# The fedgin checkout (jobs/, poc/, site_configs/) when the package runs from one (editable install).
CHECKOUT = PACKAGE_DIR.parent.parent


def checkout_file(relative: str | Path) -> Path:
    """A file of the fedgin checkout (``poc/project.yml``, ``poc/privacy.json``): under the current
    folder, or beside the package when it runs from a checkout.

    Raises:
        FileNotFoundError: naming the file and where it comes from (a ``pip install .`` of fedgin
            holds the package only).
    """
    for root in (Path.cwd(), CHECKOUT):
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(
        f"{relative} not found: it is part of the fedgin checkout, not of the installed package; "
        f"run from the checkout (git clone, then `pip install -e .`) or pass the file explicitly"
    )


def write_json(path: str | Path, obj, indent: int = 2) -> None:
    """``obj`` as indented JSON with a final newline; parent folders are created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=indent) + "\n")
