"""Job-config entries for the privacy filter of the ``train`` results, always on WEIGHT_DIFF only.

FLARE's PercentilePrivacy and SVTPrivacy also filter full WEIGHTS by default, which clips a whole
model to +-gamma; every entry built here carries ``data_kinds: ["WEIGHT_DIFF"]``.
"""

from __future__ import annotations

import inspect

FILTER_PATHS = {
    "gaussian": "fedgin.flare.privacy.gaussian.GaussianPrivacy",
    "percentile": "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy",
    "svt": "nvflare.app_common.filters.svt_privacy.SVTPrivacy",
}
KINDS = (*FILTER_PATHS, "none")
WEIGHT_DIFF_ONLY = ["WEIGHT_DIFF"]
# "percentile" alone: the settings of our jobs' PercentilePrivacy (fedgin.flare.job_definitions).
PERCENTILE_DEFAULTS = {"percentile": 10, "gamma": 0.01}


def _filter_class(kind: str):
    module, _, name = FILTER_PATHS[kind].rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def privacy_filter_config(kind: str, **args) -> dict | None:
    """The filter entry (``{"path": ..., "args": ...}``) for a kind of privacy filter.

    Args:
        kind: "gaussian" (:class:`fedgin.flare.privacy.gaussian.GaussianPrivacy`; needs
            ``noise_multiplier`` and ``clip_norm``), "percentile" (FLARE's PercentilePrivacy),
            "svt" (FLARE's SVTPrivacy) or "none".
        **args: the filter's arguments; checked against its signature here, so a typo fails when
            the job is built, not at the sites.

    Returns:
        The entry, or None for "none".
    """
    if kind not in KINDS:
        raise ValueError(f"unknown privacy filter {kind!r}; choose one of {list(KINDS)}")
    if kind == "none":
        if args:
            raise ValueError(f"privacy 'none' takes no arguments, got {sorted(args)}")
        return None
    data_kinds = args.pop("data_kinds", WEIGHT_DIFF_ONLY)
    if list(data_kinds) != WEIGHT_DIFF_ONLY:
        raise ValueError(f"privacy filters run on WEIGHT_DIFF only, got data_kinds {data_kinds}")
    if kind == "percentile":
        args = {**PERCENTILE_DEFAULTS, **args}
    args["data_kinds"] = list(WEIGHT_DIFF_ONLY)
    try:
        inspect.signature(_filter_class(kind)).bind(**args)
    except TypeError as e:
        raise ValueError(f"privacy filter {kind!r}: {e}") from None
    return {"path": FILTER_PATHS[kind], "args": args}
