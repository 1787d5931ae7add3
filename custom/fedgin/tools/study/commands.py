"""Commands for studies: ``demo``, ``train`` (outside FLARE: local-only or centralized baselines) and
``experiment`` (the FedGIN study); each command's parser (``add_*``) beside its handler (``cmd_*``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedgin.tools.cli_options import TASKS, gin_flags, parse_sites, training_overrides
from fedgin.tools.job_folder import find_jobs_dir
from fedgin.tools.study.experiment.grid import METHODS

# The phantoms' CT is 96 x 96 in-plane: training at the job's 192 x 192 (chosen for real scans)
# would cost four times the CPU time for no gain, so the demo trains at the phantoms' own size.
DEMO_OVERRIDES = {"spatial_size": [96, 96]}


def cmd_demo(args) -> int:
    from fedgin.tools.data.phantoms import generate_phantom_dataset
    from fedgin.tools.federation.simulation import print_result, simulate

    ws = Path(args.workspace).resolve()
    job = find_jobs_dir() / (f"fedgin_{args.task}" if args.gin else f"fedavg_{args.task}")
    print(f"fedgin demo: {job.name} on synthetic {args.task} phantoms (site-ct: CT, site-mri: MRI with few labels)")
    start = time.time()
    sites = generate_phantom_dataset(args.task, ws / "data", seed=args.seed, num_workers=2)
    print(f"Phantoms generated in {time.time() - start:.0f} s under {ws / 'data'}")
    result = simulate(
        job,
        {k: str(v) for k, v in sites.items()},
        ws,
        num_rounds=args.rounds,
        threads=args.threads,
        executor_overrides=DEMO_OVERRIDES,
    )
    print_result(result)
    print(f"Demo finished in {time.time() - start:.0f} s.")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="phantoms + the FLARE simulator + a Dice table, no data needed")
    p.add_argument("--workspace", default="workspace/demo", help="output folder (default: %(default)s)")
    p.add_argument("--task", choices=TASKS, default="abdomen")
    # 20 rounds: the budget the defaults were chosen at on real scans, and a demo of ~3 minutes here.
    p.add_argument("--rounds", type=int, default=20, help="FL rounds (default: %(default)s)")
    p.add_argument("--no-gin", dest="gin", action="store_false", help="run the FedAvg job without GIN")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    p.add_argument("--threads", type=int, default=None, help="sites trained in parallel (default: all)")
    p.set_defaults(func=cmd_demo, gin=True)


def cmd_train(args) -> int:
    from fedgin.tools.study.local_training import train_local

    job = args.job
    overrides = training_overrides(args)
    if overrides:  # the job's settings with the command line's changes, kept next to the results
        from fedgin.tools.federation.jobs import build_job

        job = build_job(args.job, Path(args.out) / "job", executor_overrides=overrides)
    result = train_local(
        job,
        args.site_config,
        args.out,
        epochs=args.epochs,
        evaluate_split=args.split,
        eval_site_configs=args.eval_site_config,
    )
    print(json.dumps({k: v["mean_dice"] for k, v in result.items()}, indent=2))
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train outside FLARE on one or more sites' data pooled (local/centralized)")
    p.add_argument("job", help="job folder whose training settings are used")
    p.add_argument("--site-config", action="append", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--eval-site-config", action="append", default=None, help="sites scored (default: trained ones)")
    p.add_argument("--split", default="test")
    gin_flags(p)
    p.set_defaults(func=cmd_train)


def experiment_config(args):
    """The grid from the command line: the full study or ``--quick``, with overrides."""
    from fedgin.tools.study.experiment import ExperimentConfig

    config = ExperimentConfig.quick(args.task) if args.quick else ExperimentConfig(task=args.task)
    training = dict(config.training)
    partial = args.partial_organs
    if args.spatial_size:
        training["spatial_size"] = [args.spatial_size, args.spatial_size]
    return config.with_overrides(
        seeds=tuple(range(args.seeds)) if args.seeds else None,
        ratios=tuple(int(k) for k in args.ratios.split(",")) if args.ratios else None,
        rounds=args.rounds,
        methods=tuple(m for m in args.methods.split(",") if m) if args.methods else None,
        zero_mri=False if args.no_zero_mri else None,
        partial_organs=tuple(o for o in partial.split(",") if o) if partial is not None else None,
        partial_methods=tuple(m for m in args.partial_methods.split(",") if m) if args.partial_methods else None,
        training=training,
        augmentations=tuple(a for a in args.augmentations.split(",") if a) if args.augmentations else None,
        augmentation_ratio=args.augmentation_ratio,
    )


def cmd_experiment(args) -> int:
    from fedgin.tools.study.experiment import run_grid

    config = experiment_config(args)
    sites = parse_sites(args.site) if args.site else None
    runs = config.runs()
    print(f"FedGIN study on {args.task}: {len(runs)} runs ({len(config.seeds)} seed(s)) into {args.out}")
    outcome = run_grid(config, args.out, find_jobs_dir(), sites=sites, verbose=args.verbose)
    print()
    print((outcome["report"] / "report.md").read_text())
    return 1 if outcome["failed"] else 0


def add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="the FedGIN study: local, centralized, FedAvg, FedGIN over seeds + report")
    p.add_argument("--task", choices=TASKS, default="abdomen")
    p.add_argument("--out", default="workspace/experiment", help="output folder; re-runs reuse finished runs")
    p.add_argument(
        "--site",
        action="append",
        default=None,
        metavar="NAME=SITE_CONFIG",
        help="your sites (at least one CT and one MR); default: phantoms",
    )
    p.add_argument("--quick", action="store_true", help="every method and setting once, small (~10 min)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1; default 3, quick 1)")
    p.add_argument("--ratios", default=None, help="MRI:CT ratios 1:k as k, comma-separated (default 1,2,5)")
    p.add_argument("--rounds", type=int, default=None, help="FL rounds = epochs of centralized/local runs")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--no-zero-mri", action="store_true", help="skip the zero-MRI-labels setting")
    p.add_argument(
        "--partial-organs",
        default=None,
        help="organs MRI sites lack in the partial-labels setting (default pancreas,gallbladder; '' skips)",
    )
    p.add_argument(
        "--partial-methods",
        default=None,
        help="methods of the partial-labels setting (default fedgin_marginal,fedgin_background,"
        "fedavg_marginal,fedavg_background)",
    )
    p.add_argument("--spatial-size", type=int, default=None, help="training slice size (default 64, quick 48)")
    p.add_argument(
        "--augmentations",
        default=None,
        help="compare these families with none and GIN (centralized, FedAvg): randconv,amplitude,gin_ipa,local_norm",
    )
    p.add_argument("--augmentation-ratio", type=int, default=None, help="MRI:CT 1:k of that comparison (default 2)")
    p.add_argument("--verbose", action="store_true", help="show every run's per-round lines")
    p.set_defaults(func=cmd_experiment)
