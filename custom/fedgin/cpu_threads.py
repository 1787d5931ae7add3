"""CPU threads for several FLARE sites that train side by side on one machine (simulator, POC)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def client_thread_env(parallel_sites: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """OpenMP settings for simulated sites that train side by side on one machine's CPU cores.

    Sites rarely have equal work (a CT site with 30 steps a round, an MRI site with 6), so every
    site gets all the cores, and its idle OpenMP threads sleep instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE``): while two sites train they share the cores almost as well as
    one thread each would, and once the small site is done the big one runs at full width.
    With spinning threads, two 2-thread sites on 2 cores run 8x slower than one thread each; with
    one thread each, the big site trains alone at half speed while the other waits. A single site
    keeps OpenMP's defaults (spinning is ~10-20 % faster there). Settings the user made are kept.
    """
    if parallel_sites <= 1:
        return {}
    settings = {"OMP_NUM_THREADS": str(os.cpu_count() or 1), "OMP_WAIT_POLICY": "PASSIVE"}
    return {k: v for k, v in settings.items() if k not in environ}
