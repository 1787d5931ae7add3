"""Section data: site data loaded once per FLARE job, rounds/s with and without that cache, memory per process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import cell, median, rounded, verdict
from .flare_runs import run_flare
from .plain import run_plain

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
    """Data loaded once per site per job; rounds/s with and without the cache; peak RSS of a client."""
    sites = ctx.phantoms()
    if not ctx.flare_runs:  # the fl section did not run: one short simulator run for its log and RSS
        ctx.log("  data: FLARE simulator, 2 rounds (for the loads per site and the clients' RSS) ...")
        ctx.flare_runs.append(run_flare(ctx, sites, 2, ctx.sizes.fl_training, "data_flare_r2"))
    flare = ctx.flare_runs[-1]
    loads = {}
    for run in ctx.flare_runs:
        for site, n in run["data_loads_per_site"].items():
            loads[site] = max(loads.get(site, 0), n)
    n = ctx.sizes.data_rounds
    ctx.log(f"  data: plain process, a warm-up round then {2 * n} rounds alternating cached / reloaded data ...")
    plain = run_plain(ctx, Path(flare["job"]), sites, 1 + 2 * n, "data_plain", reload="alternate")
    cached = median(r["wall_s"] for r in plain["rounds"][1:] if not r["reload"])
    reloaded = median(r["wall_s"] for r in plain["rounds"] if r["reload"])
    clients = {}
    for run in ctx.flare_runs:
        for site, mb in run["peak_rss_mb"]["clients"].items():
            clients[site] = max(clients.get(site, 0.0), mb)
    return {
        "loads_per_site_per_job": loads,
        "loaded_once": bool(loads) and all(v == 1 for v in loads.values()),
        "cached_round_s": rounded(cached),
        "reloaded_round_s": rounded(reloaded),
        "rounds_per_s_cached": rounded(1 / cached if cached else None),
        "rounds_per_s_reloaded": rounded(1 / reloaded if reloaded else None),
        "reload_s_per_round": rounded(median(r["load_s"] for r in plain["rounds"] if r["reload"])),
        "site_data_mb": {k: round(v, 1) for k, v in plain["site_data_mb"].items()},
        "peak_rss_mb_per_client": clients,
        "peak_rss_mb_simulator": max((r["peak_rss_mb"]["simulator"] or 0) for r in ctx.flare_runs),
        "peak_rss_mb_plain_process": plain["peak_rss_mb"],
        "plain": plain,
    }


def markdown(sec: dict) -> list[str]:
    loads = ", ".join(f"{k} {v}" for k, v in sec["loads_per_site_per_job"].items())
    clients = ", ".join(f"{k} {v:.0f} MB" for k, v in sec["peak_rss_mb_per_client"].items())
    data_mb = ", ".join(f"{k} {v:.1f} MB" for k, v in sec["site_data_mb"].items())
    return [
        "## 3. Data",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| data loads per site per FLARE job ('site ready' log lines) | {loads} | 1 | {verdict(sec['loaded_once'])} |",
        f"| plain-process rounds/s, data cached (loaded once) | {cell(sec['rounds_per_s_cached'])} "
        f"({cell(sec['cached_round_s'], '{:.2f}')} s/round) | | |",
        f"| plain-process rounds/s, data reloaded every round | {cell(sec['rounds_per_s_reloaded'])} "
        f"({cell(sec['reloaded_round_s'], '{:.2f}')} s/round, of which loading "
        f"{cell(sec['reload_s_per_round'], '{:.2f}')} s) | | |",
        f"| preprocessed data in memory per site (tensors) | {data_mb} | | |",
        f"| peak RSS per client process (FLARE simulator) | {clients} | | |",
        f"| peak RSS of the simulator's server process | {cell(sec['peak_rss_mb_simulator'], '{:.0f} MB')} | | |",
        f"| peak RSS of the plain process (all sites) | {cell(sec['peak_rss_mb_plain_process'], '{:.0f} MB')} | | |",
        "",
        "Cached and reloading rounds alternate in one plain process after a warm-up round (medians of each kind).",
        "",
    ]
