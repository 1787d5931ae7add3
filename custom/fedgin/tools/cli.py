"""Command line of fedgin: ``python -m fedgin COMMAND [options]``; ``python -m fedgin COMMAND -h`` for one command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fedgin.tools.assignments import parse_assignment
from fedgin.tools.data.datasets.commands import add_parser as add_prepare_parser
from fedgin.tools.job_folder import find_jobs_dir
from fedgin.tools.study.experiment.grid import METHODS

TASKS = ("abdomen", "heart")
# The phantoms' CT is 96 x 96 in-plane: training at the job's 192 x 192 (chosen for real scans)
# would cost four times the CPU time for no gain, so the demo trains at the phantoms' own size.
DEMO_OVERRIDES = {"spatial_size": [96, 96]}


def _parse_sites(values: list[str]) -> dict[str, str]:
    sites = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--site expects NAME=SITE_CONFIG.json, got {value!r}")
        if name in sites:
            raise SystemExit(f"site {name!r} given twice")
        sites[name] = path
    return sites


def _training_overrides(args) -> dict | None:
    """The job's executor args changed on the command line: ``--gin/--no-gin`` and ``--set K=V``."""
    overrides = {}
    for item in getattr(args, "set", None) or []:
        try:
            key, value = parse_assignment(item)
        except ValueError:
            raise SystemExit(f"--set expects KEY=VALUE (VALUE in JSON, or a plain string), got {item!r}") from None
        overrides[key] = value
    if args.gin is not None:  # shorthand for --set augmentation=gin|none
        chosen = "gin" if args.gin else "none"
        if overrides.setdefault("augmentation", chosen) != chosen:
            flag = "--gin" if args.gin else "--no-gin"
            raise SystemExit(f"{flag} and --set augmentation={overrides['augmentation']} disagree")
    if overrides:
        from fedgin.seg.training import TrainConfig

        try:  # an unknown option or a bad value fails here, naming it, not inside FLARE
            TrainConfig.from_dict({"organs": ["check"], **overrides})
        except (TypeError, ValueError) as e:
            raise SystemExit(f"--set: {e}") from None
    return overrides or None


def cmd_phantoms(args) -> int:
    from fedgin.tools.data.phantoms import generate_phantom_dataset

    start = time.time()
    configs = generate_phantom_dataset(
        args.task, args.out, seed=args.seed, size=args.size, max_cases=args.max_cases, num_workers=args.workers
    )
    for name, path in configs.items():
        print(f"{name}: {path}")
    print(f"phantoms written to {args.out} in {time.time() - start:.1f} s")
    return 0


def cmd_simulate(args) -> int:
    from fedgin.tools.federation.simulation import simulate

    sites = _parse_sites(args.site)
    result = simulate(
        args.job,
        sites,
        args.workspace,
        num_rounds=args.rounds,
        executor_overrides=_training_overrides(args),
        threads=args.threads,
        evaluate_split=None if args.no_eval else args.split,
        privacy=_privacy_override(args),
        min_clients=args.min_clients,
        resume_from=args.resume_from,
        gpu=args.gpu,
        mlflow_uri=args.mlflow,
        start_round=args.start_round,
    )
    _print_result(result)
    return 0


def _privacy_override(args) -> dict | None:
    from fedgin.tools.assignments import parse_privacy_spec

    return parse_privacy_spec(args.privacy) if args.privacy else None


def _print_result(result) -> None:
    results = result.workspace / "results"
    if (results / "dice.md").is_file():
        print()
        print((results / "dice.md").read_text())
    print(f"FLARE run: {result.wall_time_s:.0f} s. Results in {results}/ (dice.json, dice.md, FL_global_model.pt,")
    print(f"cross_site_val.json); FLARE's full log: {result.workspace / 'simulator.log'}")


def cmd_demo(args) -> int:
    from fedgin.tools.data.phantoms import generate_phantom_dataset
    from fedgin.tools.federation.simulation import simulate

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
    _print_result(result)
    print(f"Demo finished in {time.time() - start:.0f} s.")
    return 0


def cmd_build_job(args) -> int:
    from fedgin.tools.federation.jobs import build_job

    out = build_job(
        args.job,
        args.out,
        num_rounds=args.rounds,
        executor_overrides=_training_overrides(args),
        gpus=args.gpus,
        he=args.he,
        installed_code=args.installed_code,
    )
    code = "no app/custom: the sites' installed fedgin" if args.installed_code else "fedgin code packed into app/custom"
    print(f"built {out} ({code}{'; encrypted aggregation' if args.he else ''})")
    return 0


def cmd_evaluate(args) -> int:
    from fedgin.seg.evaluation import evaluate_model
    from fedgin.tools.dice_table import dice_table
    from fedgin.tools.files import write_json
    from fedgin.tools.job_folder import training_config_for

    config = training_config_for(args.model, args.job)
    result = evaluate_model(args.model, args.site_config, config, split=args.split)
    if not result["n_volumes"]:
        raise ValueError(f"{args.site_config}: its {args.split!r} split lists no volumes; there is nothing to evaluate")
    name = Path(args.site_config).stem
    print(dice_table({name: result}, title=f"Dice on {name} ({args.split} split)"))
    if args.out:
        write_json(args.out, result)
        print(f"written to {args.out}")
    return 0


def cmd_decrypt_model(args) -> int:
    from fedgin.tools.federation.he import decrypt_job_model, encrypted_layers

    layers = encrypted_layers(args.model)
    if not layers:
        raise ValueError(f"{args.model} holds no encrypted layer: it is a plain model already")
    out = decrypt_job_model(args.model, args.context, args.out, args.job)
    print(f"decrypted {len(layers)} layers of {args.model} into {out}")
    return 0


def cmd_train(args) -> int:
    from fedgin.tools.study.local_training import train_local

    job = args.job
    overrides = _training_overrides(args)
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
    sites = _parse_sites(args.site) if args.site else None
    runs = config.runs()
    print(f"FedGIN study on {args.task}: {len(runs)} runs ({len(config.seeds)} seed(s)) into {args.out}")
    outcome = run_grid(config, args.out, find_jobs_dir(), sites=sites, verbose=args.verbose)
    print()
    print((outcome["report"] / "report.md").read_text())
    return 1 if outcome["failed"] else 0


def cmd_poc(args) -> int:
    from fedgin.tools.federation import poc

    ws = poc.PocWorkspace.at(args.workspace)
    if args.poc_command == "run":
        poc.run_poc(
            args.job,
            _parse_sites(args.site),
            ws.root,
            num_rounds=args.rounds,
            executor_overrides=_training_overrides(args),
            timeout_s=args.timeout,
            he=args.he,
        )
    elif args.poc_command == "prepare":
        poc.prepare(ws, _parse_sites(args.site), he=args.he)
        print(f"POC workspace ready at {ws.root} (sites: {', '.join(ws.sites())}{'; HE contexts' if ws.he else ''})")
    elif args.poc_command == "start":
        poc.start(ws)
        print("server and clients started")
    elif args.poc_command == "submit":
        print(poc.submit(ws, args.job, args.rounds, _training_overrides(args), he=args.he))
    elif args.poc_command == "status":
        meta = poc.follow(ws, args.job_id, timeout=args.timeout) if args.wait else poc.status(ws, args.job_id)
        print(meta.get("status"))
    elif args.poc_command == "download":
        print(poc.download(ws, args.job_id, args.out))
    elif args.poc_command == "stop":
        poc.stop(ws)
        print("POC system stopped")
    return 0


def cmd_provision(args) -> int:
    from fedgin.tools.federation.provisioning import DEFAULT_PROJECT, provision

    kits = provision(args.out, args.project or DEFAULT_PROJECT, he=args.he)
    print(f"startup kits written to {kits}:")
    for kit in sorted(p.name for p in kits.iterdir() if p.is_dir()):
        print(f"  {kit}")
    print("Give each participant its own kit; see poc/README.md (site operators).")
    return 0


def cmd_site_policy(args) -> int:
    from fedgin.tools.federation import site_policy

    steps = [
        (args.refuse_byoc, site_policy.refuse_byoc, ()),
        (args.allow_installed_fedgin, site_policy.allow_installed_fedgin, ()),
        (args.privacy, site_policy.require_privacy_scope, (args.privacy,)),
        (args.storage, site_policy.keep_server_storage, (args.storage,)),
        (args.log_tls_failures, site_policy.log_tls_failures, ()),
    ]
    if not any(wanted for wanted, _, _ in steps):
        raise ValueError(
            "nothing to do: give --refuse-byoc, --allow-installed-fedgin, --privacy, --storage or --log-tls-failures"
        )
    for wanted, step, extra in steps:
        if wanted:
            print(f"{step.__name__}: wrote {step(args.kit, *extra)}")
    print("Restart the participant for authorization.json, privacy.json and log_config.json to take effect.")
    if args.log_tls_failures:
        print("Start it with PYTHONASYNCIODEBUG=1 in its environment: asyncio logs TLS failures only then.")
    return 0


def cmd_admin(args) -> int:
    from fedgin.tools.federation import admin

    kit = args.admin_kit
    if args.admin_command == "run":
        admin.run_job(
            kit,
            args.job,
            args.out,
            num_rounds=args.rounds,
            min_clients=args.min_clients,
            executor_overrides=_training_overrides(args),
            timeout=args.timeout,
            he=args.he,
            installed_code=args.installed_code,
        )
    elif args.admin_command == "stage":
        overrides = _training_overrides(args)
        name = admin.stage(kit, args.job, args.rounds, args.min_clients, overrides, args.he, args.installed_code)
        print(f"staged in {kit}/transfer/{name}: in the admin console run `submit_job {name}`")
    elif args.admin_command == "list":
        for job in admin.list_jobs(kit):
            print(f"{job.get('job_id')}  {job.get('status', ''):24}  {job.get('name', job.get('job_name', ''))}")
    elif args.admin_command == "download":
        print(admin.download(kit, args.job_id, args.out))
    elif args.admin_command == "abort":
        admin.abort(kit, args.job_id)
        print(f"abort requested for {args.job_id}")
    return 0


def cmd_predict(args) -> int:
    from fedgin.tools.job_folder import training_config_for
    from fedgin.tools.trained_model.predict import find_inputs, predict, volume_table

    config = training_config_for(args.model, args.job)
    inputs = find_inputs(args.input, args.modality, args.split)
    print(f"Segmenting {len(inputs.images)} {inputs.modality} scan(s) with {args.model} ({', '.join(config.organs)})")
    result = predict(args.model, config, inputs, args.out, preview=args.preview, device=args.device)
    print(volume_table(result), end="")
    print(f"masks, labels.json and predictions.json in {args.out}")
    return 0


def cmd_export(args) -> int:
    from fedgin.tools.job_folder import job_identity, training_config_for
    from fedgin.tools.trained_model.bundle import export_bundle
    from fedgin.tools.trained_model.predict import model_kind

    config = training_config_for(args.model, args.job)
    name, rounds = job_identity(args.model, args.job)
    trained_on = [m.strip() for m in args.trained_on.split(",") if m.strip()]
    out = export_bundle(
        args.model,
        config,
        args.out,
        args.modality,
        trained_on,
        name,
        rounds if args.round is None else args.round,
        model_kind(args.model),
    )
    print(f"MONAI bundle in {out}; run it with:")
    print(
        f"  python -m monai.bundle run --config_file {out}/configs/inference.json --bundle_root {out} "
        "--input_dir SCANS --output_dir MASKS"
    )
    return 0


def cmd_write_jobs(args) -> int:
    from fedgin.flare.job_definitions import export_jobs

    out = Path(args.out) if args.out else find_jobs_dir()
    for job in export_jobs(out, args.name or None):
        print(f"wrote {job}")
    return 0


def _gin_flags(p) -> None:
    """--gin/--no-gin and --set KEY=VALUE: the training options a command may change."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gin", dest="gin", action="store_true", default=None, help="GIN augmentation on")
    g.add_argument("--no-gin", dest="gin", action="store_false", help="GIN augmentation off")
    p.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="change one of the job's training options (executor args), VALUE in JSON: e.g. "
        "--set augmentation=randconv --set local_norm=true --set lr=1e-3",
    )


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="phantoms + the FLARE simulator + a Dice table, no data needed")
    p.add_argument("--workspace", default="workspace/demo", help="output folder (default: %(default)s)")
    p.add_argument("--task", choices=TASKS, default="abdomen")
    # 20 rounds: the budget the defaults were chosen at on real scans, and a demo of ~3 minutes here.
    p.add_argument("--rounds", type=int, default=20, help="FL rounds (default: %(default)s)")
    p.add_argument("--no-gin", dest="gin", action="store_false", help="run the FedAvg job without GIN")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    p.add_argument("--threads", type=int, default=None, help="sites trained in parallel (default: all)")
    p.set_defaults(func=cmd_demo, gin=True)


def _add_phantoms_parser(sub) -> None:
    p = sub.add_parser("phantoms", help="write a synthetic CT/MRI phantom dataset with site configs")
    p.add_argument("--task", choices=TASKS, default="abdomen")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=float, default=1.0, help="grid scale per axis (0.5: half the voxels per axis)")
    p.add_argument("--max-cases", type=int, default=None, help="at most this many cases per split")
    p.add_argument("--workers", type=int, default=2, help="processes writing cases")
    p.set_defaults(func=cmd_phantoms)


def _add_simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a job in the FLARE simulator on your sites")
    p.add_argument("job", help="a job folder, e.g. jobs/fedgin_abdomen")
    p.add_argument("--site", action="append", required=True, metavar="NAME=SITE_CONFIG", help="repeat per site")
    p.add_argument("--workspace", default="workspace/simulate")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--split", default="test", help="split scored with the final model (default: test)")
    p.add_argument("--no-eval", action="store_true", help="skip scoring the final model")
    p.add_argument(
        "--privacy",
        default=None,
        metavar="KIND[,NAME=VALUE...]",
        help="the sites' filter of train results instead of the job's: e.g. gaussian,noise_multiplier=1,clip_norm=0.1"
        " (also percentile, svt, none; see poc/README.md)",
    )
    p.add_argument("--min-clients", type=int, default=None, help="results a round needs (default: all sites)")
    p.add_argument(
        "--resume-from", default=None, metavar="FL_global_model.pt", help="start from a saved global model (resume)"
    )
    p.add_argument(
        "--start-round", type=int, default=None, help="first round number when resuming (the rounds already done)"
    )
    p.add_argument("--gpu", default=None, help="GPU ids for the sites, FLARE's -gpu (e.g. 0,1: one site per GPU)")
    p.add_argument("--mlflow", default=None, metavar="TRACKING_URI", help="also log the sites' figures to MLflow")
    _gin_flags(p)
    p.set_defaults(func=cmd_simulate)


def _add_poc_parser(sub) -> None:
    p = sub.add_parser("poc", help="run jobs in FLARE's POC mode (real processes on this machine)")
    poc_sub = p.add_subparsers(dest="poc_command", required=True)
    ws_help = "POC folder, outside the repository (default: $TMPDIR/fedgin_poc)"
    for name, helptext in (
        ("run", "prepare, start, submit, follow, download, print Dice, stop"),
        ("prepare", "a POC workspace with these sites and their configs in local/"),
        ("start", "start server and clients"),
        ("submit", "build and submit a job; prints its id"),
        ("status", "a job's status (--wait: follow it to the end)"),
        ("download", "download a job's results"),
        ("stop", "stop server and clients"),
    ):
        q = poc_sub.add_parser(name, help=helptext)
        q.add_argument("--workspace", default=None, help=ws_help)
        if name in ("run", "submit"):
            q.add_argument("job", help="a job folder, e.g. jobs/fedgin_abdomen")
            q.add_argument("--rounds", type=int, default=None)
            _gin_flags(q)
        if name in ("run", "prepare", "submit"):
            _he_flag(q, default=None if name == "submit" else False)
        if name in ("run", "prepare"):
            q.add_argument("--site", action="append", required=True, metavar="NAME=SITE_CONFIG")
        if name in ("status", "download"):
            q.add_argument("job_id")
        if name in ("run", "status"):
            q.add_argument("--timeout", type=float, default=3600)
        if name == "status":
            q.add_argument("--wait", action="store_true")
        if name == "download":
            q.add_argument("--out", required=True)
    p.set_defaults(func=cmd_poc)


def _add_provision_parser(sub) -> None:
    p = sub.add_parser("provision", help="startup kits (mTLS) for a real federation, from poc/project.yml")
    p.add_argument("--out", required=True, help="folder for the kits, outside the repository")
    p.add_argument("--project", default=None, help="project.yml (default: poc/project.yml)")
    p.add_argument("--he", action="store_true", help="add FLARE's HEBuilder: HE contexts in every kit")
    p.set_defaults(func=cmd_provision)


def _add_site_policy_parser(sub) -> None:
    p = sub.add_parser("site-policy", help="a participant's own rules in its kit's local/ (BYOC, classes, privacy)")
    p.add_argument("kit", help="the participant's startup kit folder (a site's, or the server's)")
    p.add_argument("--refuse-byoc", action="store_true", help="run no code that comes with a job (any submitter)")
    p.add_argument(
        "--allow-installed-fedgin", action="store_true", help="allow fedgin's classes for jobs built --installed-code"
    )
    p.add_argument("--privacy", default=None, help="privacy.json (e.g. poc/privacy.json): filters every job gets")
    p.add_argument("--storage", default=None, help="server only: keep the job store and snapshots in this folder")
    p.add_argument(
        "--log-tls-failures",
        action="store_true",
        help="log why a TLS handshake failed (needs PYTHONASYNCIODEBUG=1 when the participant starts)",
    )
    p.set_defaults(func=cmd_site_policy)


def _add_admin_parser(sub) -> None:
    p = sub.add_parser("admin", help="submit, follow, download, list and abort jobs with an admin startup kit")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    for name, helptext in (
        ("run", "stage, submit, follow, download, print the cross-site Dice table"),
        ("stage", "build a job into the kit's transfer/ folder for the console's submit_job"),
        ("list", "list jobs"),
        ("download", "download a job's results"),
        ("abort", "abort a job"),
    ):
        q = admin_sub.add_parser(name, help=helptext)
        q.add_argument("--admin-kit", required=True, help="the admin's startup kit folder (its name is the admin)")
        if name in ("run", "stage"):
            q.add_argument("job")
            q.add_argument("--rounds", type=int, default=None)
            q.add_argument("--min-clients", type=int, default=None)
            _gin_flags(q)
            _he_flag(q)
            _installed_code_flag(q)
        if name in ("download", "abort"):
            q.add_argument("job_id")
        if name in ("run", "download"):
            q.add_argument("--out", default="admin_results")
        if name == "run":
            q.add_argument("--timeout", type=float, default=0, help="seconds (0: wait as long as it takes)")
    p.set_defaults(func=cmd_admin)


def _add_build_job_parser(sub) -> None:
    p = sub.add_parser("build-job", help="pack the fedgin code into a job for submission")
    p.add_argument("job")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--gpus", type=int, default=None, help="GPUs each site reserves for the job (default: 0)")
    _gin_flags(p)
    _he_flag(p)
    _installed_code_flag(p)
    p.set_defaults(func=cmd_build_job)


def _installed_code_flag(p) -> None:
    p.add_argument(
        "--installed-code",
        action="store_true",
        help="no app/custom: for sites that refuse code sent with jobs and run an installed fedgin "
        "(they allow its classes: `python -m fedgin site-policy --allow-installed-fedgin`)",
    )


def _he_flag(p, default: bool | None = False) -> None:
    more = " (default: when the POC workspace has HE contexts)" if default is None else ""
    p.add_argument(
        "--he",
        action="store_true",
        default=default,
        help="encrypted aggregation (FLARE's TenSEAL CKKS path; poc/README.md)" + more,
    )


def _add_decrypt_model_parser(sub) -> None:
    p = sub.add_parser("decrypt-model", help="decrypt an HE job's global model with a site's key")
    p.add_argument("--model", required=True, help="the server's FL_global_model.pt of an HE job (ciphertexts)")
    p.add_argument("--context", required=True, help="a site's startup/client_context.tenseal (holds the secret key)")
    p.add_argument("--out", required=True, help="the plain checkpoint to write")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.set_defaults(func=cmd_decrypt_model)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice per organ of a model on a site's split")
    p.add_argument("--model", required=True, help="FL_global_model.pt or a state dict")
    p.add_argument("--site-config", required=True)
    p.add_argument("--split", default="test", choices=("validation", "test"))
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train outside FLARE on one or more sites' data pooled (local/centralized)")
    p.add_argument("job", help="job folder whose training settings are used")
    p.add_argument("--site-config", action="append", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--eval-site-config", action="append", default=None, help="sites scored (default: trained ones)")
    p.add_argument("--split", default="test")
    _gin_flags(p)
    p.set_defaults(func=cmd_train)


def _add_experiment_parser(sub) -> None:
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


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment new scans: one label map per input, on the input's own grid")
    p.add_argument("--model", required=True, help="FL_global_model.pt (final) or best_FL_global_model.pt")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--input", required=True, help="a NIfTI file, a folder of them, a datalist or a site config")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--modality", default=None, help="CT or MR (needed unless --input is a site config)")
    p.add_argument("--split", default="test", help="the datalist's list to segment (default: test)")
    p.add_argument("--preview", action="store_true", help="also a PNG per file: axial slices with the mask")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the GPU when there is one)")
    p.set_defaults(func=cmd_predict)


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="a trained model as a MONAI bundle that runs without fedgin")
    p.add_argument("--model", required=True, help="FL_global_model.pt (final) or best_FL_global_model.pt")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--out", required=True, help="the bundle's folder (replaced)")
    p.add_argument("--modality", required=True, help="CT or MR: the scans the bundle is for (its normalization)")
    p.add_argument("--trained-on", required=True, help="the training sites' modalities, e.g. CT,MR (no names)")
    p.add_argument("--round", type=int, default=None, help="the FL round of the model (default: the job's rounds)")
    p.set_defaults(func=cmd_export)


def _add_write_jobs_parser(sub) -> None:
    p = sub.add_parser("write-jobs", help="export fedgin's jobs (fedgin.flare.job_definitions) into jobs/")
    p.add_argument("--out", default=None, help="folder for the job folders (default: this checkout's jobs/)")
    p.add_argument("name", nargs="*", help="jobs to write (default: all)")
    p.set_defaults(func=cmd_write_jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedgin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    _add_phantoms_parser(sub)
    _add_simulate_parser(sub)
    _add_poc_parser(sub)
    _add_provision_parser(sub)
    _add_site_policy_parser(sub)
    _add_admin_parser(sub)
    _add_build_job_parser(sub)
    _add_decrypt_model_parser(sub)
    _add_evaluate_parser(sub)
    _add_train_parser(sub)
    _add_experiment_parser(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)
    _add_write_jobs_parser(sub)
    add_prepare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
