"""FLARE's simulator in a child process: run it, copy its log, follow the sites' round lines and stop it
as soon as a normally finished job has every output on disk.

:mod:`fedgin.tools.federation.simulation` builds the job and the workspace around it and collects
the results.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from fedgin.flare.metrics import REPORT_PREFIX
from fedgin.flare.round_log import parse_round
from fedgin.tools.federation.cpu_sharing import co_located_env
from fedgin.tools.federation.jobs import ROUND_REPORTER_PATH
from fedgin.tools.job_folder import SERVER_CONFIG

# Lines of FLARE's log worth showing a person while a job runs.
_PROGRESS = re.compile(r"\[fedgin\].*|Round \d+ started\.|Start Cross-Site Evaluation\.|cannot start.*")


class SimulationError(RuntimeError):
    """The simulator failed; ``global_model`` is the last global model it saved, if any."""

    def __init__(self, message: str, global_model: Path | None = None):
        super().__init__(message)
        self.global_model = global_model


# FLARE's server log line when a job is aborted (e.g. min_clients can no longer be met).
_ABORT = re.compile(r"Aborting current RUN due to FATAL_SYSTEM_ERROR received: (.*)")
# A finished job: each site's worker logs _SITE_ENDED once the server sent it the end of the run,
# which the server does only after _SERVER_FINISHED (END_RUN fired, models and cross-site results saved).
_SITE_ENDED = "End the Simulator run."
_SERVER_FINISHED = "Server runner finished."
SERVER_LOG = Path("server/log.txt")
EARLY_STOP_NOTE = "[fedgin] the job finished normally; FLARE's shutdown waits skipped"


def abort_reason(log_file: Path) -> str | None:
    """Why FLARE aborted the job, from its log; None when it did not."""
    match = _ABORT.search(log_file.read_text(errors="replace")) if log_file.is_file() else None
    return match.group(1).strip() if match else None


def _stop(proc: subprocess.Popen) -> None:
    """Kill the simulator and every process under it (its workers run in sessions of their own).

    All are frozen first, so none lives to log the others' end as an error.
    """
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for action in ("suspend", "kill"):
        for process in tree:
            try:
                getattr(process, action)()
            except psutil.NoSuchProcess:
                pass
    psutil.wait_procs(tree[1:], timeout=5)
    proc.wait()


def _server_finished_normally(sim_workspace: Path) -> bool:
    """The server runner finished without a fatal error (every output is on disk by then)."""
    server_log = sim_workspace / SERVER_LOG
    deadline = time.time() + 2.0  # logged before the sites are told to end: waiting is a formality
    while True:
        text = server_log.read_text(errors="replace") if server_log.is_file() else ""
        if _SERVER_FINISHED in text or time.time() > deadline:
            return _SERVER_FINISHED in text and not _ABORT.search(text)
        time.sleep(0.05)


def _follow(proc, log, records: list, n_sites: int, sim_workspace: Path, can_stop_early: bool, echo, events: bool):
    """Copy the simulator's output to ``log``, collect the sites' round records and echo progress;
    stop the simulator once every site has ended a normally finished job. Returns whether it did.

    ``events``: the job's server logs each site's round from the sites' metric events
    (:class:`fedgin.flare.metrics.RoundReporter`); those lines are echoed instead of the sites' own.
    """
    start = time.time()
    sites_ended, aborted = 0, False
    for line in proc.stdout:
        log.write(line)
        record = parse_round(line)
        from_server = REPORT_PREFIX in line
        if record is not None and not from_server:
            records.append(record)
        match = _PROGRESS.search(line)
        if echo and match and not (events and record is not None and not from_server):
            echo(
                f"  [{time.time() - start:6.1f} s] {match.group(0).replace(REPORT_PREFIX, '').replace('[fedgin] ', '')}"
            )
        aborted = aborted or bool(_ABORT.search(line))
        sites_ended += _SITE_ENDED in line
        if _SITE_ENDED in line and sites_ended == n_sites and can_stop_early and not aborted:
            if _server_finished_normally(sim_workspace):
                _stop(proc)
                return True
    return False


def run_simulator(
    job: Path,
    sim_workspace: Path,
    site_names: list[str],
    log_file: Path,
    threads: int | None = None,
    echo: Callable[[str], None] | None = print,
    timeout_s: float | None = None,
    gpu: str | None = None,
) -> list[dict]:
    """Run FLARE's simulator in a child process (it changes the working directory and logging).

    Once every site has ended a normally finished job, the simulator is stopped instead of being
    left ~6 s in FLARE 2.9's fixed shutdown waits (its process monitor's 3 s grace, the server
    thread's stop, each worker's grace); its results are on disk by then. Any other ending (an
    aborted job, a site that died, a swap run with fewer threads than sites) runs FLARE's own
    shutdown and exit code.

    ``gpu``: FLARE's ``-gpu`` option, GPU ids for the sites (e.g. "0,1": one site per GPU).

    Returns the sites' per-round progress records (see :mod:`fedgin.flare.round_log`).
    """
    n_threads = threads or len(site_names)
    # FLARE's documented CLI (`nvflare simulator`), in this Python.
    cmd = [sys.executable, "-m", "nvflare.cli", "simulator", str(job)]
    cmd += ["-w", str(sim_workspace), "-c", ",".join(site_names), "-t", str(n_threads)]
    if gpu:
        cmd += ["-gpu", gpu]
    # Sites on this machine take turns on its cores (fedgin.flare.cpu_turns); the lock sits next to the log.
    turns_lock = Path(log_file).resolve().parent / "cpu_turns.lock"
    # FLARE's temporary files (multiprocessing's pymp-* folders among them) go to a folder of ours,
    # removed after the run, also when its processes were killed. In the system's temp folder: a
    # socket path in a deep workspace would pass the 108-character limit of AF_UNIX.
    tmp = Path(tempfile.mkdtemp(prefix="fedgin-sim-"))
    env = {**os.environ, **co_located_env(n_threads, turns_lock), "TMPDIR": str(tmp)}
    records = []
    stopped_early = False
    start = time.time()
    with (
        open(log_file, "w") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env) as proc,
    ):
        # A watchdog, so a simulator that hangs without printing still ends at the timeout.
        watchdog = threading.Timer(timeout_s, _stop, (proc,)) if timeout_s else None
        if watchdog:
            watchdog.start()
        try:
            # Stop early only when every site ran at once (no swapping) and the job ended normally.
            can_stop_early = n_threads >= len(site_names)
            events = ROUND_REPORTER_PATH in (job / SERVER_CONFIG).read_text()
            stopped_early = _follow(
                proc, log, records, len(site_names), Path(sim_workspace), can_stop_early, echo, events
            )
        except BaseException:
            _stop(proc)
            raise
        finally:
            if watchdog:
                watchdog.cancel()
            rc = 0 if stopped_early else proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        if stopped_early:
            log.write(f"{EARLY_STOP_NOTE} ({time.time() - start:.1f} s)\n")
        if timeout_s and time.time() - start > timeout_s:
            raise SimulationError(f"simulator exceeded {timeout_s} s and was stopped; see {log_file}")
    if rc != 0:
        raise SimulationError(f"FLARE simulator exited with code {rc}; see {log_file}")
    return records
