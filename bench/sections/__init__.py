"""The sections of ``bench/run_bench.py``, one module each, and the helpers they share.

Each section module has ``measure(ctx) -> dict`` (the figures, JSON-ready) and ``markdown(sec) -> list[str]``
(its part of ``bench_<device>.md``). Shared: ``common`` (constants, sizes, statistics, timing, table cells,
machine info), ``context`` (the run's options, device, work folder and phantoms), ``processes`` (peak RSS of
child processes, the device they see), ``flare_runs`` (a FLARE simulator run and its log) and ``plain`` (the
same training in one plain process), ``report`` (the whole Markdown report).
"""

from __future__ import annotations

import importlib
from types import ModuleType

SECTIONS = ("gin", "families", "options", "fl", "poc", "data", "scale", "infer")


def section(name: str) -> ModuleType:
    """The module of section ``name`` (one of :data:`SECTIONS`)."""
    if name not in SECTIONS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
