"""The three places fedgin relies on FLARE 2.9 behaviour that FLARE has no public API for.

Each is used through this module only, and ``tests/flare/test_compat.py`` checks each against the
installed FLARE, so a FLARE release that changes one fails there by name instead of silently
changing a job:

- :func:`apply_task_check_period`: ``Controller.set_communicator`` stores the controller's
  ``task_check_period`` as a public attribute of the communicator, but ``WFCommServer`` polls with
  its private ``_task_check_period``, which keeps its constructor default (the server builds it
  without arguments). See :mod:`fedgin.flare.workflow`.
- :func:`serialize_always`: FLARE's Job API leaves a component's arguments that equal their
  defaults out of the job file, except those named in the component's ``_always_serialize_args``.
  fedgin's jobs show every option they chose.
- :func:`advertise_keyword_options`: the Job API reads a component's arguments from its
  constructor's signature (``inspect.signature``); an executor that takes ``**training`` advertises
  each training option by name so the job file keeps them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

TASK_CHECK_PERIOD_ATTRIBUTE = "_task_check_period"
ALWAYS_SERIALIZE_ATTRIBUTE = "_always_serialize_args"


def apply_task_check_period(communicator, period: float) -> None:
    """Make ``communicator`` (FLARE's ``WFCommServer``) poll its tasks every ``period`` seconds."""
    if not hasattr(communicator, TASK_CHECK_PERIOD_ATTRIBUTE):
        raise RuntimeError(
            f"{type(communicator).__name__} has no {TASK_CHECK_PERIOD_ATTRIBUTE} any more: this FLARE release "
            "changed how the server polls its tasks; update fedgin.flare.compat.apply_task_check_period"
        )
    setattr(communicator, TASK_CHECK_PERIOD_ATTRIBUTE, period)


def serialize_always(component, names: Iterable[str]):
    """Have the Job API write ``names`` of ``component``'s arguments even where they equal the defaults."""
    setattr(component, ALWAYS_SERIALIZE_ATTRIBUTE, tuple(names))
    return component


def advertise_keyword_options(init, options: Iterable[tuple[str, object]]) -> None:
    """Rewrite ``init``'s signature: its ``**kwargs`` becomes keyword-only ``options`` (name, default)."""
    signature = inspect.signature(init)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in options]
    init.__signature__ = signature.replace(parameters=params)
