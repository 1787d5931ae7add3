"""Command line of fedgin: ``python -m fedgin COMMAND [options]``; ``python -m fedgin COMMAND -h`` for one command."""

from __future__ import annotations

import argparse
import sys

from fedgin.tools.data import commands as data
from fedgin.tools.federation import commands as federation
from fedgin.tools.federation import kit_commands as kits
from fedgin.tools.study import commands as study
from fedgin.tools.trained_model import commands as trained_model

# Every command, in the order ``--help`` lists them. Each room's commands module holds a command's
# parser (``add_*``) beside its handler, which the parser sets as ``func``.
COMMANDS = (
    study.add_demo,
    data.add_phantoms,
    federation.add_simulate,
    federation.add_poc,
    kits.add_provision,
    kits.add_site_config,
    kits.add_site_policy,
    kits.add_admin,
    federation.add_build_job,
    federation.add_decrypt_model,
    trained_model.add_evaluate,
    study.add_train,
    study.add_experiment,
    trained_model.add_predict,
    trained_model.add_export,
    federation.add_write_jobs,
    data.add_prepare,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedgin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
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
