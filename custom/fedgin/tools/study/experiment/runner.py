"""Run the grid: each run trains (FLARE simulator, or one process for centralized/local), scores the
final model on every site's test split, and writes ``result.json``. Finished runs are kept:
re-running the grid only computes what is missing or what changed.

Layout of ``out``::

    out/experiment.json                        the grid's configuration
    out/data/                                  phantoms (when no sites are given)
    out/settings/<setting>/                    the setting's site configs and datalists
    out/runs/<setting>/<method>/seed<k>/       result.json (+ the run's FLARE workspace or model)
    out/report/                                report.md, results.csv, summary.json, *.png
"""

from __future__ import annotations

import json
import math
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fedgin.flare.local_norm import LOCAL_NORM_FILE, site_model
from fedgin.seg.evaluation import evaluate_model
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.files import write_json
from fedgin.tools.job_folder import job_training_config
from fedgin.tools.study.experiment.grid import ExperimentConfig, Run
from fedgin.tools.study.experiment.sites import SettingSites, prepare_setting

MODALITY_NAMES = {"CT": "CT", "MR": "MRI"}


def phantom_sites(config: ExperimentConfig, out_dir: Path) -> dict[str, Path]:
    """Generate (or reuse) the grid's phantom sites: one CT and one MRI site."""
    from fedgin.tools.data.phantoms import generate_phantom_dataset
    from fedgin.tools.data.phantoms.dataset import default_site_specs

    specs = []
    for spec in default_site_specs(config.task):
        n_train, n_val, n_test = config.phantom_cases[spec.modality]
        specs.append(spec.with_counts(n_train, n_val, n_test).scaled(config.phantom_size))
    marker = out_dir / "phantom_dataset.json"
    wanted = json.dumps([repr(s) for s in specs])
    stamp = out_dir / "specs.json"
    if marker.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return {s.name: out_dir / s.name / "site_config.json" for s in specs}
    configs = generate_phantom_dataset(config.task, out_dir, seed=0, sites=specs, num_workers=2)
    stamp.write_text(wanted)
    return configs


def _overrides(config: ExperimentConfig, run: Run) -> dict:
    overrides = json.loads(json.dumps(config.training))
    overrides.update(
        seed=run.seed,
        local_epochs=config.local_epochs,
        augmentation="none" if run.augmentation == "local_norm" else run.augmentation,
        local_norm=run.augmentation == "local_norm",
        partial_labels="background" if run.method.endswith("_background") else "marginal",
    )
    return overrides


def _job_dir(jobs_dir: Path, config: ExperimentConfig, run: Run) -> Path:
    # Both jobs differ only in GIN, which the overrides set: the method decides the job's name.
    return jobs_dir / (f"fedgin_{config.task}" if run.gin else f"fedavg_{config.task}")


def _score(model: Path | Mapping[str, Path], job: Path, sites: SettingSites) -> dict:
    """Dice per organ per test modality, pooled over the volumes of that modality's sites.

    ``model`` is one model for every site, or site name -> that site's model (domain-specific norm).
    """
    config = job_training_config(job)
    per_modality: dict[str, list] = {}
    for name, path in sites.evaluate.items():
        site_model = model[name] if isinstance(model, Mapping) else model
        result = evaluate_model(site_model, path, split="test", config=config)
        per_modality.setdefault(MODALITY_NAMES[sites.modality[name]], []).extend(result["per_volume"])
    dice, mean, n_volumes = {}, {}, {}
    for modality, rows in per_modality.items():
        table = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)
        organs = {}
        for i, organ in enumerate(config.organs):
            col = table[:, i]
            if np.isfinite(col).any():
                organs[organ] = float(np.nanmean(col))
        dice[modality] = organs
        mean[modality] = float(np.mean(list(organs.values()))) if organs else None
        n_volumes[modality] = len(rows)
    return {"dice": dice, "mean_dice": mean, "n_volumes": n_volumes}


def _train_federated(run: Run, config: ExperimentConfig, sites: SettingSites, jobs_dir: Path, out: Path, echo):
    from fedgin.tools.federation.simulation import simulate

    result = simulate(
        _job_dir(jobs_dir, config, run),
        sites.train,
        out / "fl",
        num_rounds=config.rounds,
        executor_overrides=_overrides(config, run),
        evaluate_split=None,
        echo=echo,
    )
    progress = json.loads((result.workspace / "results" / "progress.json").read_text())
    job = out / "fl" / "job" / _job_dir(jobs_dir, config, run).name
    if run.augmentation != "local_norm":
        return result.global_model, job, progress
    # Domain-specific norm: each site is scored with the global model and its own norm weights;
    # a site that did not train (zero-MRI labels) would have none, but local_norm runs always train.
    models = {}
    for name in sites.evaluate:
        norms = result.workspace / "simulate" / name / "simulate_job" / LOCAL_NORM_FILE
        if not norms.is_file():
            raise FileNotFoundError(f"{run.name}: site {name} left no {LOCAL_NORM_FILE} ({norms})")
        models[name] = site_model(result.global_model, norms, out / f"site_model_{name}.pt")
    return models, job, progress


def _train_pooled(run: Run, config: ExperimentConfig, sites: SettingSites, jobs_dir: Path, out: Path, echo):
    from fedgin.tools.study.local_training import site_label, train_local

    job = build_job(_job_dir(jobs_dir, config, run), out / "job", executor_overrides=_overrides(config, run))
    modality = {"local_ct": "CT", "local_ct_gin": "CT", "local_mri": "MR"}.get(run.method)
    names = sites.by_modality(modality) if modality else list(sites.train)
    train_sites = [sites.train[n] for n in names if n in sites.train]
    if not train_sites:
        raise ValueError(f"{run.name}: no site trains in this setting")
    train_local(
        job,
        train_sites,
        out,
        epochs=config.rounds * config.local_epochs,
        evaluate_split=None,
        echo=(lambda line: echo(line)) if echo else None,
    )
    if run.augmentation != "local_norm":
        return out / "model.pt", job, []
    # Domain-specific norm (DSBN): each site is scored with the shared weights and its own norms.
    untrained = sorted(set(sites.evaluate) - set(sites.train))
    if untrained:
        raise ValueError(f"{run.name}: sites {untrained} did not train, so they have no norm weights of their own")
    models = {name: out / f"model_{site_label(sites.train[name])}.pt" for name in sites.evaluate}
    return models, job, []


def _steps(run: Run, out: Path, progress: list[dict]) -> int:
    """Optimizer steps of the run, summed over sites (federated) or from the local run's stats."""
    if run.federated:
        return sum(int(p["steps"]) for p in progress)
    stats = out / "train_stats.json"
    return int(json.loads(stats.read_text())["steps"]) if stats.is_file() else 0


def execute_run(
    run: Run,
    config: ExperimentConfig,
    sites: SettingSites,
    jobs_dir: Path,
    out: Path,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Train and score one run; writes ``out/result.json`` and returns it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.time()
    train = _train_federated if run.federated else _train_pooled
    model, job, progress = train(run, config, sites, jobs_dir, out, echo)
    train_s = time.time() - start
    result = {
        "setting": run.setting,
        "method": run.method,
        "seed": run.seed,
        "fingerprint": config.fingerprint(run),
        "train_s": train_s,
        "augmentation": run.augmentation,
        "steps": _steps(run, out, progress),
        "n_train_cases": {MODALITY_NAMES[sites.modality[n]]: 0 for n in sites.modality},
        **_score(model, job, sites),
        "progress": progress,
    }
    for name, n in sites.n_train.items():
        result["n_train_cases"][MODALITY_NAMES[sites.modality[name]]] += n
    result["wall_s"] = time.time() - start
    write_json(out / "result.json", result)
    return result


def run_grid(
    config: ExperimentConfig,
    out_dir: str | Path,
    jobs_dir: str | Path,
    sites: Mapping[str, str | Path] | None = None,
    echo: Callable[[str], None] | None = print,
    verbose: bool = False,
) -> dict:
    """Run every missing run of the grid and write the report.

    Args:
        config: the grid.
        out_dir: output folder (see the module docstring); re-running reuses finished runs.
        jobs_dir: the ``jobs/`` folder with ``fedgin_<task>`` and ``fedavg_<task>``.
        sites: site name -> site config with all the site's data (default: phantoms made here).
        echo: where progress lines go.
        verbose: also show each run's per-round lines.

    Returns:
        ``{"results": [...], "failed": {run name: error}, "report": report folder}``.
    """
    from fedgin.tools.study.experiment.report import write_report

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", config.to_dict())
    base = {k: Path(v).resolve() for k, v in sites.items()} if sites else phantom_sites(config, out / "data")
    settings = {
        s: prepare_setting(s, base, out / "settings" / s, tuple(config.partial_organs)) for s in config.settings()
    }
    runs = config.runs()
    results, failed = [], {}
    start = time.time()
    fresh = 0
    for i, run in enumerate(runs, start=1):
        run_dir = out / "runs" / run.setting / run.method / f"seed{run.seed}"
        done = run_dir / "result.json"
        if done.is_file():
            previous = json.loads(done.read_text())
            if previous.get("fingerprint") == config.fingerprint(run):
                results.append(previous)
                if echo:
                    echo(f"[{i}/{len(runs)}] {run.name}: done earlier, reused")
                continue
        if echo:
            echo(f"[{i}/{len(runs)}] {run.name}: training ...")
        inner = (lambda line: echo(f"    {line}")) if (echo and verbose) else None
        try:
            result = execute_run(run, config, settings[run.setting], Path(jobs_dir), run_dir, inner)
        except Exception as e:  # one failed run must not lose the others: report it and go on
            failed[run.name] = f"{type(e).__name__}: {e}"
            (run_dir / "error.txt").write_text(traceback.format_exc())
            if echo:
                echo(f"[{i}/{len(runs)}] {run.name}: FAILED ({failed[run.name]}); see {run_dir / 'error.txt'}")
            continue
        results.append(result)
        fresh += 1
        if echo:
            elapsed = time.time() - start
            left = len(runs) - i
            scores = ", ".join(f"{m} {v:.3f}" for m, v in result["mean_dice"].items() if v is not None)
            echo(
                f"[{i}/{len(runs)}] {run.name}: {result['wall_s']:.0f} s, mean Dice {scores}"
                f" (elapsed {elapsed / 60:.1f} min, ~{elapsed / fresh * left / 60:.0f} min left)"
            )
    report = write_report(config, results, failed, out / "report")
    if echo:
        echo(f"Report: {report / 'report.md'} ({len(results)} runs, {len(failed)} failed, {time.time() - start:.0f} s)")
    return {"results": results, "failed": failed, "report": report}
