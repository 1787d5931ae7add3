"""A result filter that records what a site sends: every leaf of every outgoing task result.

Put it last in a site's ``task_result_filters`` for all tasks; it changes nothing and writes one
JSON line per result to ``<site run folder>/outgoing.jsonl``: task name and, per leaf of the
Shareable (headers, DXO data and meta), its path and either an array's dtype and shape, a number,
or a string. Tests read it to prove that only weight names/shapes and metric scalars leave a site.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

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
    if value is None or isinstance(value, (bool, int, float)):
        return [{"path": path, "kind": "number", "value": value}]
    if isinstance(value, (str, bytes)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        return [{"path": path, "kind": "string", "value": text}]
    return [{"path": path, "kind": "other", "value": type(value).__name__}]


class CaptureOutgoing(Filter):
    """Record the leaves of each outgoing result (see the module docstring); pass it on unchanged."""

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        job_id = fl_ctx.get_job_id()
        if fl_ctx.get_engine() is None or job_id is None:
            return shareable
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME, "?")
        record = {"task": task, "leaves": describe(dict(shareable))}
        path = Path(fl_ctx.get_workspace().get_run_dir(job_id)) / CAPTURE_FILE
        with _LOCK, path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        return shareable
