"""Section fl: FLARE simulator against the same training in one plain process; fixed and per-round overhead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    DEMO_ROUNDS,
    FL_MAX_RATIO,
    FL_MAX_ROUND_OVERHEAD_S,
    PAPER_ROUNDS,
    cell,
    median,
    met,
    rounded,
    verdict,
)
from .flare_runs import run_flare
from .plain import run_plain

if TYPE_CHECKING:
    from .context import Context


# -- figures from the runs ---------------------------------------------------------------------------
def _fit(rounds: list[int], walls: list[float]) -> tuple[float | None, float | None]:
    """Least-squares wall = fixed + rounds * per_round; None without two distinct round counts."""
    import numpy as np

    if len(set(rounds)) < 2:
        return None, None
    slope, intercept = np.polyfit(np.asarray(rounds, float), np.asarray(walls, float), 1)
    return float(intercept), float(slope)


def pooled_ratio(runs: list[dict], rounds: int) -> float | None:
    """FLARE / plain at ``rounds``: summed walls of every pair measured at that round count."""
    pairs = [x for x in runs if x["rounds"] == rounds]
    if not pairs:
        return None
    return sum(x["flare"]["wall_s"] for x in pairs) / sum(x["plain"]["wall_s"] for x in pairs)


def repeat_noise(runs: list[dict], rounds: int) -> float | None:
    """Largest relative difference between two walls of the same work (FLARE or plain) at ``rounds``."""
    spreads = []
    for side in ("flare", "plain"):
        walls = [x[side]["wall_s"] for x in runs if x["rounds"] == rounds]
        if len(walls) > 1:
            spreads.append((max(walls) - min(walls)) / min(walls))
    return max(spreads) if spreads else None


def resolved(ratio: float | None, noise: float | None) -> bool:
    """Whether a FLARE / plain ratio says anything against the target, given the repeat noise."""
    return ratio is not None and ratio >= 1 and (noise is None or noise < abs(ratio - FL_MAX_RATIO))


# -- measuring ---------------------------------------------------------------------------------------
def _run_pairs(ctx: Context, sites: dict[str, Path]) -> list[dict]:
    """A FLARE run then a plain run per round count; the longest pair again in the other order."""
    runs = []
    for rounds in ctx.sizes.fl_rounds:
        ctx.log(f"  fl: FLARE simulator, {len(sites)} sites, {rounds} rounds ...")
        flare = run_flare(ctx, sites, rounds, ctx.sizes.fl_training, f"fl_flare_r{rounds}")
        ctx.flare_runs.append(flare)
        ctx.log(f"  fl: plain process, {rounds} rounds ...")
        evals = flare["cross_site_evals_per_site"]
        plain = run_plain(ctx, Path(flare["job"]), sites, rounds, f"fl_plain_r{rounds}", cross_evals=evals)
        runs.append({"rounds": rounds, "flare": flare, "plain": plain, "ratio": flare["wall_s"] / plain["wall_s"]})
        ctx.log(f"  fl: {rounds} rounds: FLARE {flare['wall_s']:.1f} s, plain {plain['wall_s']:.1f} s")
    if ctx.sizes.fl_repeat_longest:
        # The longest pair once more, plain first: with the first pair an A-B-B-A order, so a machine
        # that drifts slower or faster over these minutes weighs on FLARE and plain alike.
        first = runs[-1]
        rounds, evals = first["rounds"], first["flare"]["cross_site_evals_per_site"]
        ctx.log(f"  fl: plain process, {rounds} rounds, again (plain first this time) ...")
        plain = run_plain(ctx, Path(first["flare"]["job"]), sites, rounds, f"fl_plain_r{rounds}_b", cross_evals=evals)
        ctx.log(f"  fl: FLARE simulator, {len(sites)} sites, {rounds} rounds, again ...")
        flare = run_flare(ctx, sites, rounds, ctx.sizes.fl_training, f"fl_flare_r{rounds}_b")
        ctx.flare_runs.append(flare)
        ratio = flare["wall_s"] / plain["wall_s"]
        runs.append({"rounds": rounds, "flare": flare, "plain": plain, "ratio": ratio, "plain_first": True})
        ctx.log(f"  fl: {rounds} rounds, again: FLARE {flare['wall_s']:.1f} s, plain {plain['wall_s']:.1f} s")
    return runs


def measure(ctx: Context) -> dict:
    """FLARE simulator vs the same training in one plain process, at several round counts."""
    sites = ctx.phantoms()
    runs = _run_pairs(ctx, sites)
    r = [x["rounds"] for x in runs]
    f_fixed, f_round = _fit(r, [x["flare"]["wall_s"] for x in runs])
    p_fixed, p_round = _fit(r, [x["plain"]["wall_s"] for x in runs])
    fit = {"flare_fixed_s": f_fixed, "flare_per_round_s": f_round}
    fit.update(plain_fixed_s=p_fixed, plain_per_round_s=p_round)
    overhead = f_round - p_round if f_round is not None else None
    fixed = f_fixed - p_fixed if f_fixed is not None else None
    # The demo's round count is measured when the sizes include it (the default), else extrapolated;
    # with the repeat, from both pairs' summed walls.
    ratio_demo = pooled_ratio(runs, DEMO_ROUNDS)
    n_demo = sum(x["rounds"] == DEMO_ROUNDS for x in runs)
    demo_source = (
        ("measured" if n_demo == 1 else f"measured, {n_demo} pairs A-B-B-A, summed walls")
        if ratio_demo is not None
        else "extrapolated from the fit"
    )
    if ratio_demo is None and f_fixed is not None and p_fixed + DEMO_ROUNDS * p_round > 0:  # fit may go below 0
        ratio_demo = (f_fixed + DEMO_ROUNDS * f_round) / (p_fixed + DEMO_ROUNDS * p_round)
    ratio_paper = None
    if f_fixed is not None and p_fixed + PAPER_ROUNDS * p_round > 0:
        ratio_paper = (f_fixed + PAPER_ROUNDS * f_round) / (p_fixed + PAPER_ROUNDS * p_round)
    longest = runs[-1]
    plain_rounds = [x["wall_s"] for x in longest["plain"]["rounds"]]
    # How far apart this machine measured the very same work (the repeated pair): a ratio closer to
    # the target than that, below 1 (FLARE does strictly more work than the plain process) or a
    # negative slope difference is noise, not a result.
    noise = repeat_noise(runs, DEMO_ROUNDS)
    ratio_resolved = resolved(ratio_demo, noise)
    overhead_resolved = overhead is not None and overhead >= 0
    return {
        "sites": list(sites),
        "training": ctx.sizes.fl_training,
        "runs": runs,
        "fit": {k: rounded(v) for k, v in fit.items()},
        "flare_fixed_startup_s": rounded(fixed),
        "per_round_overhead_s": rounded(overhead),
        "per_round_overhead_met": met(overhead, FL_MAX_ROUND_OVERHEAD_S) if overhead_resolved else None,
        "ratio_measured": rounded(pooled_ratio(runs, longest["rounds"])),
        "ratio_measured_rounds": longest["rounds"],
        "ratio_demo": rounded(ratio_demo),
        "ratio_demo_source": demo_source,
        "ratio_demo_met": met(ratio_demo, FL_MAX_RATIO) if ratio_resolved else None,
        "repeat_noise": rounded(noise),
        "ratio_paper_rounds": PAPER_ROUNDS,
        "ratio_paper": rounded(ratio_paper),
        "steady_round": {
            "flare_round_s": longest["flare"]["steady_round_s"],
            "flare_slowest_site_task_s": longest["flare"]["slowest_site_task_s"],
            "flare_round_minus_slowest_task_s": longest["flare"]["round_minus_slowest_task_s"],
            "plain_round_s": rounded(median(plain_rounds[1:] or plain_rounds)),
        },
        # Each site's task (validation + epoch) in FLARE, where the sites share the cores, and alone
        # with all cores in the plain process: the difference is the price of sharing, not FLARE's.
        "site_task_s": {
            site: {
                "flare": longest["flare"]["site_task_s"].get(site),
                "plain": rounded(median([x["site_s"][site] for x in longest["plain"]["rounds"][1:]])),
            }
            for site in sites
        },
    }


# -- the report --------------------------------------------------------------------------------------
def _md_runs(sec: dict) -> list[str]:
    """What is compared, and the wall of every FLARE / plain pair."""
    lines = [
        "## 2. FL overhead",
        "",
        f"FLARE simulator, {len(sec['sites'])} phantom sites ({', '.join(sec['sites'])}), 1 local epoch, training "
        f"`{json.dumps(sec['training'])}`, against the same work in one plain process (per round and site: global",
        "weights in, validation score, local epoch, diff, PercentilePrivacy; then the step-weighted average; after",
        "the rounds each site scores the global model as often as FLARE's cross-site validation did). The",
        "simulator runs the sites in parallel processes with all cores each, which take **turns** on the cores",
        "(`fedgin.flare.cpu_turns`: one site computes at a time;",
        "`fedgin.tools.federation.cpu_sharing.client_thread_env`); the plain process trains them **one after the",
        "other** with all cores. Both use OpenMP's defaults.",
        "Wall times run from launch to exit.",
        "",
        "| rounds | FLARE wall (s) | plain wall (s) | FLARE / plain |",
        "|---|---|---|---|",
    ]
    for run in sec["runs"]:
        again = " (again, plain first)" if run.get("plain_first") else ""
        lines.append(
            f"| {run['rounds']}{again} | {run['flare']['wall_s']:.1f} | {run['plain']['wall_s']:.1f} "
            f"| {run['ratio']:.3f} |"
        )
    return lines


def _md_figures(sec: dict) -> list[str]:
    """The linear fit and the figures with their targets."""
    fit = sec["fit"]
    return [
        "",
        "Linear fit wall = fixed + rounds x per_round:",
        "",
        "| | fixed (s) | per round (s) |",
        "|---|---|---|",
        f"| FLARE | {cell(fit['flare_fixed_s'], '{:.2f}')} | {cell(fit['flare_per_round_s'])} |",
        f"| plain | {cell(fit['plain_fixed_s'], '{:.2f}')} | {cell(fit['plain_per_round_s'])} |",
        f"| FLARE - plain | {cell(sec['flare_fixed_startup_s'], '{:.2f}')} | {cell(sec['per_round_overhead_s'])} |",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| per-round overhead (fit slope difference) | {cell(sec['per_round_overhead_s'], '{:.3f} s')} | <= "
        f"{FL_MAX_ROUND_OVERHEAD_S} s | {verdict(sec['per_round_overhead_met'])} |",
        f"| FLARE's own share of a steady round (round - last site's wait + task, from the log) "
        f"| {cell(sec['steady_round']['flare_round_minus_slowest_task_s'], '{:.3f} s')} "
        f"| <= {FL_MAX_ROUND_OVERHEAD_S} s "
        f"| {verdict(met(sec['steady_round']['flare_round_minus_slowest_task_s'], FL_MAX_ROUND_OVERHEAD_S))} |",
        f"| FLARE fixed start-up (fit intercept difference) | {cell(sec['flare_fixed_startup_s'], '{:.1f} s')} | | |",
        *(
            [f"| FLARE / plain, {sec['ratio_measured_rounds']} rounds (measured) | {cell(sec['ratio_measured'])} | | |"]
            if sec["ratio_measured_rounds"] != DEMO_ROUNDS
            else []
        ),
        f"| FLARE / plain, {DEMO_ROUNDS} rounds (demo; {sec['ratio_demo_source']}) | {cell(sec['ratio_demo'])} "
        f"| <= {FL_MAX_RATIO} | {verdict(sec['ratio_demo_met'])} |",
        f"| FLARE / plain, {PAPER_ROUNDS} rounds (the paper's protocol; extrapolated from the fit) "
        f"| {cell(sec.get('ratio_paper'))} | | |",
        "",
    ]


def _md_noise(sec: dict) -> list[str]:
    """How far apart the same work measured twice, when it was repeated."""
    if sec.get("repeat_noise") is None:
        return []
    return [
        f"The same work measured twice ({DEMO_ROUNDS} rounds) took walls up to {sec['repeat_noise']:.1%} apart "
        "on this machine. A target shown '-' is not resolved by this run: the ratio is nearer the target than "
        "that noise, below 1 (FLARE does strictly more work than the plain process), or the slope difference "
        "is negative. Rerun on an idle machine.",
        "",
    ]


def _md_steady(sec: dict) -> list[str]:
    """A steady round of the longest runs, and each site's task in FLARE and in the plain process."""
    sr, longest = sec["steady_round"], sec["runs"][-1]
    return [
        f"Steady rounds (round >= 1) of the {longest['rounds']}-round runs, from the simulator log: a round lasts",
        f"{cell(sr['flare_round_s'], '{:.2f} s')}, the last site to finish needs (its wait for a CPU turn + its task:",
        f"validation + epoch, timed by the executor) {cell(sr['flare_slowest_site_task_s'], '{:.2f} s')}: FLARE's own",
        "share of a round (task dispatch, transfer, aggregation, handing over the turn) is "
        f"{cell(sr['flare_round_minus_slowest_task_s'], '{:.2f} s')}. "
        f"A plain-process round takes {cell(sr['plain_round_s'], '{:.2f} s')}.",
        "",
        "Each site's task (validation + local epoch, without its wait for a CPU turn; median of rounds >= 1), in",
        "FLARE and in the plain process. The difference is what running next to the other site's process costs",
        "(FLARE's threads, caches), not FLARE's task handling.",
        "",
        "| site | FLARE (s) | plain (s) |",
        "|---|---|---|",
        *(
            f"| {site} | {cell(t['flare'], '{:.2f}')} | {cell(t['plain'], '{:.2f}')} |"
            for site, t in sec.get("site_task_s", {}).items()
        ),
        "",
    ]


def _md_fixed(sec: dict) -> list[str]:
    """Where the fixed time goes, in the FLARE simulator and in the plain process."""
    longest = sec["runs"][-1]
    b, p = longest["flare"]["breakdown"], longest["plain"]
    return [
        "Where the fixed time goes:",
        "",
        "| FLARE simulator | s | plain process | s |",
        "|---|---|---|---|",
        "| launch -> first log line (interpreter, FLARE imports, job deploy) | "
        f"{cell(b['launch_to_first_log_s'], '{:.1f}')} "
        f"| launch -> process start | {cell(p['launch_to_process_s'], '{:.1f}')} |",
        f"| first log line -> round 0 started (server start) | {cell(b['first_log_to_round0_s'], '{:.1f}')} "
        f"| process start -> imports done | {cell(p['process_start_to_imports_s'], '{:.1f}')} |",
        f"| round 0 started -> all sites ready (client processes, imports, data load "
        f"{cell(max(b['site_data_load_s'].values(), default=None), '{:.1f}')} s) | "
        f"{cell(b['round0_to_all_sites_ready_s'], '{:.1f}')} | site data load + model build "
        f"| {cell(p['data_load_s'], '{:.1f}')} |",
        f"| round 0 longer than a steady round | {cell(b['round0_extra_s'], '{:.1f}')} | | |",
        f"| training end -> last log line (cross-site validation, shutdown) | "
        f"{cell(b['training_end_to_last_log_s'], '{:.1f}')} | final evaluations "
        f"| {cell(p['cross_eval_s'], '{:.1f}')} |",
        f"| last log line -> process exit | {cell(b['last_log_to_exit_s'], '{:.1f}')} | done -> exit | "
        f"{cell(p['exit_s'], '{:.1f}')} |",
        "",
    ]


def markdown(sec: dict) -> list[str]:
    return _md_runs(sec) + _md_figures(sec) + _md_noise(sec) + _md_steady(sec) + _md_fixed(sec)
