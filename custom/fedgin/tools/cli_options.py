"""Command-line options that several rooms' commands share: the tasks, ``--site NAME=SITE_CONFIG``, and
the training options a command may change (``--gin``/``--no-gin``, ``--set KEY=VALUE``)."""

from __future__ import annotations

from fedgin.tools.assignments import parse_assignment

TASKS = ("abdomen", "heart")


def parse_sites(values: list[str]) -> dict[str, str]:
    """``--site NAME=SITE_CONFIG`` values -> ``{NAME: SITE_CONFIG}``; a malformed or repeated one stops the command."""
    sites = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--site expects NAME=SITE_CONFIG.json, got {value!r}")
        if name in sites:
            raise SystemExit(f"site {name!r} given twice")
        sites[name] = path
    return sites


def gin_flags(p) -> None:
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


def training_overrides(args) -> dict | None:
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
        from fedgin.seg.config import TrainConfig

        try:  # an unknown option or a bad value fails here, naming it, not inside FLARE
            TrainConfig.from_dict({"organs": ["check"], **overrides})
        except (TypeError, ValueError) as e:
            raise SystemExit(f"--set: {e}") from None
    return overrides or None
