#!/usr/bin/env python3
"""Where does the federated path lose against centralized training? Ablations in one process.

FedAvg as the FLARE job runs it, without FLARE's processes: each site is fedgin's ``Trainer`` with
the executor's per-site seed and data, its update goes through the job's own result filter (built
from ``config_fed_client.json``), the server averages the updates weighted by local steps (FLARE's
``InTimeAccumulateWeightedAggregator``). ``tests/bench/test_fed_ablation.py`` checks that this gives
the FLARE simulator's global model, so a factor found here is a factor of the real job. Each
variant changes one thing:

    python bench/fed_ablation.py --job jobs/fedgin_abdomen --site site-ct=DEV/site-ct.json \\
        --site site-mri=DEV/site-mri.json --rounds 20 --out bench/results/fed_ablation \\
        --variant defaults --variant central:central=1 --variant nofilter:filter=0 \\
        --variant equal:weighting=equal --variant lr5e-4:lr=0.0005

A variant is ``NAME[:KEY=VALUE,...]``. Federation keys: ``central`` (1: pool every site's data in
one trainer, one epoch = one round), ``filter`` (0: no result filter), ``weighting`` (``steps``:
FLARE's default, ``equal``: every site the same weight), ``optimizer`` (``keep``: each site's
AdamW state lives on across rounds, as in the executor; ``reset``: a fresh AdamW every round),
``server_lr`` (the averaged update is scaled by it: FedOpt with plain SGD on the server; with
``weighting=equal`` and 2 sites, 2 applies the sum of the sites' updates).
Every other key is a training option (``lr=0.0005``, ``model.num_res_units=2``, ``local_steps=80``).
Writes ``OUT/results.jsonl`` (one line per finished run, kept across invocations: finished runs are
skipped) and ``OUT/report.md`` (Dice per organ of the final global model on each site's test split,
and the mean Dice of the round's global model that scored best on the validation splits).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "custom"))

from fedgin.flare.executor import site_seed  # noqa: E402
from fedgin.seg.config import TrainConfig  # noqa: E402
from fedgin.seg.data.site_data import SiteData, TrainSamples, load_site_data  # noqa: E402
from fedgin.seg.site_config import load_site_config  # noqa: E402
from fedgin.seg.training import Trainer, dice_per_volume, summarize_dice  # noqa: E402
from fedgin.tools.assignments import parse_assignment  # noqa: E402
from fedgin.tools.job_folder import CLIENT_CONFIG, SERVER_CONFIG, executor_args, read_json  # noqa: E402
from nvflare.apis.dxo import DXO, DataKind, MetaKey  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402

FEDERATION_KEYS = {"central": 0, "filter": 1, "weighting": "steps", "optimizer": "keep", "server_lr": 1.0}


def parse_variant(text: str) -> tuple[str, dict, dict]:
    """``"name:lr=0.0005,filter=0"`` -> (name, training overrides, federation options)."""
    name, _, rest = text.partition(":")
    training, federation = {}, dict(FEDERATION_KEYS)
    for item in filter(None, re.split(r",(?![^\[]*\])", rest)):  # commas inside [...] belong to a list
        key, value = parse_assignment(item)
        if key in FEDERATION_KEYS:
            federation[key] = value
            continue
        target = training
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    if federation["weighting"] not in ("steps", "equal") or federation["optimizer"] not in ("keep", "reset"):
        raise SystemExit(f"variant {text!r}: weighting is steps|equal, optimizer keep|reset")
    return name, training, federation


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def result_filters(client_config: dict) -> list:
    """The job's filters of ``train`` results, instantiated from the client config."""
    filters = []
    for entry in client_config.get("task_result_filters", []):
        if "train" not in entry.get("tasks", []):
            continue
        for spec in entry.get("filters", []):
            module, _, cls = spec["path"].rpartition(".")
            filters.append(getattr(importlib.import_module(module), cls)(**spec.get("args", {})))
    return filters


class Sites:
    """Each site's preprocessed data, loaded once per (spatial size, background share, seed)."""

    def __init__(self, configs: dict[str, str]):
        self.configs = {name: load_site_config(path) for name, path in configs.items()}
        self._cache: dict[tuple, SiteData] = {}

    def data(self, name: str, config: TrainConfig, seed: int) -> SiteData:
        key = (
            name,
            tuple(config.spatial_size),
            config.pixel_spacing,
            config.context_slices,
            config.model.spatial_dims,
            config.background_slice_fraction,
            seed,
        )
        if key not in self._cache:
            self._cache[key] = load_site_data(
                self.configs[name],
                config.organs,
                config.spatial_size,
                config.model.spatial_dims,
                splits=("training", "validation", "test"),
                background_slice_fraction=config.background_slice_fraction,
                seed=seed,
                pixel_spacing=config.pixel_spacing,
                context_slices=config.context_slices,
            )
        return self._cache[key]


def score(trainer: Trainer, data: dict[str, SiteData], split: str) -> dict:
    out = {}
    for name, site in data.items():
        volumes = site.test if split == "test" else site.validation
        out[name] = summarize_dice(dice_per_volume(trainer, volumes), trainer.config.organs, site.scored_organs)
    return out


def _fmt(scores: dict) -> str:
    return " ".join(
        f"{n} {s['mean_dice'] if s['mean_dice'] is None else round(s['mean_dice'], 3)}" for n, s in scores.items()
    )


class BestCheckpoint:
    """The global model of the round with the highest validation Dice (mean over the sites' means),
    as a site operator would pick a checkpoint. Later rounds win ties (closer to the final model)."""

    def __init__(self):
        self.round, self.val, self.weights = None, -math.inf, None
        self.curve: list[dict] = []  # every scored round's validation Dice per site and organ

    def offer(self, round_number: int, val: dict, weights: dict) -> None:
        self.curve.append({"round": round_number, **_plain(val)})
        means = [s["mean_dice"] for s in val.values() if not math.isnan(s["mean_dice"])]
        value = float(np.mean(means)) if means else -math.inf
        if value >= self.val:
            self.round, self.val = round_number, value
            self.weights = {k: np.array(v, copy=True) for k, v in weights.items()}


def run_central(config: TrainConfig, sites: Sites, rounds: int, echo) -> tuple[Trainer, dict, dict, BestCheckpoint]:
    data = {name: sites.data(name, config, config.seed) for name in sites.configs}
    trainer = Trainer(config)
    pooled = TrainSamples.concat([d.train for d in data.values()], config.num_classes)
    best = BestCheckpoint()
    start = time.time()
    for r in range(rounds):
        trainer.start_round(r, rounds)
        stats = trainer.train_epochs(pooled, epochs=1)
        val = score(trainer, data, "val")
        best.offer(r + 1, val, trainer.get_weights())
        echo(f"  epoch {r + 1}/{rounds}: loss {stats['loss']:.3f}, val {_fmt(val)} ({time.time() - start:.0f} s)")
    return trainer, data, private_epsilons({"pooled": trainer}), best


def private_epsilons(trainers: dict[str, Trainer]) -> dict:
    """DP-SGD's epsilon per patient of each trainer that trained with it."""
    return {name: t.private.epsilon() for name, t in trainers.items() if t.private is not None}


def _fedavg(global_weights: dict, updates: dict, weights: dict, server_lr: float = 1.0) -> dict:
    """Global model + weighted mean of the updates, in the operations' order of FLARE's aggregator
    (``WeightedAggregationHelper``, sites in sorted order as ``RobustAggregator`` feeds them) and
    ``FullModelShareableGenerator``: the same float32 roundings, so the same model."""
    total, count = {}, 0.0
    for name in sorted(updates):
        for k, v in updates[name].items():
            total[k] = v * weights[name] if k not in total else total[k] + v * weights[name]
        count += weights[name]
    return {k: global_weights[k] + total[k] * (server_lr / count) for k in global_weights}


def step_balancer_cap(server_config: dict) -> int | None:
    """``max_steps`` of the job's StepBalancer (fedgin.flare.step_balance), or None if it has none."""
    for component in server_config.get("components", []):
        if component.get("path") == "fedgin.flare.step_balance.StepBalancer":
            return int(component.get("args", {}).get("max_steps", 2000))
    return None


def run_federated(
    config: TrainConfig,
    federation: dict,
    filters: list,
    sites: Sites,
    rounds: int,
    echo,
    balancer: int | None = None,
    val_every: int = 1,
) -> tuple[Trainer, dict, dict, BestCheckpoint]:
    """FedAvg of weight differences, as ScatterAndGather + the executor + the job's filters do it.

    ``balancer``: the cap of the job's StepBalancer; with it (and ``match_site_steps``) every site
    trains at least as many steps as the busiest site of the last round. ``val_every``: score the
    global model on the validation splits every this many rounds (and after the last); the best of
    those global models is returned beside the final one.
    """
    trainers, data = {}, {}
    for name in sites.configs:
        site_config = copy.deepcopy(config)
        site_config.seed = site_seed(config.seed, name)
        trainers[name] = Trainer(site_config)
        data[name] = sites.data(name, config, site_config.seed)
    server = config.build_model()  # the persistor's initial model: init_seed = the job's seed
    global_weights = {k: v.detach().cpu().numpy().copy() for k, v in server.state_dict().items()}
    best = BestCheckpoint()
    start = time.time()
    target = None
    for r in range(rounds):
        updates, weights = {}, {}
        round_steps = []
        for name, trainer in trainers.items():
            if federation["optimizer"] == "reset":
                trainer.optimizer = type(trainer.optimizer)(trainer.model.parameters(), **trainer.optimizer.defaults)
            trainer.set_weights(global_weights)
            trainer.start_round(r, rounds)
            stats = trainer.train_epochs(data[name].train, min_steps=config.round_min_steps(target))
            round_steps.append(stats["steps"])
            local = trainer.get_weights()
            dxo = DXO(
                DataKind.WEIGHT_DIFF,
                {k: local[k] - global_weights[k] for k in local},
                meta={MetaKey.NUM_STEPS_CURRENT_ROUND: stats["steps"]},
            )
            if federation["filter"]:
                for f in filters:
                    dxo = f.process_dxo(dxo, dxo.to_shareable(), FLContext()) or dxo
            updates[name] = dxo.data
            weights[name] = float(stats["steps"]) if federation["weighting"] == "steps" else 1.0
        target = min(max(round_steps), balancer) if balancer else None
        global_weights = _fedavg(global_weights, updates, weights, float(federation["server_lr"]))
        server.load_state_dict({k: torch.as_tensor(v) for k, v in global_weights.items()})
        if (r + 1) % val_every and r + 1 < rounds:
            echo(f"  round {r + 1}/{rounds} ({time.time() - start:.0f} s)")
            continue
        scorer = trainers[next(iter(trainers))]
        own = scorer.get_weights()
        scorer.set_weights(global_weights)
        val = score(scorer, data, "val")
        scorer.set_weights(own)
        best.offer(r + 1, val, global_weights)
        echo(f"  round {r + 1}/{rounds}: val {_fmt(val)} ({time.time() - start:.0f} s)")
    final = Trainer(config)
    final.set_weights(global_weights)
    return final, data, private_epsilons(trainers), best


def run_variant(
    job: Path,
    sites: Sites,
    name: str,
    training: dict,
    federation: dict,
    rounds: int,
    seed: int,
    echo,
    val_every: int = 1,
):
    client = read_json(job / CLIENT_CONFIG)
    args = {k: v for k, v in executor_args(client).items() if not k.endswith("_task_name")}
    config = TrainConfig.from_dict(merge(args, {**training, "seed": seed}))
    echo = echo or (lambda line: None)
    start = time.time()
    if federation["central"]:
        trainer, data, epsilons, best = run_central(config, sites, rounds, echo)
    else:
        balancer = step_balancer_cap(read_json(job / SERVER_CONFIG))
        trainer, data, epsilons, best = run_federated(
            config, federation, result_filters(client), sites, rounds, echo, balancer, val_every
        )
    test = score(trainer, data, "test")
    final_weights = trainer.get_weights()
    trainer.set_weights(best.weights)
    test_best = score(trainer, data, "test")
    return {
        "variant": name,
        "seed": seed,
        "rounds": rounds,
        "training": training,
        "federation": federation,
        "test": _plain(test),
        # The checkpoint chosen on validation (best round), scored on the same test split.
        "best_val_round": best.round,
        "val_curve": best.curve,
        # Organs a site is scored on but never trains on (its site config's eval_labels).
        "transferred": {n: [o for o in d.scored_organs if o not in d.present_organs] for n, d in data.items()},
        "test_best_val": _plain(test_best),
        "seconds": time.time() - start,
        **({"dp_sgd_epsilon": epsilons} if epsilons else {}),
        "model": final_weights,  # the final global model (not written to results.jsonl)
        "best_val_model": best.weights,  # idem
        "config": config.to_dict(),  # its training options (idem)
    }


def _mean_range(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def write_report(results: list[dict], out: Path) -> None:
    """``report.md``: each variant's test mean Dice per site (mean over seeds, their range), of the
    final global model and of the one chosen on validation (and its round), then every run's Dice
    per organ (final model)."""
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    sites = list(results[0]["test"]) if results else []
    lines = [
        "| variant | seeds | "
        + " | ".join(f"{s} mean Dice" for s in sites)
        + " | "
        + " | ".join(f"{s}, best-validation checkpoint" for s in sites)
        + " | its rounds | minutes a run |",
        "|---|---|" + "---|" * (2 * len(sites) + 2),
    ]
    for name, runs in by_variant.items():
        cells = [_mean_range([r["test"][s]["mean_dice"] for r in runs]) for s in sites]
        best = [_mean_range([r.get("test_best_val", {}).get(s, {}).get("mean_dice") for r in runs]) for s in sites]
        rounds = ",".join(str(r["best_val_round"]) for r in runs if r.get("best_val_round")) or "-"
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells + best) + f" | {rounds} | {minutes:.1f} |")
    organs = []  # in the job's order, as the runs list them
    for key in (k for r in results for t in r["test"].values() for k in t):
        if key.startswith("dice_") and key not in organs:
            organs.append(key)
    lines += [
        "",
        "| variant | seed | site | " + " | ".join(k[5:] for k in organs) + " | mean |",
        "|---|---|---|" + "---|" * (len(organs) + 1),
    ]
    for name, runs in by_variant.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            for s in sites:
                t = r["test"][s]
                cells = ["-" if t.get(k) is None else f"{t[k]:.3f}" for k in organs + ["mean_dice"]]
                lines.append(f"| {name} | {r['seed']} | {s} | " + " | ".join(cells) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_transfer_curves(results, out)


def plot_transfer_curves(results: list[dict], out: Path) -> Path | None:
    """``transfer_curves.png``: validation Dice per round of every organ a site never trains on, one
    line per variant (mean over its seeds); None when no run has such an organ."""
    panels = sorted({(s, o) for r in results for s, organs in r.get("transferred", {}).items() for o in organs})
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (site, organ) in zip(axes[0], panels, strict=True):
        by_variant: dict[str, dict[int, list[float]]] = {}
        for r in results:
            for point in r.get("val_curve", []):
                value = point.get(site, {}).get(f"dice_{organ}")
                if value is not None:
                    by_variant.setdefault(r["variant"], {}).setdefault(point["round"], []).append(value)
        for variant, rounds in by_variant.items():
            xs = sorted(rounds)
            ax.plot(xs, [np.mean(rounds[x]) for x in xs], marker=".", label=variant)
        ax.set(title=f"{site}: {organ} (never labelled there)", xlabel="round", ylabel="validation Dice", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "transfer_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plain(scores: dict) -> dict:
    return {n: {k: (None if math.isnan(v) else v) for k, v in s.items()} for n, s in scores.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", default=str(REPO / "jobs" / "fedgin_abdomen"))
    p.add_argument("--site", action="append", required=True, metavar="NAME=SITE_CONFIG")
    p.add_argument("--variant", action="append", default=None, metavar="NAME[:KEY=VALUE,...]")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--val-every", type=int, default=1, help="score the validation splits every N rounds")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "fed_ablation"))
    p.add_argument(
        "--save-models",
        action="store_true",
        help="keep each run's final and best-validation global models in OUT/models/",
    )
    args = p.parse_args(argv)
    sites = Sites(dict(item.split("=", 1) for item in args.site))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for text in args.variant or ["defaults"]:
        name, training, federation = parse_variant(text)
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(r["variant"] == name and r["seed"] == seed and r["rounds"] == args.rounds for r in done):
                continue
            print(f"{name} seed {seed}: {training or ''} {federation}", flush=True)
            result = run_variant(
                Path(args.job),
                sites,
                name,
                training,
                federation,
                args.rounds,
                seed,
                lambda s: print(s, flush=True),
                val_every=args.val_every,
            )
            print(f"{name} seed {seed}: test {_fmt({n: s for n, s in result['test'].items()})}", flush=True)
            model, best, config = result.pop("model"), result.pop("best_val_model"), result.pop("config")
            if args.save_models:
                (out / "models").mkdir(exist_ok=True)
                for weights, suffix in ((model, ""), (best, "_best_val")):
                    state = {k: torch.as_tensor(v) for k, v in weights.items()}
                    torch.save({"model": state, "config": config}, out / "models" / f"{name}_seed{seed}{suffix}.pt")
            done.append(result)
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            write_report(done, out)
    write_report(done, out)
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
