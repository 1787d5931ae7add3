"""Commands that work with startup kits: ``provision`` writes them, ``site-policy`` writes a participant's
own rules into its kit, ``admin`` drives jobs with an admin's kit; each command's parser (``add_*``)
beside its handler (``cmd_*``)."""

from __future__ import annotations

from fedgin.tools.cli_options import gin_flags, training_overrides
from fedgin.tools.federation.commands import he_flag, installed_code_flag


def cmd_provision(args) -> int:
    from fedgin.tools.federation.provisioning import DEFAULT_PROJECT, provision

    kits = provision(
        args.out,
        args.project or DEFAULT_PROJECT,
        he=args.he,
        docker_image=args.docker_image,
        docker_gpus=args.docker_gpus,
    )
    print(f"startup kits written to {kits}:")
    for kit in sorted(p.name for p in kits.iterdir() if p.is_dir()):
        print(f"  {kit}")
    print("Give each participant its own kit; see poc/README.md (site operators).")
    if args.docker_image:
        print(f"Every kit runs from the image {args.docker_image} (docker build -t {args.docker_image} .): ")
        print("a site runs `docker compose up -d` in its kit after `site-config KIT CONFIG --container`.")
    return 0


def add_provision(sub) -> None:
    p = sub.add_parser("provision", help="startup kits (mTLS) for a real federation, from poc/project.yml")
    p.add_argument("--out", required=True, help="folder for the kits, outside the repository")
    p.add_argument("--project", default=None, help="project.yml (default: poc/project.yml)")
    p.add_argument("--he", action="store_true", help="add FLARE's HEBuilder: HE contexts in every kit")
    p.add_argument(
        "--docker-image",
        default=None,
        metavar="IMAGE",
        help="add FLARE's DockerBuilder: compose files that run every participant from IMAGE (the Dockerfile's)",
    )
    p.add_argument("--docker-gpus", action="store_true", help="with --docker-image: the services ask for the GPUs")
    p.set_defaults(func=cmd_provision)


def cmd_site_config(args) -> int:
    from fedgin.tools.federation.provisioning import install_site_config

    target = install_site_config(args.kit, args.site_config, container=args.container)
    print(f"site config written to {target}")
    if args.container:
        print(f"data folder named in {args.kit}/.env (FEDGIN_DATA), mounted read-only at /data")
    return 0


def add_site_config(sub) -> None:
    p = sub.add_parser("site-config", help="a site config into a site's kit (local/fedgin_site.json)")
    p.add_argument("kit", help="the site's startup kit folder")
    p.add_argument("site_config", help="the site config (site_configs/README.md); its paths are made absolute")
    p.add_argument(
        "--container", action="store_true", help="the kit runs in fedgin's image: data at /data, named in .env"
    )
    p.set_defaults(func=cmd_site_config)


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


def add_site_policy(sub) -> None:
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
            executor_overrides=training_overrides(args),
            timeout=args.timeout,
            he=args.he,
            installed_code=args.installed_code,
        )
    elif args.admin_command == "stage":
        overrides = training_overrides(args)
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


def add_admin(sub) -> None:
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
            gin_flags(q)
            he_flag(q)
            installed_code_flag(q)
        if name in ("download", "abort"):
            q.add_argument("job_id")
        if name in ("run", "download"):
            q.add_argument("--out", default="admin_results")
        if name == "run":
            q.add_argument("--timeout", type=float, default=0, help="seconds (0: wait as long as it takes)")
    p.set_defaults(func=cmd_admin)
