"""FLARE simulator runs of the abdomen job for the bench, and the figures read from their logs."""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .common import JOB_DIR, median, rounded
from .processes import RssSampler, child_device

if TYPE_CHECKING:
    from .context import Context

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - ")
_ROUND_STARTED = re.compile(r"Round (\d+) started\.")
_READY = re.compile(r"\[fedgin\] (\S+): \S+ site ready on .* loaded in ([\d.]+) s")
_TRAINED = re.compile(
    r"\[fedgin\] round (\d+)/\d+ (\S+): .* over \d+ steps \(([\d.]+) s\)(?:, waited ([\d.]+) s for a CPU turn)?"
)
_CROSS_EVAL = re.compile(r"\[fedgin\] (\S+): model of \S+ val mean Dice")


def slowest_site(ev: dict, rounds) -> dict[int, float]:
    """Per round, the time until the last site was done: its task plus its wait for a CPU turn."""
    return {
        k: max(t + ev["wait_s"].get(k, {}).get(site, 0.0) for site, t in ev["train_s"][k].items())
        for k in rounds
        if ev["train_s"].get(k)
    }


def parse_simulator_log(path: Path) -> dict:
    """Timestamps (epoch s) of the events of a simulator log that the bench needs."""
    events = {"first": None, "last": None, "round_started": {}, "ready": {}, "load_s": {}, "train_s": {}, "wait_s": {}}
    events.update(sag_done=None, cross_evals={})
    for line in Path(path).read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        # The log is written in local time by the same machine, so it compares with time.time().
        t = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        events["first"] = events["first"] or t
        events["last"] = t
        if m := _ROUND_STARTED.search(line):
            events["round_started"].setdefault(int(m.group(1)), t)
        elif m := _READY.search(line):
            events["ready"].setdefault(m.group(1), []).append(t)
            events["load_s"][m.group(1)] = float(m.group(2))
        elif m := _TRAINED.search(line):
            events["train_s"].setdefault(int(m.group(1)) - 1, {})[m.group(2)] = float(m.group(3))
            events["wait_s"].setdefault(int(m.group(1)) - 1, {})[m.group(2)] = float(m.group(4) or 0.0)
        elif m := _CROSS_EVAL.search(line):
            events["cross_evals"][m.group(1)] = events["cross_evals"].get(m.group(1), 0) + 1
        elif "Finished ScatterAndGather Training" in line:
            events["sag_done"] = t
    return events


def round_walls(events: dict) -> dict[int, float]:
    """Wall seconds of each round: from its start to the next round's start (or training's end)."""
    starts = events["round_started"]
    walls = {}
    for k in sorted(starts):
        end = starts.get(k + 1, events["sag_done"] if k == max(starts) else None)
        if end is not None:
            walls[k] = end - starts[k]
    return walls


def run_flare(ctx: Context, sites: dict[str, Path], rounds: int, training: dict | None, name: str) -> dict:
    """One FLARE simulator run of the abdomen job; wall time, log breakdown, peak RSS per process."""
    from fedgin.tools.federation.cpu_sharing import client_thread_env
    from fedgin.tools.federation.jobs import build_job
    from fedgin.tools.federation.simulation import install_site_configs
    from fedgin.tools.federation.simulator_process import run_simulator

    ws = ctx.work / name
    if ws.exists():
        shutil.rmtree(ws)
    job = build_job(JOB_DIR, ws / "job" / JOB_DIR.name, rounds, min_clients=len(sites), executor_overrides=training)
    sim_ws = ws / "simulate"
    install_site_configs(sim_ws, sites)
    log_file = ws / "simulator.log"
    omp = {**os.environ, **client_thread_env(len(sites))}.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    def echo(line: str) -> None:
        if "Round" in line:
            ctx.log(f"    {name}: {line.strip()}")

    with child_device(ctx.device), RssSampler() as rss:
        start = time.time()
        run_simulator(job, sim_ws, list(sites), log_file, len(sites), echo, ctx.sizes.timeout_s)
        end = time.time()
        rss.sample()
    ev = parse_simulator_log(log_file)
    walls = round_walls(ev)
    steady = {k: w for k, w in walls.items() if k >= 1}  # round 0 waits for the clients to start
    slowest = slowest_site(ev, steady)
    ready = max((max(ts) for ts in ev["ready"].values()), default=None)
    started0 = ev["round_started"].get(0)
    breakdown = {
        "launch_to_first_log_s": ev["first"] - start if ev["first"] else None,
        "first_log_to_round0_s": started0 - ev["first"] if started0 and ev["first"] else None,
        "round0_to_all_sites_ready_s": ready - started0 if ready and started0 else None,
        "site_data_load_s": ev["load_s"],
        "round0_extra_s": walls[0] - median(steady.values()) if 0 in walls and steady else None,
        "training_end_to_last_log_s": ev["last"] - ev["sag_done"] if ev["sag_done"] else None,
        "last_log_to_exit_s": end - ev["last"] if ev["last"] else None,
    }
    return {
        "rounds": rounds,
        "sites": len(sites),
        "omp_threads_per_client": int(omp),
        "wall_s": end - start,
        "round_wall_s": {str(k): rounded(w) for k, w in walls.items()},
        "steady_round_s": rounded(median(steady.values())),
        "slowest_site_task_s": rounded(median(slowest.values())),
        "site_task_s": {
            site: rounded(median(ev["train_s"][k][site] for k in steady if site in ev["train_s"].get(k, {})))
            for site in sites
        },
        "round_minus_slowest_task_s": rounded(median(steady[k] - slowest[k] for k in slowest)),
        "data_loads_per_site": {site: len(ts) for site, ts in ev["ready"].items()},
        "cross_site_evals_per_site": ev["cross_evals"],
        "breakdown": {k: rounded(v, 3) if not isinstance(v, dict) else v for k, v in breakdown.items()},
        "peak_rss_mb": {"clients": rss.clients(), "simulator": rounded(rss.peak_mb.get("simulator"), 1)},
        "job": str(job),
    }
