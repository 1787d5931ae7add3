"""The site's privacy record, ``privacy.json`` in the job's run folder at the site.

The Gaussian filter appends one entry per released update; the executor reads ``budget_spent``
before it trains. A file, not shared memory, because it is also what a site operator (and the
simulator's results) should see, and it survives the filter and the executor being separate
components. It never leaves the site: it holds the update's norm before clipping.

Layout::

    {"site": "site-ct", "mechanism": "gaussian", "noise_multiplier": 1.0, "clip_norm": 1.0,
     "delta": 1e-05, "max_epsilon": 20.0, "budget_spent": false,
     "rounds": [{"round": 1, "privacy_rounds": 1, "epsilon": 4.73, "update_norm": 3.1}, ...]}

``epsilon`` is ``null`` when sigma is 0 (no guarantee; JSON has no infinity).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from nvflare.apis.fl_context import FLContext

LEDGER_NAME = "privacy.json"
# DP-SGD's record (fedgin.flare.privacy.dp_sgd_record), in the same layout: the two mechanisms
# protect different units (the site's whole update, one patient) and are accounted apart.
DP_SGD_LEDGER_NAME = "privacy_dp_sgd.json"


def ledger_path(fl_ctx: FLContext, name: str = LEDGER_NAME) -> Path | None:
    """``privacy.json`` (or ``name``) in the current job's run folder of this site
    (``<site workspace>/<job id>/``).

    None outside a FLARE run (a context without engine or job, as in unit tests of the executor).
    """
    if fl_ctx.get_engine() is None or fl_ctx.get_job_id() is None:
        return None
    return Path(fl_ctx.get_workspace().get_run_dir(fl_ctx.get_job_id())) / name


def read_ledger(path: str | Path) -> dict:
    """The record, or an empty one (no rounds released yet) when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return {"rounds": [], "budget_spent": False}
    return json.loads(path.read_text())


def write_ledger(path: str | Path, ledger: dict) -> None:
    """Write atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ledger, indent=2) + "\n")
    os.replace(tmp, path)


def json_epsilon(epsilon: float) -> float | None:
    return None if math.isinf(epsilon) else epsilon


def budget_spent(path: str | Path | None) -> str | None:
    """Why this site must not release another update (None: it may, or there is no record)."""
    if path is None:
        return None
    ledger = read_ledger(path)
    if not ledger.get("budget_spent"):
        return None
    done = ledger["rounds"][-1] if ledger["rounds"] else {}
    return (
        f"privacy budget spent: epsilon {done.get('epsilon')} after {done.get('privacy_rounds', 0)} round(s), "
        f"one more would exceed max_epsilon {ledger.get('max_epsilon')} (delta {ledger.get('delta')})"
    )
