"""Run a job in the FLARE simulator on given sites, follow it, and score the global model.

Workspace layout (``WS``)::

    WS/job/<job>/            the built job (our code packed into app/custom)
    WS/simulate/             FLARE's simulator workspace; local/fedgin_sites/<site>.json are the
                             site configs (the simulator gives every site a copy of local/)
    WS/simulator.log         FLARE's full log
    WS/results/              dice.json, dice.md, FL_global_model.pt, cross_site_val.json,
                             progress.json, progress.png (Dice and loss per round),
                             privacy_<site>.json (epsilon per round, with the Gaussian filter),
                             privacy_dp_sgd_<site>.json (epsilon per patient and round, DP-SGD)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedgin.flare.metrics import TB_FOLDER
from fedgin.flare.privacy.ledger import DP_SGD, GAUSSIAN, ledger_file
from fedgin.flare.site_files import SIMULATOR_SITE_CONFIG_DIR
from fedgin.seg.evaluation import evaluate_model
from fedgin.seg.site_config import load_site_config, with_absolute_paths
from fedgin.tools.dice_table import dice_table
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.federation.progress import progress_from_scalars, read_tb_scalars, save_progress
from fedgin.tools.federation.simulator_process import SimulationError, abort_reason, run_simulator
from fedgin.tools.files import write_json
from fedgin.tools.job_folder import CLIENT_CONFIG, job_num_rounds, job_training_config

SIM_JOB_DIR = Path("server/simulate_job")
# The simulated sites' ledgers (fedgin.flare.privacy.ledger, in their shared local/): the filter's
# record and DP-SGD's, copied into the results as privacy_<site>.json and privacy_dp_sgd_<site>.json.
SITE_PRIVACY_RECORDS = {"privacy": GAUSSIAN, "privacy_dp_sgd": DP_SGD}
GLOBAL_MODEL = SIM_JOB_DIR / "app_server/FL_global_model.pt"
CROSS_SITE = SIM_JOB_DIR / "cross_site_val/cross_val_results.json"


@dataclass
class SimulationResult:
    workspace: Path
    global_model: Path
    cross_site: dict
    dice: dict = field(default_factory=dict)
    wall_time_s: float = 0.0


def print_result(result: SimulationResult) -> None:
    """For a person at the command line: the Dice table, and where the results and FLARE's log are."""
    results = result.workspace / "results"
    if (results / "dice.md").is_file():
        print()
        print((results / "dice.md").read_text())
    print(f"FLARE run: {result.wall_time_s:.0f} s. Results in {results}/ (dice.json, dice.md, FL_global_model.pt,")
    print(f"cross_site_val.json); FLARE's full log: {result.workspace / 'simulator.log'}")


def _copy_privacy_records(sim_ws: Path, sites: Mapping[str, str | Path], results: Path) -> None:
    """Each site's privacy ledgers (epsilon per round) into the job's results, also after an abort,
    and into the workspace's shared ``local/``: FLARE recreates the simulated sites' folders on every
    run and copies that ``local/`` into each, so a later run (a resume) continues their budgets."""
    for name in sites:
        for prefix, record in SITE_PRIVACY_RECORDS.items():
            (results / f"{prefix}_{name}.json").unlink(missing_ok=True)  # none from an earlier run
            ledger = ledger_file(sim_ws / name / "local", name, record)
            if ledger.is_file():
                shutil.copy2(ledger, results / f"{prefix}_{name}.json")
                kept = sim_ws / "local" / ledger.relative_to(sim_ws / name / "local")
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ledger, kept)


def install_site_configs(sim_workspace: Path, sites: Mapping[str, str | Path]) -> None:
    """Copy each site config (paths made absolute) to where the simulated site looks for it."""
    target = sim_workspace / "local" / SIMULATOR_SITE_CONFIG_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, path in sites.items():
        write_json(target / f"{name}.json", with_absolute_paths(path))


def simulate(
    job_dir: str | Path,
    sites: Mapping[str, str | Path],
    workspace: str | Path,
    num_rounds: int | None = None,
    executor_overrides: dict | None = None,
    threads: int | None = None,
    evaluate_split: str | None = "test",
    echo: Callable[[str], None] | None = print,
    timeout_s: float | None = None,
    privacy: dict | None = None,
    min_clients: int | None = None,
    aggregator: dict | None = None,
    workflow: dict | None = None,
    executor_path: str | None = None,
    resume_from: str | Path | None = None,
    start_round: int | None = None,
    gpu: str | None = None,
    mlflow_uri: str | None = None,
) -> SimulationResult:
    """Build ``job_dir``, run it in the simulator on ``sites`` and score the final global model.

    Args:
        job_dir: a job definition from ``jobs/``.
        sites: site name -> site config file.
        workspace: output folder (created; the simulator part is replaced).
        num_rounds: override the job's rounds.
        executor_overrides: override our executor's args (e.g. ``{"augmentation": "none"}``).
        threads: sites trained in parallel (default: all).
        evaluate_split: split of each site scored with the final global model (None: skip).
        echo: where progress lines go.
        timeout_s: kill the simulator after this long.
        privacy: the sites' filter of train results (see :func:`fedgin.tools.federation.jobs.build_job`).
        min_clients: results a round waits for (default: all sites). Fewer lets the job go on
            when a site fails; see ``wait_time_after_min_received`` for late sites.
        aggregator, workflow, executor_path: see :func:`fedgin.tools.federation.jobs.build_job`.
        resume_from: a saved global model to start from (e.g. ``results/FL_global_model.pt`` of an
            earlier run); ``num_rounds`` then counts the rounds to add.
        start_round: the round number the run starts at (resume: the rounds already done).
        gpu: GPU ids for the sites, FLARE's ``-gpu`` (e.g. "0,1"; default: FLARE's choice).
        mlflow_uri: also log the sites' figures to MLflow (see :func:`fedgin.tools.federation.jobs.build_job`).
    """
    _check_sites(sites, threads, echo)
    ws = Path(workspace).resolve()
    ws.mkdir(parents=True, exist_ok=True)
    workflow = dict(workflow or {})
    if start_round is not None:
        workflow["start_round"] = int(start_round)
    if resume_from is not None:
        resume_from = _copy_resume_model(resume_from, ws)
    job = build_job(
        job_dir,
        ws / "job" / Path(job_dir).name,
        num_rounds,
        min_clients=min_clients or len(sites),
        executor_overrides=executor_overrides,
        privacy=privacy,
        executor_path=executor_path,
        aggregator=aggregator,
        workflow=workflow,
        resume_from=resume_from,
        mlflow_uri=mlflow_uri,
    )
    sim_ws = ws / "simulate"
    install_site_configs(sim_ws, sites)
    config = job_training_config(job)
    rounds = job_num_rounds(job)
    if echo:
        echo(f"Running {job.name} in the FLARE simulator: {len(sites)} sites ({', '.join(sites)}), {rounds} rounds")
    start = time.time()
    model = sim_ws / GLOBAL_MODEL
    model.unlink(missing_ok=True)  # none from an earlier run in this workspace
    try:
        records = run_simulator(job, sim_ws, list(sites), ws / "simulator.log", threads, echo, timeout_s, gpu)
    except SimulationError as e:
        _hand_over_after_abort(e, ws, sim_ws, sites)
    result = _collect_results(ws, sim_ws, sites, records, job, wall_time_s=time.time() - start)
    if evaluate_split:
        _score(result, job, sites, config, evaluate_split, echo)
    return result


def _score(result: SimulationResult, job: Path, sites, config, split: str, echo) -> None:
    """Dice of the final global model on each site's ``split``: ``result.dice`` and ``results/dice.*``."""
    if echo:
        echo(f"Scoring the final global model on each site's {split} split ...")
    for name, path in sites.items():
        result.dice[name] = evaluate_model(result.global_model, path, split=split, config=config)
    results = result.workspace / "results"
    write_json(results / "dice.json", result.dice)
    (results / "dice.md").write_text(
        dice_table(result.dice, title=f"Dice of the final global model ({job.name}, {split} split)")
    )


def _check_sites(sites: Mapping[str, str | Path], threads: int | None, echo) -> None:
    """Fail before FLARE starts, naming the file; warn when sites would be swapped in and out."""
    if len(sites) < 1:
        raise ValueError("give at least one site")
    if threads is not None and threads < len(sites) and echo:
        # FLARE's simulator then swaps sites in and out: each restart reloads the site's data and
        # loses its optimizer state, every round.
        echo(f"warning: {threads} threads for {len(sites)} sites: sites reload their data every round")
    for path in sites.values():
        load_site_config(path)


def _copy_metrics(sim_ws: Path, results: Path) -> bool:
    """The TensorBoard files the server wrote from the sites' metric events, into ``results/``."""
    tb_events = sim_ws / SIM_JOB_DIR / TB_FOLDER
    if tb_events.is_dir():
        shutil.copytree(tb_events, results / TB_FOLDER, dirs_exist_ok=True)
    return tb_events.is_dir()


def _copy_resume_model(resume_from: str | Path, ws: Path) -> Path:
    """The model to resume from, copied into the workspace: FLARE's results replace the old run's,
    perhaps in this very workspace."""
    if not Path(resume_from).is_file():
        raise SimulationError(f"cannot resume: {resume_from} does not exist")
    resume_copy = ws / "resume_from.pt"
    if Path(resume_from).resolve() != resume_copy:
        shutil.copy2(resume_from, resume_copy)
    return resume_copy


def _hand_over_after_abort(error: SimulationError, ws: Path, sim_ws: Path, sites: Mapping[str, str | Path]):
    """Raise ``error`` with the abort's reason; an aborted job keeps the global model of its last
    finished round, which goes to ``results/`` and is named in the error."""
    reason = abort_reason(ws / "simulator.log")
    message = f"{error}" + (f"; the job was aborted: {reason}" if reason else "")
    model = sim_ws / GLOBAL_MODEL
    if not model.is_file():
        raise SimulationError(message) from None
    (ws / "results").mkdir(exist_ok=True)
    shutil.copy2(model, ws / "results" / "FL_global_model.pt")
    _copy_privacy_records(sim_ws, sites, ws / "results")
    _copy_metrics(sim_ws, ws / "results")
    message += f"; the last global model saved is {ws / 'results' / 'FL_global_model.pt'}"
    raise SimulationError(message, ws / "results" / "FL_global_model.pt") from None


def _collect_results(
    ws: Path, sim_ws: Path, sites: Mapping[str, str | Path], records: list[dict], job: Path, wall_time_s: float
) -> SimulationResult:
    """``results/``: the global model and its training options (evaluate, predict and export find
    them there), cross-site validation, the sites' figures and their plot, privacy records."""
    model = sim_ws / GLOBAL_MODEL
    if not model.is_file():
        raise SimulationError(f"the job finished without a global model ({model}); see {ws / 'simulator.log'}")
    results = ws / "results"
    results.mkdir(exist_ok=True)
    shutil.copy2(model, results / "FL_global_model.pt")
    (results / "config").mkdir(exist_ok=True)
    shutil.copy2(job / CLIENT_CONFIG, results / "config" / CLIENT_CONFIG.name)
    cross_site = json.loads((sim_ws / CROSS_SITE).read_text()) if (sim_ws / CROSS_SITE).is_file() else {}
    write_json(results / "cross_site_val.json", cross_site)
    if _copy_metrics(sim_ws, results):  # the sites' metric events, as the server wrote them
        rounds = max((r["rounds"] for r in records), default=0)
        records = progress_from_scalars(read_tb_scalars(results / TB_FOLDER), rounds) or records
    save_progress(records, results)
    _copy_privacy_records(sim_ws, sites, results)
    return SimulationResult(ws, results / "FL_global_model.pt", cross_site, wall_time_s=wall_time_s)
