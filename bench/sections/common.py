"""Helpers the bench sections share: constants and targets, sizes, statistics, timing, table cells, machine info."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = REPO / "bench" / "run_bench.py"  # the entry point; the plain baseline runs it with --plain-worker
JOB_DIR = REPO / "jobs" / "fedgin_abdomen"
ABDOMEN = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "gallbladder"]
DEMO_ROUNDS = 30  # the demo job's num_rounds: the FLARE/plain ratio target applies there
PAPER_ROUNDS = 100  # the FedGIN paper's protocol (100 rounds of one local epoch): reported from the fit

# Targets of the issue.
GIN_MAX_SHARE = 0.02  # GIN <= 2 % of a training step
FL_MAX_ROUND_OVERHEAD_S = 0.3
FL_MAX_RATIO = 1.10
CLIENT_MAX_RSS_MB = 1024

# A tiny model for --smoke (as in bench/privacy_sweep.py): proves the pipeline, measures nothing.
TINY_MODEL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}

# Rough seconds per section on 2 idle CPU cores (full / smoke), for the estimate printed first: worked out
# from the demo's round times, not measured on an idle machine.
ESTIMATE_S = {
    "full": {"gin": 20, "families": 15, "options": 15, "fl": 660, "poc": 90, "data": 90, "scale": 210, "infer": 70},
    "smoke": {"gin": 10, "families": 5, "options": 5, "fl": 80, "poc": 60, "data": 20, "scale": 70, "infer": 15},
}


@dataclass(frozen=True)
class Sizes:
    """Everything --smoke shrinks."""

    gin_2d: tuple[int, ...] = (16, 1, 128, 128)
    gin_3d: tuple[int, ...] = (2, 1, 96, 96, 96)
    gin_model: dict | None = None  # model overrides of the timed training step (None: default U-Net)
    warmup: int = 2
    repeats: int = 7
    warmup_3d: int = 1
    repeats_3d: int = 3
    gin_turns: int = 15  # turns of (GIN x3, loop, step) in section gin
    gin_turns_3d: int = 5
    phantom_size: float = 1.0
    phantom_max_cases: int | None = None
    fl_rounds: tuple[int, ...] = (2, 8, 30)  # three points for the fit; 30 = the demo's rounds, measured
    fl_repeat_longest: bool = True  # the longest pair again, plain first (A-B-B-A against drift)
    poc_rounds: int = 8
    # fedgin.tools.study.commands.DEMO_OVERRIDES
    fl_training: dict = field(default_factory=lambda: {"spatial_size": [96, 96]})
    data_rounds: int = 3  # per mode (cached / reloading), interleaved
    scale_sites: tuple[int, ...] = (2, 4, 8)
    scale_rounds: int = 3
    scale_cases: tuple[int, int] = (2, 1)  # training, validation cases per scale site
    scale_phantom_size: float = 1.0
    scale_training: dict | None = None  # None: the shipped 2D default (TrainConfig: 192 x 192)
    infer_2d: dict = field(default_factory=dict)  # TrainConfig overrides; {}: the 2D default
    infer_3d: dict = field(default_factory=lambda: {"spatial_size": (96, 96, 96), "model": {"spatial_dims": 3}})
    infer_repeats: int = 3
    timeout_s: float = 1800


SMOKE = Sizes(
    gin_2d=(4, 1, 32, 32),
    gin_3d=(1, 1, 16, 16, 16),
    gin_model=TINY_MODEL,
    warmup=1,
    repeats=3,
    warmup_3d=1,
    repeats_3d=2,
    gin_turns=3,
    gin_turns_3d=2,
    phantom_size=0.5,
    phantom_max_cases=1,
    fl_rounds=(1, 2),
    fl_repeat_longest=False,
    poc_rounds=2,
    fl_training={"spatial_size": [32, 32], "model": TINY_MODEL},
    data_rounds=1,
    scale_sites=(2, 4),
    scale_rounds=2,
    scale_cases=(1, 1),
    scale_phantom_size=0.5,
    scale_training={"spatial_size": [32, 32], "model": TINY_MODEL},
    infer_2d={"spatial_size": (32, 32), "model": TINY_MODEL},
    infer_3d={"spatial_size": (16, 16, 16), "model": {**TINY_MODEL, "spatial_dims": 3}},
    infer_repeats=1,
    timeout_s=900,
)


# -- statistics --------------------------------------------------------------------------------------
def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def met(value, limit) -> bool | None:
    """value <= limit, or None when there is no value."""
    return None if value is None else bool(value <= limit)


def train_config(overrides: dict | None = None):
    """A TrainConfig of the abdomen job with ``overrides`` (a dict of TrainConfig options)."""
    from fedgin.seg.config import TrainConfig

    return TrainConfig.from_dict({"organs": ABDOMEN, **(overrides or {})})


# -- timing ------------------------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (``repeats`` timings after ``warmup`` untimed calls; CUDA synced)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: dict[str, tuple[Callable[[], object], int]], device, warmup: int, repeats: int) -> dict:
    """Seconds per call of each ``fn``, timed in turns so every figure sees the same machine load.

    ``fns`` maps a name to ``(fn, calls)``: each turn times ``calls`` calls of every fn in order and
    records the mean per call. Returns ``{name: [seconds per call, one per turn]}``. On a shared
    machine, ratios of figures from the same turns are far steadier than separately timed blocks.
    """
    for fn, calls in fns.values():
        for _ in range(warmup * calls):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, calls) in fns.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / calls)
    return times


# -- Markdown table cells ----------------------------------------------------------------------------
def cell(value, fmt: str = "{:.3f}", none: str = "-") -> str:
    """``value`` formatted with ``fmt``, or ``none`` when there is no value."""
    return none if value is None else fmt.format(value)


def verdict(flag) -> str:
    """A target's column: met, not met (bold) or ``-`` (not resolved / no value)."""
    return {True: "met", False: "**not met**", None: "-"}[flag]


# -- the machine -------------------------------------------------------------------------------------
def machine_info(device) -> dict:
    import monai
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "monai": monai.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        from importlib.metadata import version

        info["nvflare"] = version("nvflare")
    except Exception:
        info["nvflare"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info
