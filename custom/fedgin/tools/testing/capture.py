"""Recorders of what a site sends: every leaf of every outgoing task result and forwarded event;
and the weights themselves at one point of a filter chain.

:class:`CaptureOutgoing` goes last in a site's ``task_result_filters`` for all tasks;
:class:`CaptureForwardedEvents` replaces the job's ``ConvertToFedEvent`` (it forwards the same
events). Both change nothing and write one JSON line per message to ``<site run folder>/outgoing.jsonl``:
the task (or ``event:<name>``) and, per leaf of the Shareable (headers, DXO data and meta), its path
and either an array's dtype and shape, a number, or a string. Tests read it to prove that only
weight names/shapes and metric scalars leave a site. :class:`SaveWeights` keeps the numbers: tests
of encrypted aggregation put it after the decryptor and before the encryptor of a site's chains.
"""

from __future__ import annotations

import json
import threading
from enum import Enum
from pathlib import Path

import numpy as np
from nvflare.apis.dxo import MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent

CAPTURE_FILE = "outgoing.jsonl"
_LOCK = threading.Lock()


def describe(value, path: str = "") -> list[dict]:
    """Flatten ``value`` into leaves: {"path", "kind", and "shape"/"dtype" or "value"}."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in describe(v, f"{path}/{k}")]
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in describe(v, f"{path}[{i}]")]
    if isinstance(value, np.ndarray) or hasattr(value, "shape") and hasattr(value, "dtype"):
        return [{"path": path, "kind": "array", "shape": list(np.shape(value)), "dtype": str(value.dtype)}]
    if isinstance(value, Enum):  # FLARE's analytics tags their DXOs with enum members
        return [{"path": path, "kind": "string", "value": str(value.value)}]
    if value is None or isinstance(value, (bool, int, float)):
        return [{"path": path, "kind": "number", "value": value}]
    if isinstance(value, (str, bytes)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        return [{"path": path, "kind": "string", "value": text}]
    return [{"path": path, "kind": "other", "value": type(value).__name__}]


class CaptureOutgoing(Filter):
    """Record the leaves of each outgoing result (see the module docstring); pass it on unchanged."""

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if fl_ctx.get_engine() is None or fl_ctx.get_job_id() is None:
            return shareable
        _record(fl_ctx, fl_ctx.get_prop(FLContextKey.TASK_NAME, "?"), shareable)
        return shareable


class SaveWeights(Filter):
    """Save the weights of each DXO that passes, as they are at this point of the chain, to
    ``<site run folder>/weights/<tag>_<task>_<n>.npz`` (n: 0, 1, ... per tag and task), with its
    ``NUM_STEPS_CURRENT_ROUND`` (or -1) as the entry ``__steps__``; pass the message on unchanged."""

    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if fl_ctx.get_engine() is None or fl_ctx.get_job_id() is None:
            return shareable
        dxo = from_shareable(shareable)
        folder = Path(fl_ctx.get_workspace().get_run_dir(fl_ctx.get_job_id())) / "weights"
        folder.mkdir(exist_ok=True)
        prefix = f"{self.tag}_{fl_ctx.get_prop(FLContextKey.TASK_NAME, '?')}"
        with _LOCK:
            path = folder / f"{prefix}_{len(list(folder.glob(prefix + '_*.npz')))}.npz"
            steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, -1)
            np.savez(path, __steps__=steps, **{k: np.asarray(v) for k, v in dxo.data.items()})
        return shareable


class CaptureForwardedEvents(ConvertToFedEvent):
    """FLARE's ``ConvertToFedEvent`` that records each event's data before forwarding it to the server."""

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type in self.events_to_convert and fl_ctx.get_engine() is not None and fl_ctx.get_job_id():
            _record(fl_ctx, f"event:{event_type}", fl_ctx.get_prop(FLContextKey.EVENT_DATA, None) or {})
        super().handle_event(event_type, fl_ctx)


def _record(fl_ctx: FLContext, what: str, message) -> None:
    record = {"task": what, "leaves": describe(dict(message))}
    path = Path(fl_ctx.get_workspace().get_run_dir(fl_ctx.get_job_id())) / CAPTURE_FILE
    with _LOCK, path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
