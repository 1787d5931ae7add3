"""CPU turns: sites that share one machine's cores (simulator, POC) compute one at a time.

Two sites that train at once on the same cores each run at well under half speed (cache and
OpenMP contention), and the site with more work then finishes later than if the two had taken
turns. A round waits for its slowest site, so taking turns costs nothing: the round lasts the sum
of the sites' compute either way, minus the contention. Results do not change (every site's
random draws come from its own seeded generators).

The launchers (``fedgin.tools.federation.simulation``, ``fedgin.tools.federation.poc``) point every
co-located site at one lock file through the environment variable :data:`CPU_TURNS_ENV`; a site on
its own machine (a real federation) has no such variable and never waits. The lock is an advisory ``flock``, released by
the kernel if a site dies. A site that has waited :data:`MAX_WAIT_S` computes anyway, so a site
stuck inside its turn cannot stall the others for more than that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

try:  # POSIX only; elsewhere sites simply share the cores
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CPU_TURNS_ENV = "FEDGIN_CPU_TURNS"
MAX_WAIT_S = 300.0
_POLL_S = 0.005


@dataclass
class Turn:
    """What :func:`cpu_turn` did: ``waited_s`` for the turn; ``taken`` False when it computed without."""

    waited_s: float = 0.0
    taken: bool = False


def turns_lock_path(environ=os.environ) -> str | None:
    """The lock file co-located sites share, or ``None`` when this site has the machine to itself."""
    path = environ.get(CPU_TURNS_ENV, "").strip()
    return path if path and fcntl is not None else None


@contextmanager
def cpu_turn(
    path: str | None, max_wait_s: float = MAX_WAIT_S, should_abort: Callable[[], bool] | None = None
) -> Iterator[Turn]:
    """Hold the machine's CPU turn for the ``with`` block (no-op when ``path`` is ``None``).

    Args:
        path: lock file shared by the sites of this machine (see :func:`turns_lock_path`).
        max_wait_s: after waiting this long, compute without the turn (``Turn.taken`` False).
        should_abort: stop waiting as soon as it returns True (the block then runs without the turn).
    """
    turn = Turn()
    if path is None:
        yield turn
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                turn.taken = True
                break
            except BlockingIOError:
                if time.monotonic() - start >= max_wait_s or (should_abort is not None and should_abort()):
                    break
                time.sleep(_POLL_S)
        turn.waited_s = time.monotonic() - start
        yield turn
    finally:
        if turn.taken:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
