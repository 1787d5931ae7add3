"""Section scale: 2, 4 and 8 simulated sites in parallel: wall per round, start-up and peak RSS per client process."""

from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING

from .common import CLIENT_MAX_RSS_MB, cell, met, rounded, verdict
from .flare_runs import run_flare

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
    """2, 4, 8 simulated sites in parallel: wall per round and peak RSS per client process."""
    rows = []
    for n in ctx.sizes.scale_sites:
        sites = ctx.scale_phantoms(n)
        ctx.log(f"  scale: FLARE simulator, {n} sites, {ctx.sizes.scale_rounds} rounds ...")
        run = run_flare(ctx, sites, ctx.sizes.scale_rounds, ctx.sizes.scale_training, f"scale_{n}")
        clients = run["peak_rss_mb"]["clients"]
        peak = max(clients.values()) if clients else None
        started = run["breakdown"]
        startup = sum(
            started[k] or 0 for k in ("launch_to_first_log_s", "first_log_to_round0_s", "round0_to_all_sites_ready_s")
        )
        rows.append(
            {
                "sites": n,
                "omp_threads_per_client": run["omp_threads_per_client"],
                "steady_round_s": run["steady_round_s"],
                "startup_until_all_ready_s": rounded(startup, 2),
                "wall_s": rounded(run["wall_s"], 2),
                "peak_rss_mb_client_max": rounded(peak, 1),
                "peak_rss_mb_client_mean": rounded(statistics.mean(clients.values()), 1) if clients else None,
                "peak_rss_mb_simulator": run["peak_rss_mb"]["simulator"],
                "target_client_mb": CLIENT_MAX_RSS_MB,
                "met": met(peak, CLIENT_MAX_RSS_MB),
                "run": run,
            }
        )
        ctx.log(f"  scale: {n} sites: {run['steady_round_s']} s per round, peak client RSS {peak} MB")
    return {"training": ctx.sizes.scale_training or "shipped default (2D, 192 x 192)", "rows": rows}


def markdown(sec: dict) -> list[str]:
    training = sec["training"] if isinstance(sec["training"], str) else f"`{json.dumps(sec['training'])}`"
    lines = [
        "## 4. Scale",
        "",
        f"Simulated sites, half CT half MR, small case counts, training {training}; all sites in parallel,",
        "each with the threads below (`fedgin.tools.federation.cpu_sharing.client_thread_env`). Round wall: median",
        "of rounds >= 1",
        "from the simulator log. RSS: peak over 0.2 s samples of each client process (shared libraries included).",
        "",
        "| sites | threads per client | wall per round (s) | start-up until all sites ready (s) | total wall (s) "
        "| peak RSS per client, max / mean (MB) | server RSS (MB) | target <= 1 GB per client |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        lines.append(
            f"| {r['sites']} | {r['omp_threads_per_client']} | {cell(r['steady_round_s'], '{:.2f}')} "
            f"| {cell(r['startup_until_all_ready_s'], '{:.1f}')} | {r['wall_s']:.1f} "
            f"| {cell(r['peak_rss_mb_client_max'], '{:.0f}')} / {cell(r['peak_rss_mb_client_mean'], '{:.0f}')} "
            f"| {cell(r['peak_rss_mb_simulator'], '{:.0f}')} | {verdict(r['met'])} |"
        )
    return lines + [""]
