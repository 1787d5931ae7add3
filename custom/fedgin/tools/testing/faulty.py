"""A site executor that misbehaves on purpose, to test the server's robustness in real FLARE runs.

The simulator gives every site the same client config, so the fault names the sites it applies
to; the other sites run the normal :class:`~fedgin.flare.executor.SegmentationExecutor`. Client config::

    "path": "fedgin.tools.testing.faulty.FaultyExecutor",
    "args": {..., "fault": {"sites": ["site-bad"], "modes": ["nan", "huge", "crash"], "hang_s": 20}}

``modes[r]`` applies in round ``r`` (0-based); later rounds, and mode ``"ok"``, train normally.
"""

from __future__ import annotations

import time

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants

from fedgin.flare.executor import SegmentationExecutor

FAULTY_STEPS = 500  # the step count a faulty update claims (below the job's MAX_STEPS_PER_ROUND)
FAULT_MODES = ("ok", "nan", "inf", "wrong_shape", "huge", "missing_key", "unknown_key", "crash", "hang")


class SimulatedCrash(RuntimeError):
    """Raised by mode ``crash``: an unhandled error in the middle of a training task."""


def faulty_update(mode: str, global_weights: dict, seed: int = 0) -> dict:
    """A WEIGHT_DIFF of the kind ``mode`` describes, shaped after ``global_weights``."""
    diff = {k: np.zeros(np.shape(v), np.float32) for k, v in global_weights.items()}
    first = next(iter(diff))
    if mode == "nan":
        diff[first].flat[0] = np.nan
    elif mode == "inf":
        diff[first].flat[0] = np.inf
    elif mode == "wrong_shape":
        diff[first] = np.zeros((diff[first].shape[0] + 1, *diff[first].shape[1:]), np.float32)
    elif mode == "huge":
        rng = np.random.default_rng(seed)
        diff = {k: (rng.normal(size=v.shape) * 1e4).astype(np.float32) for k, v in diff.items()}
    elif mode == "missing_key":
        del diff[first]
    elif mode == "unknown_key":
        diff["injected.weight"] = np.zeros(3, np.float32)
    else:
        raise ValueError(f"no faulty update for mode {mode!r}")
    return diff


class FaultyExecutor(SegmentationExecutor):
    """A :class:`SegmentationExecutor` whose ``train`` task fails in chosen ways on chosen sites.

    Args:
        organs: as for SegmentationExecutor.
        fault: ``{"sites": [...], "modes": [...], "hang_s": 30}``; modes are in :data:`FAULT_MODES`:
            nan / inf / wrong_shape / huge / missing_key / unknown_key send such an update without
            training; crash raises out of ``execute``; hang sleeps ``hang_s`` seconds (or until
            the job is aborted), then sends a zero update that by then is late.
        **kwargs: as for SegmentationExecutor.
    """

    def __init__(self, organs: list[str], fault: dict | None = None, **kwargs):
        super().__init__(organs, **kwargs)
        fault = dict(fault or {})
        unknown = sorted(set(fault) - {"sites", "modes", "hang_s"})
        bad_modes = [m for m in fault.get("modes", []) if m not in FAULT_MODES]
        if unknown or bad_modes:
            raise ValueError(f"fault: unknown key(s) {unknown} or mode(s) {bad_modes}; modes: {FAULT_MODES}")
        self.fault_sites = list(fault.get("sites", []))
        self.fault_modes = list(fault.get("modes", []))
        self.hang_s = float(fault.get("hang_s", 30))

    def fault_mode(self, current_round: int) -> str:
        if self.site_name not in self.fault_sites or current_round >= len(self.fault_modes):
            return "ok"
        return self.fault_modes[current_round]

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        current_round = shareable.get_header(AppConstants.CURRENT_ROUND, 0)
        mode = self.fault_mode(current_round) if task_name == self.train_task_name else "ok"
        if mode == "ok":
            return super().execute(task_name, shareable, fl_ctx, abort_signal)
        self.log_warning(fl_ctx, f"[fedgin] {self.site_name}: round {current_round + 1}: fault {mode!r}", False)
        if mode == "crash":
            raise SimulatedCrash(f"{self.site_name}: simulated crash in round {current_round + 1}")
        global_weights = from_shareable(shareable).data
        if mode == "hang":
            end = time.time() + self.hang_s
            while time.time() < end and not abort_signal.triggered:
                time.sleep(0.2)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            diff = {k: np.zeros(np.shape(v), np.float32) for k, v in global_weights.items()}
        else:
            diff = faulty_update(mode, global_weights, seed=current_round)
        # A bad update claims much work and a perfect model: if the server counted it anyway, the
        # StepBalancer would raise every site's next round to FAULTY_STEPS steps and the best-model
        # selector would crown this round's model.
        meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: FAULTY_STEPS, MetaKey.INITIAL_METRICS: {"val_mean_dice": 1.0}}
        return DXO(DataKind.WEIGHT_DIFF, diff, meta=meta).to_shareable()
