"""Child processes of the bench: peak RSS per role (FLARE client, simulator, plain baseline) and the device they see."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


class RssSampler:
    """Samples the RSS of this process's descendants every ``interval`` s; keeps the peak per role.

    Roles: ``client:<site>`` (a simulator worker process), ``simulator`` (FLARE's server/parent
    processes), ``plain`` (the plain-process baseline).
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_mb: dict[str, float] = {}
        self._labels: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _label(proc: psutil.Process) -> str | None:
        cmd = proc.cmdline()
        if any(part.endswith("simulator_worker") for part in cmd) and "--client" in cmd:
            return f"client:{cmd[cmd.index('--client') + 1]}"
        if any(part.endswith("simulator.simulator") for part in cmd):
            return "simulator"
        if "--plain-worker" in cmd:
            return "plain"
        return None

    def sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.pid not in self._labels:
                    self._labels[proc.pid] = self._label(proc)
                label = self._labels[proc.pid]
                if label:
                    mb = proc.memory_info().rss / 2**20
                    self.peak_mb[label] = max(self.peak_mb.get(label, 0.0), mb)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, IndexError):
                continue

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def clients(self) -> dict[str, float]:
        return {k.split(":", 1)[1]: round(v, 1) for k, v in self.peak_mb.items() if k.startswith("client:")}


@contextmanager
def child_device(device) -> Iterator[None]:
    """Children started inside use ``device``: on CPU, hide a present GPU from them (not from this process)."""
    if device.type != "cpu":
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if old is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old
