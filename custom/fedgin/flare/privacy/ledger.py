"""The site's privacy ledger: what its updates have spent, over every job it ever ran.

A budget (``max_epsilon``) is the site's, not one job's: a new job, or a resumed one, must start from
what earlier jobs released about the same patients. So the ledger lives in the site's own workspace,
in its kit's ``local/`` folder (which FLARE never sends and a new job never replaces), one file per
site, dataset and mechanism::

    <site workspace>/local/fedgin_privacy/<site>-<dataset key>-<mechanism>.json

The dataset key is a hash of the site's modality and its training cases (absolute image and label
paths, from the site config in ``local/``): the same patients keep one ledger across jobs, another
datalist starts its own. Mechanisms: ``gaussian`` (the result filter, the site's whole update) and
``dp_sgd`` (one patient): they protect different units and are accounted apart. The Gaussian filter
appends one entry per released update, DP-SGD one per trained round; the executor reads
``budget_spent`` before it trains. A file, not memory, because it outlives the processes and a site
operator should read it. It never leaves the site: it holds norms before clipping and the secret
noise seed. (In the simulator, ``simulate`` keeps the sites' ledgers in ``WS/simulate/local/``,
which FLARE copies into every simulated site: a later run in the same workspace, a resume, continues
their budgets; a fresh workspace starts at zero.)

Layout::

    {"site": "site-ct", "dataset": "3f2a...", "mechanism": "gaussian", "noise_multiplier": 1.0,
     "clip_norm": 1.0, "delta": 1e-05, "max_epsilon": 20.0, "budget_spent": false,
     "rounds": [{"job": "8c1e...", "round": 1, "privacy_rounds": 1, "noise_multiplier": 1.0,
                 "epsilon": 4.73, "update_norm": 3.1}, ...]}

``epsilon`` is the composition of every entry so far (all jobs), ``null`` when sigma is 0 (no
guarantee; JSON has no infinity).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from nvflare.apis.fl_context import FLContext

from fedgin.flare.site_files import find_site_config
from fedgin.seg.site_config import SiteConfigError, load_site_config

LEDGER_DIR = "fedgin_privacy"
GAUSSIAN = "gaussian"
DP_SGD = "dp_sgd"


def dataset_key(site_config: str | Path) -> str:
    """A short hash of the site's modality and training cases (absolute paths, in order-free form)."""
    config = load_site_config(site_config)
    cases = sorted((c["image"], c.get("label", "")) for c in config.cases("training"))
    text = json.dumps({"modality": config.modality, "training": cases})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ledger_file(local_dir: str | Path, site: str, mechanism: str) -> Path:
    """The ledger of ``site``'s dataset for ``mechanism`` in its ``local/`` folder. Without a site
    config there (unit tests of a bare filter) the file is keyed by the site alone."""
    try:
        key = "-" + dataset_key(find_site_config(local_dir, site))
    except SiteConfigError:
        key = ""
    return Path(local_dir) / LEDGER_DIR / f"{site}{key}-{mechanism}.json"


def ledger_path(fl_ctx: FLContext, mechanism: str = GAUSSIAN) -> Path | None:
    """This site's ledger for ``mechanism`` (see the module doc); None outside a FLARE run (a
    context without engine, as in unit tests of the executor)."""
    if fl_ctx.get_engine() is None:
        return None
    workspace = fl_ctx.get_workspace()
    return ledger_file(workspace.get_site_config_dir(), fl_ctx.get_identity_name(), mechanism)


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
    jobs = len({r.get("job") for r in ledger["rounds"]})
    epsilon = done.get("epsilon")
    epsilon = f"{epsilon:.4g}" if isinstance(epsilon, int | float) else epsilon
    return (
        f"privacy budget spent: epsilon {epsilon} after {done.get('privacy_rounds', 0)} round(s) "
        f"in {jobs} job(s), one more would exceed max_epsilon {ledger.get('max_epsilon')} (delta {ledger.get('delta')})"
    )
