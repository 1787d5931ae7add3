"""Commands that run jobs: ``simulate``, ``poc``, ``build-job``, ``write-jobs``, ``decrypt-model``; each
command's parser (``add_*``) beside its handler (``cmd_*``). The commands that work with startup kits
(``provision``, ``site-policy``, ``admin``) are in :mod:`fedgin.tools.federation.kit_commands`."""

from __future__ import annotations

from pathlib import Path

from fedgin.tools.cli_options import gin_flags, parse_sites, training_overrides
from fedgin.tools.job_folder import find_jobs_dir


def installed_code_flag(p) -> None:
    p.add_argument(
        "--installed-code",
        action="store_true",
        help="no app/custom: for sites that refuse code sent with jobs and run an installed fedgin "
        "(they allow its classes: `python -m fedgin site-policy --allow-installed-fedgin`)",
    )


def he_flag(p, default: bool | None = False) -> None:
    more = " (default: when the POC workspace has HE contexts)" if default is None else ""
    p.add_argument(
        "--he",
        action="store_true",
        default=default,
        help="encrypted aggregation (FLARE's TenSEAL CKKS path; poc/README.md)" + more,
    )


def cmd_simulate(args) -> int:
    from fedgin.tools.federation.simulation import print_result, simulate

    sites = parse_sites(args.site)
    result = simulate(
        args.job,
        sites,
        args.workspace,
        num_rounds=args.rounds,
        executor_overrides=training_overrides(args),
        threads=args.threads,
        evaluate_split=None if args.no_eval else args.split,
        privacy=_privacy_override(args),
        min_clients=args.min_clients,
        resume_from=args.resume_from,
        gpu=args.gpu,
        mlflow_uri=args.mlflow,
        start_round=args.start_round,
    )
    print_result(result)
    return 0


def _privacy_override(args) -> dict | None:
    from fedgin.tools.assignments import parse_privacy_spec

    return parse_privacy_spec(args.privacy) if args.privacy else None


def add_simulate(sub) -> None:
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
    gin_flags(p)
    p.set_defaults(func=cmd_simulate)


def cmd_poc(args) -> int:
    from fedgin.tools.federation import poc

    ws = poc.PocWorkspace.at(args.workspace)
    if args.poc_command == "run":
        poc.run_poc(
            args.job,
            parse_sites(args.site),
            ws.root,
            num_rounds=args.rounds,
            executor_overrides=training_overrides(args),
            timeout_s=args.timeout,
            he=args.he,
        )
    elif args.poc_command == "prepare":
        poc.prepare(ws, parse_sites(args.site), he=args.he)
        print(f"POC workspace ready at {ws.root} (sites: {', '.join(ws.sites())}{'; HE contexts' if ws.he else ''})")
    elif args.poc_command == "start":
        poc.start(ws)
        print("server and clients started")
    elif args.poc_command == "submit":
        print(poc.submit(ws, args.job, args.rounds, training_overrides(args), he=args.he))
    elif args.poc_command == "status":
        meta = poc.follow(ws, args.job_id, timeout=args.timeout) if args.wait else poc.status(ws, args.job_id)
        print(meta.get("status"))
    elif args.poc_command == "download":
        print(poc.download(ws, args.job_id, args.out))
    elif args.poc_command == "stop":
        poc.stop(ws)
        print("POC system stopped")
    return 0


def add_poc(sub) -> None:
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
            gin_flags(q)
        if name in ("run", "prepare", "submit"):
            he_flag(q, default=None if name == "submit" else False)
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


def cmd_build_job(args) -> int:
    from fedgin.tools.federation.jobs import build_job

    out = build_job(
        args.job,
        args.out,
        num_rounds=args.rounds,
        executor_overrides=training_overrides(args),
        gpus=args.gpus,
        he=args.he,
        installed_code=args.installed_code,
    )
    code = "no app/custom: the sites' installed fedgin" if args.installed_code else "fedgin code packed into app/custom"
    print(f"built {out} ({code}{'; encrypted aggregation' if args.he else ''})")
    return 0


def add_build_job(sub) -> None:
    p = sub.add_parser("build-job", help="pack the fedgin code into a job for submission")
    p.add_argument("job")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--gpus", type=int, default=None, help="GPUs each site reserves for the job (default: 0)")
    gin_flags(p)
    he_flag(p)
    installed_code_flag(p)
    p.set_defaults(func=cmd_build_job)


def cmd_decrypt_model(args) -> int:
    from fedgin.tools.federation.he import decrypt_job_model, encrypted_layers

    layers = encrypted_layers(args.model)
    if not layers:
        raise ValueError(f"{args.model} holds no encrypted layer: it is a plain model already")
    out = decrypt_job_model(args.model, args.context, args.out, args.job)
    print(f"decrypted {len(layers)} layers of {args.model} into {out}")
    return 0


def add_decrypt_model(sub) -> None:
    p = sub.add_parser("decrypt-model", help="decrypt an HE job's global model with a site's key")
    p.add_argument("--model", required=True, help="the server's FL_global_model.pt of an HE job (ciphertexts)")
    p.add_argument("--context", required=True, help="a site's startup/client_context.tenseal (holds the secret key)")
    p.add_argument("--out", required=True, help="the plain checkpoint to write")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.set_defaults(func=cmd_decrypt_model)


def cmd_write_jobs(args) -> int:
    from fedgin.flare.job_definitions import export_jobs

    out = Path(args.out) if args.out else find_jobs_dir()
    for job in export_jobs(out, args.name or None):
        print(f"wrote {job}")
    return 0


def add_write_jobs(sub) -> None:
    p = sub.add_parser("write-jobs", help="export fedgin's jobs (fedgin.flare.job_definitions) into jobs/")
    p.add_argument("--out", default=None, help="folder for the job folders (default: this checkout's jobs/)")
    p.add_argument("name", nargs="*", help="jobs to write (default: all)")
    p.set_defaults(func=cmd_write_jobs)
