"""CPU sharing for several FLARE sites on one machine (simulator, POC): their OpenMP threads and
the CPU turns (:mod:`fedgin.flare.cpu_turns`) the launchers switch on for them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from fedgin.flare.cpu_turns import CPU_TURNS_ENV, turns_lock_path

# Busy-wait iterations of an idle GNU OpenMP thread before it sleeps (libgomp's default is 300000,
# i.e. spinning for ~0.3 ms, which starves another process's threads on a shared machine).
# Measured in the FLARE simulator on 2 cores, demo job, 12 rounds, runs of the settings interleaved,
# median steady round: spin 1000: 3.89 / 3.89 s, 300: 4.15 / 4.18, 100: 4.27 / 4.65, 3000: 4.21 /
# 4.33, OMP_WAIT_POLICY=PASSIVE (spin 0): 4.52 / 4.67; two later pairs on a busier machine, spin
# 1000 vs PASSIVE: 4.55 vs 4.70 s, 4.70 vs 4.88 s. One process alone, 2 threads, a 96^2 training step:
# default 87-95 ms, spin 1000 113-120, PASSIVE 124-136; two processes at once, 2 threads each: spin
# 1000 or PASSIVE 205-225 ms, spin 10000 355, OpenMP's default ~1600.
GOMP_SPIN_COUNT = 1000
_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def openmp_runtime() -> str | None:
    """The OpenMP runtime torch runs on: ``"gnu"`` (libgomp, PyTorch's Linux wheels), ``"intel"``,
    ``"llvm"``, or ``None`` when it cannot be told (no ``/proc``)."""
    import torch  # noqa: F401  (loads torch's OpenMP runtime into this process)

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libs = set(re.findall(r"/(lib(?:gomp|iomp5|omp))[^/\s]*\.so", maps))
    for lib, name in (("libgomp", "gnu"), ("libiomp5", "intel"), ("libomp", "llvm")):
        if lib in libs:
            return name
    return None


def client_thread_env(
    parallel_sites: int, environ: Mapping[str, str] = os.environ, runtime: str | None = "detect", turns: bool = False
) -> dict[str, str]:
    """OpenMP settings for simulated sites that train side by side on one machine's CPU cores.

    Sites rarely have equal work (a CT site with 30 steps a round, an MRI site with 6), so every
    site gets all the cores, and an idle OpenMP thread spins only briefly before it sleeps: while
    two sites train they share the cores about as well as one thread each would, and once the small
    site is done the big one runs at full width. With OpenMP's default spinning, two 2-thread sites
    on 2 cores run 8x slower than one thread each; with threads that never spin
    (``OMP_WAIT_POLICY=PASSIVE``) a site that trains alone is 10-15 % slower than with a short spin.
    On GNU OpenMP (libgomp) the short spin is ``GOMP_SPINCOUNT`` = :data:`GOMP_SPIN_COUNT`; other
    runtimes get ``OMP_WAIT_POLICY=PASSIVE``. A single site keeps OpenMP's defaults. Settings the
    user made are kept (any of ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` set by the
    user leaves the waiting alone).

    Args:
        parallel_sites: sites that train at the same time on this machine.
        environ: the environment the sites inherit.
        runtime: OpenMP runtime of torch (see :func:`openmp_runtime`); ``"detect"`` asks it.
        turns: the sites take CPU turns (:mod:`fedgin.flare.cpu_turns`), so they never compute at the
            same time: OpenMP's default spinning is then the fastest, and only the thread count is set.
    """
    if parallel_sites <= 1:
        return {}
    settings = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    if not turns and not any(key in environ for key in _WAIT_SETTINGS):
        if runtime == "detect":
            runtime = openmp_runtime()
        if runtime == "gnu":
            settings["GOMP_SPINCOUNT"] = str(GOMP_SPIN_COUNT)
        else:
            settings["OMP_WAIT_POLICY"] = "PASSIVE"
    return {k: v for k, v in settings.items() if k not in environ}


def cpu_turns_env(parallel_sites: int, lock_path: str | os.PathLike, environ=os.environ) -> dict[str, str]:
    """Environment for co-located sites to take CPU turns through ``lock_path``.

    Empty for a single site, or when the user set :data:`CPU_TURNS_ENV` (an empty value turns
    turns off: the sites then compute at the same time and share the cores).
    """
    if parallel_sites <= 1 or CPU_TURNS_ENV in environ:
        return {}
    return {CPU_TURNS_ENV: str(lock_path)}


def co_located_env(parallel_sites: int, lock_path: str | os.PathLike, environ=os.environ) -> dict[str, str]:
    """What the launchers add to the environment of sites that share this machine: CPU turns through
    ``lock_path`` (:func:`cpu_turns_env`) and the OpenMP settings that go with them or, when the
    user turned turns off, with sites computing at the same time (:func:`client_thread_env`).
    """
    turns = cpu_turns_env(parallel_sites, lock_path, environ)
    taking_turns = turns_lock_path({**environ, **turns}) is not None
    return {**client_thread_env(parallel_sites, environ, turns=taking_turns), **turns}
