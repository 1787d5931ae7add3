"""Section poc: the fl section's FLARE job in POC mode (real server and client processes); FLARE's share of a round."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import FL_MAX_ROUND_OVERHEAD_S, JOB_DIR, cell, median, met, rounded, verdict
from .flare_runs import parse_simulator_log, round_walls, slowest_site

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
    """The fl section's FLARE run in POC mode: real server and client processes, no simulator."""
    from fedgin.tools.federation.poc import run_poc

    sites, rounds = ctx.phantoms(), ctx.sizes.poc_rounds
    ws = ctx.work / "poc"
    ctx.log(f"  poc: {len(sites)} sites, {rounds} rounds (prepare, start, submit, follow, download, stop) ...")
    start = time.time()
    summary = run_poc(
        JOB_DIR,
        sites,
        ws,
        num_rounds=rounds,
        executor_overrides=ctx.sizes.fl_training,
        evaluate_split=None,
        echo=lambda line: ctx.log(f"    poc: {line.strip()}") if "Round" in line else None,
        timeout_s=ctx.sizes.timeout_s,
    )
    wall = time.time() - start
    # The server's job log comes with the download; each site's stays in its folder of the POC.
    ev = parse_simulator_log(Path(summary["results"]) / "workspace" / "log.txt")
    for site in sites:
        site_ev = parse_simulator_log(ws / "poc" / "example_project" / "prod_00" / site / summary["job_id"] / "log.txt")
        for k, per_site in site_ev["train_s"].items():
            ev["train_s"].setdefault(k, {}).update(per_site)
        for k, per_site in site_ev["wait_s"].items():
            ev["wait_s"].setdefault(k, {}).update(per_site)
    walls = round_walls(ev)
    steady = {k: w for k, w in walls.items() if k >= 1}
    slowest = slowest_site(ev, steady)
    share = median(steady[k] - slowest[k] for k in slowest)
    return {
        "rounds": rounds,
        "wall_s": rounded(wall, 2),
        "job_wall_s": rounded(ev["last"] - ev["first"], 2) if ev["first"] else None,
        "steady_round_s": rounded(median(steady.values())),
        "slowest_site_task_s": rounded(median(slowest.values())),
        "round_minus_slowest_task_s": rounded(share),
        "met": met(share, FL_MAX_ROUND_OVERHEAD_S),
    }


def markdown(sec: dict) -> list[str]:
    return [
        "## 2b. FL overhead in POC mode",
        "",
        f"The fl section's job, {sec['rounds']} rounds, in FLARE's POC mode: a real server and one client process",
        "per site on this machine, started, fed the job through the admin API, stopped",
        "(`fedgin.tools.federation.poc.run_poc`).",
        "No simulator, so none of its fixed sleeps; the sites share the cores as in the simulator.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| whole POC flow: prepare, start, submit, follow, download, stop | {cell(sec['wall_s'], '{:.1f} s')} | | |",
        f"| the job on the server, first to last log line | {cell(sec['job_wall_s'], '{:.1f} s')} | | |",
        f"| steady round | {cell(sec['steady_round_s'], '{:.2f} s')} | | |",
        f"| slowest site's task (validation + epoch) | {cell(sec['slowest_site_task_s'], '{:.2f} s')} | | |",
        f"| FLARE's own share of a steady round | {cell(sec['round_minus_slowest_task_s'], '{:.3f} s')} "
        f"| <= {FL_MAX_ROUND_OVERHEAD_S} s | {verdict(sec['met'])} |",
        "",
    ]
