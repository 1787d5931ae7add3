"""Performance bench of fedgin: GIN cost, FLARE overhead, data caching, scale and inference speed.

One command measures every figure and writes ``bench_<device>.md`` (a table per section, with the
targets and whether they are met) and ``bench_<device>.json`` (raw numbers, machine info) to
``--out``; ``device`` is ``cuda`` when a GPU is used, else ``cpu``.

    python bench/run_bench.py                                  # everything (~17 min on 2 idle CPU cores)
    python bench/run_bench.py --only gin,infer                 # some sections
    python bench/run_bench.py --smoke --out /tmp/bench         # tiny sizes: proves the script runs

Sections (see bench/README.md for how to read them):

* ``gin``: batched GIN against one training step of the default model on the same batch, and
  against a per-sample Python loop of ``RandGIN`` (2D 16x1x128^2, 3D 2x1x96^3).
* ``options``: the training step as ``Trainer`` runs it against channels-last weights and, on CUDA,
  without AMP; on CUDA also the batch copy (pageable, pinned + non-blocking, data resident on the GPU).
* ``fl``: FLARE simulator (2 phantom sites, demo configuration) against the same training in one
  plain process, at 2, 8 and 30 rounds and 30 again in the other order; a linear fit splits fixed
  start-up cost and per-round cost; the repeat shows the machine's noise.
* ``data``: site data loaded once per job; rounds/s with and without that cache; peak RSS of a client.
* ``scale``: 2, 4 and 8 simulated sites: wall per round and peak RSS per client process.
* ``infer``: volumes per second of ``Trainer.predict`` + Dice on the phantoms' test volumes.

Timings are medians of repeats after warm-up; ratios come from the same run. Heavy imports happen
inside functions so that the plain-process baseline (``--plain-worker``, started by the ``fl`` and
``data`` sections) pays only for what a plain training script needs, not for FLARE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
JOB_DIR = REPO / "jobs" / "fedgin_abdomen"
SECTIONS = ("gin", "families", "options", "fl", "poc", "data", "scale", "infer")
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
    fl_training: dict = field(default_factory=lambda: {"spatial_size": [96, 96]})  # fedgin.tools.cli.DEMO_OVERRIDES
    data_rounds: int = 3  # per mode (cached / reloading), interleaved
    scale_sites: tuple[int, ...] = (2, 4, 8)
    scale_rounds: int = 3
    scale_cases: tuple[int, int] = (2, 1)  # training, validation cases per scale site
    scale_phantom_size: float = 1.0
    scale_training: dict | None = None  # None: the job's own 2D default (128 x 128)
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


# -- small helpers ----------------------------------------------------------------------------------
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
    from fedgin.seg.training import TrainConfig

    return TrainConfig.from_dict({"organs": ABDOMEN, **(overrides or {})})


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


class RssSampler:
    """Samples the RSS of this process's descendants every ``interval`` s; keeps the peak per role.

    Roles: ``client:<site>`` (a simulator worker process), ``simulator`` (FLARE's server/parent
    processes), ``plain`` (the plain-process baseline).
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_mb: dict[str, float] = {}
        self._labels: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _label(proc: psutil.Process) -> str | None:
        cmd = proc.cmdline()
        if any(part.endswith("simulator_worker") for part in cmd) and "--client" in cmd:
            return f"client:{cmd[cmd.index('--client') + 1]}"
        if any(part.endswith("simulator.simulator") for part in cmd):
            return "simulator"
        if "--plain-worker" in cmd:
            return "plain"
        return None

    def sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.pid not in self._labels:
                    self._labels[proc.pid] = self._label(proc)
                label = self._labels[proc.pid]
                if label:
                    mb = proc.memory_info().rss / 2**20
                    self.peak_mb[label] = max(self.peak_mb.get(label, 0.0), mb)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, IndexError):
                continue

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def clients(self) -> dict[str, float]:
        return {k.split(":", 1)[1]: round(v, 1) for k, v in self.peak_mb.items() if k.startswith("client:")}


@contextmanager
def child_device(device) -> Iterator[None]:
    """Children started inside use ``device``: on CPU, hide a present GPU from them (not from this process)."""
    if device.type != "cpu":
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if old is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


# -- FLARE simulator runs and their logs -------------------------------------------------------------
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - ")
_ROUND_STARTED = re.compile(r"Round (\d+) started\.")
_READY = re.compile(r"\[fedgin\] (\S+): \S+ site ready on .* loaded in ([\d.]+) s")
_TRAINED = re.compile(
    r"\[fedgin\] round (\d+)/\d+ (\S+): .* over \d+ steps \(([\d.]+) s\)(?:, waited ([\d.]+) s for a CPU turn)?"
)
_CROSS_EVAL = re.compile(r"\[fedgin\] (\S+): model of \S+ val mean Dice")


def _slowest_site(ev: dict, rounds) -> dict[int, float]:
    """Per round, the time until the last site was done: its task plus its wait for a CPU turn."""
    return {
        k: max(t + ev["wait_s"].get(k, {}).get(site, 0.0) for site, t in ev["train_s"][k].items())
        for k in rounds
        if ev["train_s"].get(k)
    }


def parse_simulator_log(path: Path) -> dict:
    """Timestamps (epoch s) of the events of a simulator log that the bench needs."""
    events = {"first": None, "last": None, "round_started": {}, "ready": {}, "load_s": {}, "train_s": {}, "wait_s": {}}
    events.update(sag_done=None, cross_evals={})
    for line in Path(path).read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        # The log is written in local time by the same machine, so it compares with time.time().
        t = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        events["first"] = events["first"] or t
        events["last"] = t
        if m := _ROUND_STARTED.search(line):
            events["round_started"].setdefault(int(m.group(1)), t)
        elif m := _READY.search(line):
            events["ready"].setdefault(m.group(1), []).append(t)
            events["load_s"][m.group(1)] = float(m.group(2))
        elif m := _TRAINED.search(line):
            events["train_s"].setdefault(int(m.group(1)) - 1, {})[m.group(2)] = float(m.group(3))
            events["wait_s"].setdefault(int(m.group(1)) - 1, {})[m.group(2)] = float(m.group(4) or 0.0)
        elif m := _CROSS_EVAL.search(line):
            events["cross_evals"][m.group(1)] = events["cross_evals"].get(m.group(1), 0) + 1
        elif "Finished ScatterAndGather Training" in line:
            events["sag_done"] = t
    return events


def round_walls(events: dict) -> dict[int, float]:
    """Wall seconds of each round: from its start to the next round's start (or training's end)."""
    starts = events["round_started"]
    walls = {}
    for k in sorted(starts):
        end = starts.get(k + 1, events["sag_done"] if k == max(starts) else None)
        if end is not None:
            walls[k] = end - starts[k]
    return walls


def run_flare(ctx: Context, sites: dict[str, Path], rounds: int, training: dict | None, name: str) -> dict:
    """One FLARE simulator run of the abdomen job; wall time, log breakdown, peak RSS per process."""
    from fedgin.tools.cpu_sharing import client_thread_env
    from fedgin.tools.jobs import build_job
    from fedgin.tools.simulation import install_site_configs, run_simulator

    ws = ctx.work / name
    if ws.exists():
        shutil.rmtree(ws)
    job = build_job(JOB_DIR, ws / "job" / JOB_DIR.name, rounds, min_clients=len(sites), executor_overrides=training)
    sim_ws = ws / "simulate"
    install_site_configs(sim_ws, sites)
    log_file = ws / "simulator.log"
    omp = {**os.environ, **client_thread_env(len(sites))}.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    def echo(line: str) -> None:
        if "Round" in line:
            ctx.log(f"    {name}: {line.strip()}")

    with child_device(ctx.device), RssSampler() as rss:
        start = time.time()
        run_simulator(job, sim_ws, list(sites), log_file, len(sites), echo, ctx.sizes.timeout_s)
        end = time.time()
        rss.sample()
    ev = parse_simulator_log(log_file)
    walls = round_walls(ev)
    steady = {k: w for k, w in walls.items() if k >= 1}  # round 0 waits for the clients to start
    slowest = _slowest_site(ev, steady)
    ready = max((max(ts) for ts in ev["ready"].values()), default=None)
    started0 = ev["round_started"].get(0)
    breakdown = {
        "launch_to_first_log_s": ev["first"] - start if ev["first"] else None,
        "first_log_to_round0_s": started0 - ev["first"] if started0 and ev["first"] else None,
        "round0_to_all_sites_ready_s": ready - started0 if ready and started0 else None,
        "site_data_load_s": ev["load_s"],
        "round0_extra_s": walls[0] - median(steady.values()) if 0 in walls and steady else None,
        "training_end_to_last_log_s": ev["last"] - ev["sag_done"] if ev["sag_done"] else None,
        "last_log_to_exit_s": end - ev["last"] if ev["last"] else None,
    }
    return {
        "rounds": rounds,
        "sites": len(sites),
        "omp_threads_per_client": int(omp),
        "wall_s": end - start,
        "round_wall_s": {str(k): rounded(w) for k, w in walls.items()},
        "steady_round_s": rounded(median(steady.values())),
        "slowest_site_task_s": rounded(median(slowest.values())),
        "site_task_s": {
            site: rounded(median(ev["train_s"][k][site] for k in steady if site in ev["train_s"].get(k, {})))
            for site in sites
        },
        "round_minus_slowest_task_s": rounded(median(steady[k] - slowest[k] for k in slowest)),
        "data_loads_per_site": {site: len(ts) for site, ts in ev["ready"].items()},
        "cross_site_evals_per_site": ev["cross_evals"],
        "breakdown": {k: rounded(v, 3) if not isinstance(v, dict) else v for k, v in breakdown.items()},
        "peak_rss_mb": {"clients": rss.clients(), "simulator": rounded(rss.peak_mb.get("simulator"), 1)},
        "job": str(job),
    }


# -- the plain-process baseline ----------------------------------------------------------------------
def percentile_filter_args(job: Path) -> dict | None:
    """Args of the PercentilePrivacy filter on ``train`` results in a built job, if it has one."""
    client = json.loads((job / "app/config/config_fed_client.json").read_text())
    for group in client.get("task_result_filters", []):
        if "train" in group.get("tasks", []):
            for f in group.get("filters", []):
                if f.get("path", "").endswith("PercentilePrivacy"):
                    return f.get("args", {})
    return None


def percentile_privacy(diff: dict, steps: int, percentile: float = 10, gamma: float = 0.01, **_) -> dict:
    """The arithmetic of FLARE's PercentilePrivacy filter (same work as in the FL job)."""
    import numpy as np

    delta = {k: v / max(steps, 1) for k, v in diff.items()}
    cutoff = np.percentile(np.concatenate([np.abs(v.ravel()) for v in delta.values()]), percentile)
    out = {}
    for k, v in delta.items():
        if np.ndim(v) == 0:
            out[k] = v * steps
            continue
        v = v.copy()
        v[(v > -cutoff) & (v < cutoff)] = 0.0
        out[k] = np.clip(v, -gamma, gamma) * steps
    return out


def plain_worker(spec_path: str) -> int:
    """The FL job's work without FLARE, in this one process: sites one after the other, then FedAvg.

    Per round and site, as the executor does: load the global weights, score the validation split,
    train the local epochs, diff, PercentilePrivacy; then the server's step-weighted average of the
    diffs. After the rounds, each site scores the global model as often as the FLARE run's
    cross-site validation did. ``reload: "alternate"`` reloads the site data on rounds 2, 4, ...
    (round 0 is then a warm-up: first calls of the kernels, allocator and metric are slower).
    """
    created = psutil.Process().create_time()
    import numpy as np
    import torch
    from fedgin.flare.executor import site_seed
    from fedgin.seg.data.site_data import load_site_data
    from fedgin.seg.site_config import load_site_config
    from fedgin.seg.training import Trainer
    from fedgin.tools.jobs import job_training_config

    imported = time.time()
    spec = json.loads(Path(spec_path).read_text())
    job, device = Path(spec["job"]), torch.device(spec["device"])
    base = job_training_config(job)
    filter_args = percentile_filter_args(job)

    def load(site, cfg):
        return load_site_data(
            site, cfg.organs, cfg.spatial_size, cfg.model.spatial_dims, splits=("training", "validation"),
            background_slice_fraction=cfg.background_slice_fraction, seed=cfg.seed,
        )  # fmt: skip

    sites = {}
    for name, path in spec["sites"].items():
        # The executor's per-site seed, so both runs see the same slices and draws.
        cfg = replace(base, seed=site_seed(base.seed, name))
        site = load_site_config(path)
        sites[name] = {"site": site, "cfg": cfg, "data": load(site, cfg), "trainer": Trainer(cfg, device)}
    loaded = time.time()
    weights = {k: v.detach().cpu().numpy().copy() for k, v in base.build_model().state_dict().items()}
    records = []
    for r in range(spec["rounds"]):
        start, load_s = time.time(), 0.0
        reload = spec.get("reload") == "alternate" and r > 0 and r % 2 == 0
        diffs, site_s = [], {}
        for name, s in sites.items():
            if reload:
                t = time.time()
                s["data"] = load(s["site"], s["cfg"])
                load_s += time.time() - t
            trainer = s["trainer"]
            trainer.set_weights(weights)
            t = time.time()  # the executor's timed part: validation + local epochs
            trainer.evaluate(s["data"].validation, s["data"].present_organs)
            stats = trainer.train_epochs(s["data"].train)
            site_s[name] = time.time() - t
            local = trainer.get_weights()
            diff = {k: local[k] - weights[k] for k in local}
            if filter_args is not None:
                diff = percentile_privacy(diff, stats["steps"], **filter_args)
            diffs.append((diff, stats["steps"]))
        total = sum(n for _, n in diffs) or 1
        weights = {k: (v + sum(d[k] * n for d, n in diffs) / total).astype(v.dtype) for k, v in weights.items()}
        wall = time.time() - start
        records.append({"round": r, "wall_s": wall, "reload": reload, "load_s": load_s, "site_s": site_s})
    trained = time.time()
    for name, s in sites.items():
        for _ in range(int(spec.get("cross_evals", {}).get(name, 0))):
            s["trainer"].set_weights(weights)
            s["trainer"].evaluate(s["data"].validation, s["data"].present_organs)
    done = time.time()

    def nbytes(data) -> int:
        tensors = [data.train.images, data.train.labels] + [t for v in data.validation for t in (v.image, v.label)]
        return sum(t.element_size() * t.nelement() for t in tensors)

    out = {
        "process_start_to_imports_s": imported - created,
        "data_load_s": loaded - imported,
        "rounds": records,
        "cross_eval_s": done - trained,
        "finite": bool(all(np.isfinite(v).all() for v in weights.values())),
        "site_data_mb": {name: nbytes(s["data"]) / 2**20 for name, s in sites.items()},
        "process_start": created,
        "done": done,
    }
    Path(spec["out"]).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def run_plain(ctx: Context, job: Path, sites: dict[str, Path], rounds: int, name: str, **spec) -> dict:
    """Run :func:`plain_worker` in a fresh process; wall time from launch to exit, peak RSS."""
    ws = ctx.work / name
    ws.mkdir(parents=True, exist_ok=True)
    spec_path, out = ws / "spec.json", ws / "result.json"
    full = {"job": str(job), "sites": {k: str(v) for k, v in sites.items()}, "rounds": rounds, **spec}
    full.update(device=ctx.device.type, out=str(out))
    spec_path.write_text(json.dumps(full, indent=2))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain-worker", str(spec_path)]
    with child_device(ctx.device), RssSampler() as rss, open(ws / "plain.log", "w") as log:
        start = time.time()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=ctx.sizes.timeout_s).returncode
        end = time.time()
    if rc != 0:
        raise RuntimeError(f"plain-process run failed (exit {rc}); see {ws / 'plain.log'}")
    result = json.loads(out.read_text())
    # create_time has clock-tick resolution: clamp the tiny negative values it can give.
    result.update(wall_s=end - start, launch_to_process_s=max(0.0, result.pop("process_start") - start))
    result["exit_s"] = end - result.pop("done")
    result["peak_rss_mb"] = rounded(rss.peak_mb.get("plain"), 1)
    return result


# -- the run's context -------------------------------------------------------------------------------
class Context:
    """Options, device, work folder, phantoms (made on first use) and a progress printer."""

    def __init__(self, args, sizes: Sizes, device, work: Path):
        self.args, self.sizes, self.device, self.work = args, sizes, device, work
        self.t0 = time.time()
        self._phantoms: dict[str, dict[str, Path]] = {}
        self.flare_runs: list[dict] = []  # every simulator run, for the data section's figures

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.0f} s] {message}", flush=True)

    def phantoms(self) -> dict[str, Path]:
        """The default phantom sites (site-ct, site-mri), generated once."""
        if "default" not in self._phantoms:
            from fedgin.tools.phantoms import generate_phantom_dataset

            self.log("generating the phantom sites ...")
            self._phantoms["default"] = generate_phantom_dataset(
                "abdomen", self.work / "phantoms", seed=0, size=self.sizes.phantom_size,
                max_cases=self.sizes.phantom_max_cases, num_workers=os.cpu_count() or 1,
            )  # fmt: skip
        return self._phantoms["default"]

    def scale_phantoms(self, n: int) -> dict[str, Path]:
        """``n`` small phantom sites, half CT and half MR (the largest n is generated once)."""
        if "scale" not in self._phantoms:
            from fedgin.tools.phantoms import PhantomSiteSpec, generate_phantom_dataset
            from fedgin.tools.phantoms.case import DEFAULT_GRID

            n_train, n_val = self.sizes.scale_cases
            specs = []
            for i in range(max(self.sizes.scale_sites)):
                modality = "CT" if i % 2 == 0 else "MR"
                shape, spacing, orientation = DEFAULT_GRID[modality]
                name = f"site-{i + 1:02d}-{modality.lower()}"
                spec = PhantomSiteSpec(name, modality, n_train, n_val, 0, shape, spacing, orientation)
                specs.append(spec.scaled(self.sizes.scale_phantom_size))
            self.log(f"generating {len(specs)} small phantom sites ...")
            self._phantoms["scale"] = generate_phantom_dataset(
                "abdomen", self.work / "phantoms_scale", seed=0, sites=specs, num_workers=os.cpu_count() or 1
            )
        return dict(list(self._phantoms["scale"].items())[:n])


# -- sections ----------------------------------------------------------------------------------------
def bench_gin(ctx: Context) -> dict:
    """Batched GIN vs one training step (forward, loss, backward, AdamW) vs a per-sample loop."""
    import torch
    from fedgin.seg.training import Trainer
    from fedgin.seg.transforms import RandGIN, gin_batch

    sz, device = ctx.sizes, ctx.device
    cases = {}
    for case, shape, warmup, repeats in (
        ("2d", sz.gin_2d, sz.warmup, sz.gin_turns),
        ("3d", sz.gin_3d, sz.warmup_3d, sz.gin_turns_3d),
    ):
        dims = len(shape) - 2
        model = {**(sz.gin_model or {}), "spatial_dims": dims}
        cfg = train_config({"spatial_size": list(shape[2:]), "model": model})
        trainer = Trainer(cfg, device)  # the project's model, AdamW, loss (MONAI DiceCELoss) and AMP setting
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(shape, generator=gen, device=device)
        y = torch.randint(0, cfg.num_classes, shape, generator=gen, device=device)
        labelled = torch.ones(shape[0], cfg.num_classes, dtype=torch.bool)
        kwargs = cfg.gin.kwargs()
        rand_gin = RandGIN(**kwargs)
        rand_gin.set_random_state(0)

        def step(trainer=trainer, x=x, y=y, labelled=labelled):
            # Trainer.train_epochs' step, GIN aside.
            trainer.model.train()
            trainer.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=trainer.use_amp):
                loss = trainer.loss_fn(trainer.model(x), y, labelled)
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
            return float(loss.detach())

        def batched(x=x, gen=gen, kwargs=kwargs):
            return gin_batch(x, generator=gen, **kwargs)

        def loop(x=x, rand_gin=rand_gin):
            return torch.stack([rand_gin(x[i]) for i in range(x.shape[0])])

        ctx.log(f"  gin {case}: batch {tuple(shape)} on {device} ...")
        # GIN, the loop and the step take turns: the GIN share is a ratio within each turn.
        times = time_interleaved({"gin": (batched, 3), "loop": (loop, 1), "step": (step, 1)}, device, warmup, repeats)
        gin_s, loop_s, step_s = (median(times[k]) for k in ("gin", "loop", "step"))
        share = median([g / st for g, st in zip(times["gin"], times["step"], strict=True)])
        cases[case] = {
            "batch": list(shape),
            "gin_batched_ms": rounded(gin_s * 1e3, 3),
            "gin_loop_ms": rounded(loop_s * 1e3, 3),
            "train_step_ms": rounded(step_s * 1e3, 2),
            "gin_share_of_step": rounded(share, 5),
            "loop_over_batched": rounded(loop_s / gin_s, 2),
            "target_share": GIN_MAX_SHARE,
            "met": met(share, GIN_MAX_SHARE),
            "model": cfg.to_dict()["model"],
            "amp": trainer.use_amp,
        }
        ctx.log(
            f"  gin {case}: GIN {gin_s * 1e3:.2f} ms, loop {loop_s * 1e3:.2f} ms, step {step_s * 1e3:.0f} ms "
            f"-> GIN = {share:.2%} of a step"
        )
        del trainer
    return {"cases": cases}


def bench_families(ctx: Context) -> dict:
    """One full training step per augmentation family (augmentation + forward + loss + backward + AdamW)."""
    import torch
    from fedgin.seg.augmentation import AUGMENTATIONS
    from fedgin.seg.training import Trainer

    sz, device = ctx.sizes, ctx.device
    shape = sz.gin_2d
    steps = {}
    for kind in AUGMENTATIONS:
        cfg = train_config({"spatial_size": list(shape[2:]), "model": sz.gin_model or {}, "augmentation": kind})
        trainer = Trainer(cfg, device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(shape, generator=gen, device=device)
        y = torch.randint(0, cfg.num_classes, shape, generator=gen, device=device)
        labelled = torch.ones(shape[0], cfg.num_classes, dtype=torch.bool, device=device)

        def step(trainer=trainer, x=x, y=y, labelled=labelled):
            trainer.model.train()
            trainer.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=trainer.use_amp):
                loss = trainer._loss(x, y, labelled)  # the Trainer's own step: augmentation (and views) included
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()

        steps[kind] = median(time_calls(step, device, sz.warmup, sz.repeats))
        ctx.log(f"  families: {kind} step {steps[kind] * 1e3:.0f} ms")
        del trainer
    return {
        "batch": list(shape),
        "step_ms": {k: rounded(v * 1e3, 2) for k, v in steps.items()},
        "extra_vs_none": {k: rounded(v / steps["none"] - 1, 4) for k, v in steps.items()},
    }


def _md_families(sec: dict) -> list[str]:
    lines = [
        "## 1b. Augmentation families: cost of a training step",
        "",
        f"One full `Trainer` step on a {'x'.join(map(str, sec['batch']))} batch (augmentation on the batch's device,",
        "forward, loss, backward, AdamW); GIN-IPA trains on two blended views with a consistency loss.",
        "",
        "| family | step (ms) | extra vs none |",
        "|---|---|---|",
    ]
    for kind, ms in sec["step_ms"].items():
        lines.append(f"| {kind} | {ms:.1f} | {sec['extra_vs_none'][kind]:+.1%} |")
    return lines + [""]


def bench_options(ctx: Context) -> dict:
    """The training step's speed options on this device, timed in turns: what `Trainer` does against
    channels-last weights and, on CUDA, against no AMP; on CUDA also the batch copy to the device."""
    import torch
    from fedgin.seg.data.site_data import TrainSamples
    from fedgin.seg.training import Trainer

    sz, device = ctx.sizes, ctx.device
    shape = sz.gin_2d
    gen = torch.Generator().manual_seed(0)
    n = shape[0] * 4  # a few batches, cycled
    images = torch.rand((n, *shape[1:]), generator=gen)
    data = TrainSamples(images, torch.randint(0, 5, images.shape, generator=gen, dtype=torch.uint8))
    base = {"spatial_size": list(shape[2:]), "model": sz.gin_model or {}}
    variants = {"Trainer (as used)": {}, "channels-last weights": {}}
    if device.type == "cuda":
        variants["no AMP"] = {"amp": False}
    trainers = {}
    for name, overrides in variants.items():
        trainer = Trainer(train_config({**base, **overrides}), device)
        if name == "channels-last weights":
            trainer.model.to(memory_format=torch.channels_last)
        trainers[name] = trainer
    labelled = data.labelled_mask(trainers["Trainer (as used)"].config.num_classes)
    batches = [torch.arange(i, i + shape[0]) for i in range(0, n, shape[0])]

    def stepper(trainer):
        state = {"i": 0}

        def step():
            state["i"] += 1
            return trainer.train_batch(data, batches[state["i"] % len(batches)], labelled)

        return step

    ctx.log(f"  options: {', '.join(variants)} on a {tuple(shape)} batch on {device} ...")
    times = time_interleaved({k: (stepper(t), 1) for k, t in trainers.items()}, device, sz.warmup, sz.repeats)
    step_ms = {k: median(v) * 1e3 for k, v in times.items()}
    default = "Trainer (as used)"
    out = {
        "batch": list(shape),
        "amp": trainers[default].use_amp,
        "step_ms": {k: rounded(v, 2) for k, v in step_ms.items()},
        "vs_trainer": {
            k: rounded(median([a / b for a, b in zip(v, times[default], strict=True)]), 4) for k, v in times.items()
        },
        "copy_ms": None,
    }
    for k, v in step_ms.items():
        ctx.log(f"  options: {k} {v:.1f} ms")
    if device.type == "cuda":
        x = data.images[batches[0]]
        resident = data.images.to(device)
        copies = {
            "pageable .to(device)": lambda: x.to(device),
            "pinned, non_blocking (Trainer)": lambda: x.pin_memory().to(device, non_blocking=True),
            "data resident on the GPU, indexed there": lambda: resident[batches[0].to(device)],
        }
        ctimes = time_interleaved({k: (f, 5) for k, f in copies.items()}, device, sz.warmup, sz.repeats)
        out["copy_ms"] = {k: rounded(median(v) * 1e3, 4) for k, v in ctimes.items()}
    del trainers
    return out


def _md_options(sec: dict) -> list[str]:
    lines = [
        "## 1c. Speed options of a training step",
        "",
        f"`Trainer.train_batch` on a {'x'.join(map(str, sec['batch']))} batch of in-memory samples (the copy to the",
        f"device, GIN, forward, loss, backward, AdamW{'; AMP' if sec['amp'] else ''}) against the same step with the",
        "model's weights channels-last and, on CUDA, without AMP; timed in turns, ratios per turn.",
        "",
        "| variant | step (ms) | vs Trainer |",
        "|---|---|---|",
    ]
    for name, ms in sec["step_ms"].items():
        lines.append(f"| {name} | {ms:.1f} | {sec['vs_trainer'][name]:.3f} |")
    if sec.get("copy_ms"):
        lines += ["", "Copy of one batch to the GPU:", "", "| copy | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in sec["copy_ms"].items()]
    return lines + [""]


def _fit(rounds: list[int], walls: list[float]) -> tuple[float | None, float | None]:
    """Least-squares wall = fixed + rounds * per_round; None without two distinct round counts."""
    import numpy as np

    if len(set(rounds)) < 2:
        return None, None
    slope, intercept = np.polyfit(np.asarray(rounds, float), np.asarray(walls, float), 1)
    return float(intercept), float(slope)


def _pooled_ratio(runs: list[dict], rounds: int) -> float | None:
    """FLARE / plain at ``rounds``: summed walls of every pair measured at that round count."""
    pairs = [x for x in runs if x["rounds"] == rounds]
    if not pairs:
        return None
    return sum(x["flare"]["wall_s"] for x in pairs) / sum(x["plain"]["wall_s"] for x in pairs)


def _repeat_noise(runs: list[dict], rounds: int) -> float | None:
    """Largest relative difference between two walls of the same work (FLARE or plain) at ``rounds``."""
    spreads = []
    for side in ("flare", "plain"):
        walls = [x[side]["wall_s"] for x in runs if x["rounds"] == rounds]
        if len(walls) > 1:
            spreads.append((max(walls) - min(walls)) / min(walls))
    return max(spreads) if spreads else None


def _resolved(ratio: float | None, noise: float | None) -> bool:
    """Whether a FLARE / plain ratio says anything against the target, given the repeat noise."""
    return ratio is not None and ratio >= 1 and (noise is None or noise < abs(ratio - FL_MAX_RATIO))


def bench_fl(ctx: Context) -> dict:
    """FLARE simulator vs the same training in one plain process, at several round counts."""
    sites = ctx.phantoms()
    runs = []
    for rounds in ctx.sizes.fl_rounds:
        ctx.log(f"  fl: FLARE simulator, {len(sites)} sites, {rounds} rounds ...")
        flare = run_flare(ctx, sites, rounds, ctx.sizes.fl_training, f"fl_flare_r{rounds}")
        ctx.flare_runs.append(flare)
        ctx.log(f"  fl: plain process, {rounds} rounds ...")
        evals = flare["cross_site_evals_per_site"]
        plain = run_plain(ctx, Path(flare["job"]), sites, rounds, f"fl_plain_r{rounds}", cross_evals=evals)
        runs.append({"rounds": rounds, "flare": flare, "plain": plain, "ratio": flare["wall_s"] / plain["wall_s"]})
        ctx.log(f"  fl: {rounds} rounds: FLARE {flare['wall_s']:.1f} s, plain {plain['wall_s']:.1f} s")
    if ctx.sizes.fl_repeat_longest:
        # The longest pair once more, plain first: with the first pair an A-B-B-A order, so a machine
        # that drifts slower or faster over these minutes weighs on FLARE and plain alike.
        first = runs[-1]
        rounds, evals = first["rounds"], first["flare"]["cross_site_evals_per_site"]
        ctx.log(f"  fl: plain process, {rounds} rounds, again (plain first this time) ...")
        plain = run_plain(ctx, Path(first["flare"]["job"]), sites, rounds, f"fl_plain_r{rounds}_b", cross_evals=evals)
        ctx.log(f"  fl: FLARE simulator, {len(sites)} sites, {rounds} rounds, again ...")
        flare = run_flare(ctx, sites, rounds, ctx.sizes.fl_training, f"fl_flare_r{rounds}_b")
        ctx.flare_runs.append(flare)
        ratio = flare["wall_s"] / plain["wall_s"]
        runs.append({"rounds": rounds, "flare": flare, "plain": plain, "ratio": ratio, "plain_first": True})
        ctx.log(f"  fl: {rounds} rounds, again: FLARE {flare['wall_s']:.1f} s, plain {plain['wall_s']:.1f} s")
    r = [x["rounds"] for x in runs]
    f_fixed, f_round = _fit(r, [x["flare"]["wall_s"] for x in runs])
    p_fixed, p_round = _fit(r, [x["plain"]["wall_s"] for x in runs])
    fit = {"flare_fixed_s": f_fixed, "flare_per_round_s": f_round}
    fit.update(plain_fixed_s=p_fixed, plain_per_round_s=p_round)
    overhead = f_round - p_round if f_round is not None else None
    fixed = f_fixed - p_fixed if f_fixed is not None else None
    # The demo's round count is measured when the sizes include it (the default), else extrapolated;
    # with the repeat, from both pairs' summed walls.
    ratio_demo = _pooled_ratio(runs, DEMO_ROUNDS)
    n_demo = sum(x["rounds"] == DEMO_ROUNDS for x in runs)
    demo_source = (
        ("measured" if n_demo == 1 else f"measured, {n_demo} pairs A-B-B-A, summed walls")
        if ratio_demo is not None
        else "extrapolated from the fit"
    )
    if ratio_demo is None and f_fixed is not None and p_fixed + DEMO_ROUNDS * p_round > 0:  # fit may go below 0
        ratio_demo = (f_fixed + DEMO_ROUNDS * f_round) / (p_fixed + DEMO_ROUNDS * p_round)
    ratio_paper = None
    if f_fixed is not None and p_fixed + PAPER_ROUNDS * p_round > 0:
        ratio_paper = (f_fixed + PAPER_ROUNDS * f_round) / (p_fixed + PAPER_ROUNDS * p_round)
    longest = runs[-1]
    plain_rounds = [x["wall_s"] for x in longest["plain"]["rounds"]]
    # How far apart this machine measured the very same work (the repeated pair): a ratio closer to
    # the target than that, below 1 (FLARE does strictly more work than the plain process) or a
    # negative slope difference is noise, not a result.
    noise = _repeat_noise(runs, DEMO_ROUNDS)
    ratio_resolved = _resolved(ratio_demo, noise)
    overhead_resolved = overhead is not None and overhead >= 0
    return {
        "sites": list(sites),
        "training": ctx.sizes.fl_training,
        "runs": runs,
        "fit": {k: rounded(v) for k, v in fit.items()},
        "flare_fixed_startup_s": rounded(fixed),
        "per_round_overhead_s": rounded(overhead),
        "per_round_overhead_met": met(overhead, FL_MAX_ROUND_OVERHEAD_S) if overhead_resolved else None,
        "ratio_measured": rounded(_pooled_ratio(runs, longest["rounds"])),
        "ratio_measured_rounds": longest["rounds"],
        "ratio_demo": rounded(ratio_demo),
        "ratio_demo_source": demo_source,
        "ratio_demo_met": met(ratio_demo, FL_MAX_RATIO) if ratio_resolved else None,
        "repeat_noise": rounded(noise),
        "ratio_paper_rounds": PAPER_ROUNDS,
        "ratio_paper": rounded(ratio_paper),
        "steady_round": {
            "flare_round_s": longest["flare"]["steady_round_s"],
            "flare_slowest_site_task_s": longest["flare"]["slowest_site_task_s"],
            "flare_round_minus_slowest_task_s": longest["flare"]["round_minus_slowest_task_s"],
            "plain_round_s": rounded(median(plain_rounds[1:] or plain_rounds)),
        },
        # Each site's task (validation + epoch) in FLARE, where the sites share the cores, and alone
        # with all cores in the plain process: the difference is the price of sharing, not FLARE's.
        "site_task_s": {
            site: {
                "flare": longest["flare"]["site_task_s"].get(site),
                "plain": rounded(median([x["site_s"][site] for x in longest["plain"]["rounds"][1:]])),
            }
            for site in sites
        },
    }


def bench_poc(ctx: Context) -> dict:
    """The fl section's FLARE run in POC mode: real server and client processes, no simulator."""
    from fedgin.tools.poc import run_poc

    sites, rounds = ctx.phantoms(), ctx.sizes.poc_rounds
    ws = ctx.work / "poc"
    ctx.log(f"  poc: {len(sites)} sites, {rounds} rounds (prepare, start, submit, follow, download, stop) ...")
    start = time.time()
    summary = run_poc(
        JOB_DIR, sites, ws, num_rounds=rounds, executor_overrides=ctx.sizes.fl_training, evaluate_split=None,
        echo=lambda line: ctx.log(f"    poc: {line.strip()}") if "Round" in line else None,
        timeout_s=ctx.sizes.timeout_s,
    )  # fmt: skip
    wall = time.time() - start
    # The server's job log comes with the download; each site's stays in its folder of the POC.
    ev = parse_simulator_log(Path(summary["results"]) / "workspace" / "log.txt")
    for site in sites:
        site_ev = parse_simulator_log(ws / "poc" / "example_project" / "prod_00" / site / summary["job_id"] / "log.txt")
        for k, per_site in site_ev["train_s"].items():
            ev["train_s"].setdefault(k, {}).update(per_site)
        for k, per_site in site_ev["wait_s"].items():
            ev["wait_s"].setdefault(k, {}).update(per_site)
    walls = round_walls(ev)
    steady = {k: w for k, w in walls.items() if k >= 1}
    slowest = _slowest_site(ev, steady)
    share = median(steady[k] - slowest[k] for k in slowest)
    return {
        "rounds": rounds,
        "wall_s": rounded(wall, 2),
        "job_wall_s": rounded(ev["last"] - ev["first"], 2) if ev["first"] else None,
        "steady_round_s": rounded(median(steady.values())),
        "slowest_site_task_s": rounded(median(slowest.values())),
        "round_minus_slowest_task_s": rounded(share),
        "met": met(share, FL_MAX_ROUND_OVERHEAD_S),
    }


def _md_poc(sec: dict) -> list[str]:
    return [
        "## 2b. FL overhead in POC mode",
        "",
        f"The fl section's job, {sec['rounds']} rounds, in FLARE's POC mode: a real server and one client process",
        "per site on this machine, started, fed the job through the admin API, stopped (`fedgin.tools.poc.run_poc`).",
        "No simulator, so none of its fixed sleeps; the sites share the cores as in the simulator.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| whole POC flow: prepare, start, submit, follow, download, stop | {_v(sec['wall_s'], '{:.1f} s')} | | |",
        f"| the job on the server, first to last log line | {_v(sec['job_wall_s'], '{:.1f} s')} | | |",
        f"| steady round | {_v(sec['steady_round_s'], '{:.2f} s')} | | |",
        f"| slowest site's task (validation + epoch) | {_v(sec['slowest_site_task_s'], '{:.2f} s')} | | |",
        f"| FLARE's own share of a steady round | {_v(sec['round_minus_slowest_task_s'], '{:.3f} s')} "
        f"| <= {FL_MAX_ROUND_OVERHEAD_S} s | {_ok(sec['met'])} |",
        "",
    ]


def bench_data(ctx: Context) -> dict:
    """Data loaded once per site per job; rounds/s with and without the cache; peak RSS of a client."""
    sites = ctx.phantoms()
    if not ctx.flare_runs:  # the fl section did not run: one short simulator run for its log and RSS
        ctx.log("  data: FLARE simulator, 2 rounds (for the loads per site and the clients' RSS) ...")
        ctx.flare_runs.append(run_flare(ctx, sites, 2, ctx.sizes.fl_training, "data_flare_r2"))
    flare = ctx.flare_runs[-1]
    loads = {}
    for run in ctx.flare_runs:
        for site, n in run["data_loads_per_site"].items():
            loads[site] = max(loads.get(site, 0), n)
    n = ctx.sizes.data_rounds
    ctx.log(f"  data: plain process, a warm-up round then {2 * n} rounds alternating cached / reloaded data ...")
    plain = run_plain(ctx, Path(flare["job"]), sites, 1 + 2 * n, "data_plain", reload="alternate")
    cached = median(r["wall_s"] for r in plain["rounds"][1:] if not r["reload"])
    reloaded = median(r["wall_s"] for r in plain["rounds"] if r["reload"])
    clients = {}
    for run in ctx.flare_runs:
        for site, mb in run["peak_rss_mb"]["clients"].items():
            clients[site] = max(clients.get(site, 0.0), mb)
    return {
        "loads_per_site_per_job": loads,
        "loaded_once": bool(loads) and all(v == 1 for v in loads.values()),
        "cached_round_s": rounded(cached),
        "reloaded_round_s": rounded(reloaded),
        "rounds_per_s_cached": rounded(1 / cached if cached else None),
        "rounds_per_s_reloaded": rounded(1 / reloaded if reloaded else None),
        "reload_s_per_round": rounded(median(r["load_s"] for r in plain["rounds"] if r["reload"])),
        "site_data_mb": {k: round(v, 1) for k, v in plain["site_data_mb"].items()},
        "peak_rss_mb_per_client": clients,
        "peak_rss_mb_simulator": max((r["peak_rss_mb"]["simulator"] or 0) for r in ctx.flare_runs),
        "peak_rss_mb_plain_process": plain["peak_rss_mb"],
        "plain": plain,
    }


def bench_scale(ctx: Context) -> dict:
    """2, 4, 8 simulated sites in parallel: wall per round and peak RSS per client process."""
    rows = []
    for n in ctx.sizes.scale_sites:
        sites = ctx.scale_phantoms(n)
        ctx.log(f"  scale: FLARE simulator, {n} sites, {ctx.sizes.scale_rounds} rounds ...")
        run = run_flare(ctx, sites, ctx.sizes.scale_rounds, ctx.sizes.scale_training, f"scale_{n}")
        clients = run["peak_rss_mb"]["clients"]
        peak = max(clients.values()) if clients else None
        started = run["breakdown"]
        startup = sum(
            started[k] or 0 for k in ("launch_to_first_log_s", "first_log_to_round0_s", "round0_to_all_sites_ready_s")
        )
        rows.append({
            "sites": n,
            "omp_threads_per_client": run["omp_threads_per_client"],
            "steady_round_s": run["steady_round_s"],
            "startup_until_all_ready_s": rounded(startup, 2),
            "wall_s": rounded(run["wall_s"], 2),
            "peak_rss_mb_client_max": rounded(peak, 1),
            "peak_rss_mb_client_mean": rounded(statistics.mean(clients.values()), 1) if clients else None,
            "peak_rss_mb_simulator": run["peak_rss_mb"]["simulator"],
            "target_client_mb": CLIENT_MAX_RSS_MB,
            "met": met(peak, CLIENT_MAX_RSS_MB),
            "run": run,
        })  # fmt: skip
        ctx.log(f"  scale: {n} sites: {run['steady_round_s']} s per round, peak client RSS {peak} MB")
    return {"training": ctx.sizes.scale_training or "job default (2D, 128 x 128)", "rows": rows}


def bench_infer(ctx: Context) -> dict:
    """Volumes per second of Trainer.predict + Dice (dice_per_volume) on the phantoms' test volumes."""
    import torch
    from fedgin.seg.data.site_data import load_site_data
    from fedgin.seg.site_config import load_site_config
    from fedgin.seg.training import Trainer, dice_per_volume

    sites = ctx.phantoms()
    devices = [torch.device("cpu")] + ([ctx.device] if ctx.device.type == "cuda" else [])
    rows = []
    for name, overrides in (("2d", ctx.sizes.infer_2d), ("3d", ctx.sizes.infer_3d)):
        cfg = train_config(overrides)
        volumes = []
        for path in sites.values():
            site = load_site_config(path)
            data = load_site_data(site, cfg.organs, cfg.spatial_size, cfg.model.spatial_dims, splits=("test",))
            volumes += data.test
        if not volumes:
            raise RuntimeError("the phantom sites have no test volumes")
        for device in devices:
            trainer = Trainer(cfg, device)  # untrained weights: the speed does not depend on them
            ctx.log(f"  infer {name}: {len(volumes)} test volumes on {device} ...")
            dice_per_volume(trainer, volumes[:1])  # warm-up: allocator, kernels, MONAI metric set-up
            passes = time_calls(lambda t=trainer, v=volumes: dice_per_volume(t, v), device, 0, ctx.sizes.infer_repeats)
            per_pass = median(passes)
            rows.append({
                "model": name,
                "spatial_size": list(cfg.spatial_size),
                "device": str(device),
                "amp": trainer.use_amp,
                "volumes": len(volumes),
                "s_per_volume": rounded(per_pass / len(volumes), 4),
                "volumes_per_s": rounded(len(volumes) / per_pass, 3),
                "voxels_per_volume_mean": int(statistics.mean(v.label.numel() for v in volumes)),
            })  # fmt: skip
            ctx.log(f"  infer {name} on {device}: {rows[-1]['volumes_per_s']} volumes/s")
    return {"rows": rows, "weights": "untrained (speed only)"}


# -- report ------------------------------------------------------------------------------------------
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


def _v(value, fmt: str = "{:.3f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _ok(flag) -> str:
    return {True: "met", False: "**not met**", None: "-"}[flag]


def markdown(report: dict) -> str:
    m, s = report["machine"], report["sections"]
    lines = [
        f"# fedgin bench ({report['device']}{', smoke sizes: checks the script, measures nothing' * report['smoke']})",
        "",
        f"{report['started']}; {m['cpu_count']} CPU cores ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
        f"device {m['device']}{' (' + m['device_name'] + ')' if m['device_name'] else ''}; torch {m['torch']}, "
        f"MONAI {m['monai']}, NVFLARE {m['nvflare']}, Python {m['python']}. Load average at start "
        f"{m['load_average_at_start']}, at end {report['load_average_at_end']} (the bench's own processes count: "
        "8 simulated sites at the end of the scale section raise it).",
        "",
        "Medians of repeats after warm-up; ratios compare figures of this one run. Raw numbers: the JSON file.",
        "",
    ]
    # Only the load before the bench started tells of other work on the machine.
    if m["load_average_at_start"][0] >= m["cpu_count"]:
        lines += [
            f"**Warning: the load average was {m['load_average_at_start'][0]:.1f} on {m['cpu_count']} cores when the "
            "bench started: the machine was busy and these timings are not representative** (torch's OpenMP threads "
            "stall when other processes hold the cores; small operations then slow down many-fold).",
            "",
        ]
    for name, section in s.items():
        if "error" in section:
            lines += [f"## {name}", "", f"failed: `{section['error']}`", ""]
            continue
        lines += globals()[f"_md_{name}"](section) + [f"({section['elapsed_s']:.0f} s)", ""]
    return "\n".join(lines)


def _md_gin(sec: dict) -> list[str]:
    lines = [
        "## 1. GIN cost",
        "",
        "Batched `gin_batch` (one grouped conv per layer for the whole batch) against one training step of the",
        "default U-Net on the same batch and device (forward, MarginalDiceCELoss = MONAI DiceCELoss, backward,",
        "AdamW step; AMP on CUDA as in `Trainer`) and against `RandGIN` applied sample by sample in a Python loop.",
        "",
        "GIN (3 calls), the loop and the step take turns; GIN / step is the median of the per-turn ratios.",
        "On CPU the grouped convs run channels-last (oneDNN is ~1.7x faster so for 1-2 channels per group).",
        "",
        "| case | batch | GIN batched (ms) | per-sample loop (ms) | training step (ms) | GIN / step | loop / batched "
        "| target GIN <= 2 % of a step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, c in sec["cases"].items():
        lines.append(
            f"| {case.upper()} | {'x'.join(map(str, c['batch']))} | {c['gin_batched_ms']:.2f} | {c['gin_loop_ms']:.2f} "
            f"| {c['train_step_ms']:.1f} | {c['gin_share_of_step']:.2%} | {c['loop_over_batched']:.1f}x "
            f"| {_ok(c['met'])} |"
        )
    return lines + [""]


def _md_fl(sec: dict) -> list[str]:
    fit = sec["fit"]
    lines = [
        "## 2. FL overhead",
        "",
        f"FLARE simulator, {len(sec['sites'])} phantom sites ({', '.join(sec['sites'])}), 1 local epoch, training "
        f"`{json.dumps(sec['training'])}`, against the same work in one plain process (per round and site: global",
        "weights in, validation score, local epoch, diff, PercentilePrivacy; then the step-weighted average; after",
        "the rounds each site scores the global model as often as FLARE's cross-site validation did). The",
        "simulator runs the sites in parallel processes with all cores each, which take **turns** on the cores",
        "(`fedgin.flare.cpu_turns`: one site computes at a time; `fedgin.tools.cpu_sharing.client_thread_env`);",
        "the plain process trains them **one after the other** with all cores. Both use OpenMP's defaults.",
        "Wall times run from launch to exit.",
        "",
        "| rounds | FLARE wall (s) | plain wall (s) | FLARE / plain |",
        "|---|---|---|---|",
    ]
    for run in sec["runs"]:
        again = " (again, plain first)" if run.get("plain_first") else ""
        lines.append(
            f"| {run['rounds']}{again} | {run['flare']['wall_s']:.1f} | {run['plain']['wall_s']:.1f} "
            f"| {run['ratio']:.3f} |"
        )
    lines += [
        "",
        "Linear fit wall = fixed + rounds x per_round:",
        "",
        "| | fixed (s) | per round (s) |",
        "|---|---|---|",
        f"| FLARE | {_v(fit['flare_fixed_s'], '{:.2f}')} | {_v(fit['flare_per_round_s'])} |",
        f"| plain | {_v(fit['plain_fixed_s'], '{:.2f}')} | {_v(fit['plain_per_round_s'])} |",
        f"| FLARE - plain | {_v(sec['flare_fixed_startup_s'], '{:.2f}')} | {_v(sec['per_round_overhead_s'])} |",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| per-round overhead (fit slope difference) | {_v(sec['per_round_overhead_s'], '{:.3f} s')} | <= "
        f"{FL_MAX_ROUND_OVERHEAD_S} s | {_ok(sec['per_round_overhead_met'])} |",
        f"| FLARE's own share of a steady round (round - last site's wait + task, from the log) "
        f"| {_v(sec['steady_round']['flare_round_minus_slowest_task_s'], '{:.3f} s')} | <= {FL_MAX_ROUND_OVERHEAD_S} s "
        f"| {_ok(met(sec['steady_round']['flare_round_minus_slowest_task_s'], FL_MAX_ROUND_OVERHEAD_S))} |",
        f"| FLARE fixed start-up (fit intercept difference) | {_v(sec['flare_fixed_startup_s'], '{:.1f} s')} | | |",
        *(
            [f"| FLARE / plain, {sec['ratio_measured_rounds']} rounds (measured) | {_v(sec['ratio_measured'])} | | |"]
            if sec["ratio_measured_rounds"] != DEMO_ROUNDS
            else []
        ),
        f"| FLARE / plain, {DEMO_ROUNDS} rounds (demo; {sec['ratio_demo_source']}) | {_v(sec['ratio_demo'])} "
        f"| <= {FL_MAX_RATIO} | {_ok(sec['ratio_demo_met'])} |",
        f"| FLARE / plain, {PAPER_ROUNDS} rounds (the paper's protocol; extrapolated from the fit) "
        f"| {_v(sec.get('ratio_paper'))} | | |",
        "",
    ]
    if sec.get("repeat_noise") is not None:
        lines += [
            f"The same work measured twice ({DEMO_ROUNDS} rounds) took walls up to {sec['repeat_noise']:.1%} apart "
            "on this machine. A target shown '-' is not resolved by this run: the ratio is nearer the target than "
            "that noise, below 1 (FLARE does strictly more work than the plain process), or the slope difference "
            "is negative. Rerun on an idle machine.",
            "",
        ]
    sr, longest = sec["steady_round"], sec["runs"][-1]
    b, p = longest["flare"]["breakdown"], longest["plain"]
    lines += [
        f"Steady rounds (round >= 1) of the {longest['rounds']}-round runs, from the simulator log: a round lasts",
        f"{_v(sr['flare_round_s'], '{:.2f} s')}, the last site to finish needs (its wait for a CPU turn + its task:",
        f"validation + epoch, timed by the executor) {_v(sr['flare_slowest_site_task_s'], '{:.2f} s')}: FLARE's own",
        "share of a round (task dispatch, transfer, aggregation, handing over the turn) is "
        f"{_v(sr['flare_round_minus_slowest_task_s'], '{:.2f} s')}. "
        f"A plain-process round takes {_v(sr['plain_round_s'], '{:.2f} s')}.",
        "",
        "Each site's task (validation + local epoch, without its wait for a CPU turn; median of rounds >= 1), in",
        "FLARE and in the plain process. The difference is what running next to the other site's process costs",
        "(FLARE's threads, caches), not FLARE's task handling.",
        "",
        "| site | FLARE (s) | plain (s) |",
        "|---|---|---|",
        *(
            f"| {site} | {_v(t['flare'], '{:.2f}')} | {_v(t['plain'], '{:.2f}')} |"
            for site, t in sec.get("site_task_s", {}).items()
        ),
        "",
        "Where the fixed time goes:",
        "",
        "| FLARE simulator | s | plain process | s |",
        "|---|---|---|---|",
        "| launch -> first log line (interpreter, FLARE imports, job deploy) | "
        f"{_v(b['launch_to_first_log_s'], '{:.1f}')} "
        f"| launch -> process start | {_v(p['launch_to_process_s'], '{:.1f}')} |",
        f"| first log line -> round 0 started (server start) | {_v(b['first_log_to_round0_s'], '{:.1f}')} "
        f"| process start -> imports done | {_v(p['process_start_to_imports_s'], '{:.1f}')} |",
        f"| round 0 started -> all sites ready (client processes, imports, data load "
        f"{_v(max(b['site_data_load_s'].values(), default=None), '{:.1f}')} s) | "
        f"{_v(b['round0_to_all_sites_ready_s'], '{:.1f}')} | site data load + model build "
        f"| {_v(p['data_load_s'], '{:.1f}')} |",
        f"| round 0 longer than a steady round | {_v(b['round0_extra_s'], '{:.1f}')} | | |",
        f"| training end -> last log line (cross-site validation, shutdown) | "
        f"{_v(b['training_end_to_last_log_s'], '{:.1f}')} | final evaluations | {_v(p['cross_eval_s'], '{:.1f}')} |",
        f"| last log line -> process exit | {_v(b['last_log_to_exit_s'], '{:.1f}')} | done -> exit | "
        f"{_v(p['exit_s'], '{:.1f}')} |",
        "",
    ]
    return lines


def _md_data(sec: dict) -> list[str]:
    loads = ", ".join(f"{k} {v}" for k, v in sec["loads_per_site_per_job"].items())
    clients = ", ".join(f"{k} {v:.0f} MB" for k, v in sec["peak_rss_mb_per_client"].items())
    data_mb = ", ".join(f"{k} {v:.1f} MB" for k, v in sec["site_data_mb"].items())
    return [
        "## 3. Data",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| data loads per site per FLARE job ('site ready' log lines) | {loads} | 1 | {_ok(sec['loaded_once'])} |",
        f"| plain-process rounds/s, data cached (loaded once) | {_v(sec['rounds_per_s_cached'])} "
        f"({_v(sec['cached_round_s'], '{:.2f}')} s/round) | | |",
        f"| plain-process rounds/s, data reloaded every round | {_v(sec['rounds_per_s_reloaded'])} "
        f"({_v(sec['reloaded_round_s'], '{:.2f}')} s/round, of which loading "
        f"{_v(sec['reload_s_per_round'], '{:.2f}')} s) | | |",
        f"| preprocessed data in memory per site (tensors) | {data_mb} | | |",
        f"| peak RSS per client process (FLARE simulator) | {clients} | | |",
        f"| peak RSS of the simulator's server process | {_v(sec['peak_rss_mb_simulator'], '{:.0f} MB')} | | |",
        f"| peak RSS of the plain process (all sites) | {_v(sec['peak_rss_mb_plain_process'], '{:.0f} MB')} | | |",
        "",
        "Cached and reloading rounds alternate in one plain process after a warm-up round (medians of each kind).",
        "",
    ]


def _md_scale(sec: dict) -> list[str]:
    training = sec["training"] if isinstance(sec["training"], str) else f"`{json.dumps(sec['training'])}`"
    lines = [
        "## 4. Scale",
        "",
        f"Simulated sites, half CT half MR, small case counts, training {training}; all sites in parallel,",
        "each with the threads below (`fedgin.tools.cpu_sharing.client_thread_env`). Round wall: median of rounds >= 1",
        "from the simulator log. RSS: peak over 0.2 s samples of each client process (shared libraries included).",
        "",
        "| sites | threads per client | wall per round (s) | start-up until all sites ready (s) | total wall (s) "
        "| peak RSS per client, max / mean (MB) | server RSS (MB) | target <= 1 GB per client |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        lines.append(
            f"| {r['sites']} | {r['omp_threads_per_client']} | {_v(r['steady_round_s'], '{:.2f}')} "
            f"| {_v(r['startup_until_all_ready_s'], '{:.1f}')} | {r['wall_s']:.1f} "
            f"| {_v(r['peak_rss_mb_client_max'], '{:.0f}')} / {_v(r['peak_rss_mb_client_mean'], '{:.0f}')} "
            f"| {_v(r['peak_rss_mb_simulator'], '{:.0f}')} | {_ok(r['met'])} |"
        )
    return lines + [""]


def _md_infer(sec: dict) -> list[str]:
    lines = [
        "## 5. Inference",
        "",
        "`Trainer.predict` + Dice (`dice_per_volume`) over the phantoms' test volumes (2D: slice by slice, batches",
        "of `eval_batch_size`; 3D: the whole resized volume), untrained weights, after one warm-up volume.",
        "",
        "| model | input size | device | volumes | s per volume | volumes/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        lines.append(
            f"| {r['model'].upper()} | {'x'.join(map(str, r['spatial_size']))} | {r['device']}{' (AMP)' * r['amp']} "
            f"| {r['volumes']} | {_v(r['s_per_volume'])} | {_v(r['volumes_per_s'], '{:.2f}')} |"
        )
    return lines + [""]


# -- main --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and rounds: checks the script in minutes")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="where bench_<device>.md/.json go")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--work", default=None, help="work folder (phantoms, FLARE workspaces); default: a temp folder")
    p.add_argument("--keep-work", action="store_true", help="keep the temp work folder")
    p.add_argument("--plain-worker", default=None, help=argparse.SUPPRESS)  # internal: the plain baseline
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        return plain_worker(args.plain_worker)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to torch")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    sizes = SMOKE if args.smoke else Sizes()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fedgin_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, sizes, device, work)
    estimate = sum(ESTIMATE_S["smoke" if args.smoke else "full"][s] for s in args.only)
    ctx.log(
        f"fedgin bench on {device}: sections {','.join(args.only)}{' (smoke sizes)' * args.smoke}; estimated "
        f"~{estimate / 60:.1f} min on 2 idle CPU cores (less on a GPU, more on a busy machine); work in {work}"
    )
    report = {
        "device": device.type,
        "smoke": bool(args.smoke),
        "started": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "sizes": {k: v for k, v in sizes.__dict__.items()},
        "targets": {
            "gin_max_share_of_step": GIN_MAX_SHARE,
            "fl_max_round_overhead_s": FL_MAX_ROUND_OVERHEAD_S,
            "fl_max_ratio_demo": FL_MAX_RATIO,
            "client_max_rss_mb": CLIENT_MAX_RSS_MB,
        },
        "sections": {},
    }
    failed = False
    for name in (s for s in SECTIONS if s in args.only):
        ctx.log(f"section {name} ...")
        start = time.time()
        try:
            result = globals()[f"bench_{name}"](ctx)
        except Exception as e:  # one failed section should not lose the others
            failed = True
            result = {"error": f"{type(e).__name__}: {e}"}
            ctx.log(f"section {name} FAILED: {result['error']}")
        result["elapsed_s"] = round(time.time() - start, 1)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        report["sections"][name] = result
        ctx.log(f"section {name} done in {result['elapsed_s']:.0f} s")
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["elapsed_s"] = round(time.time() - ctx.t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{device.type}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / f"bench_{device.type}.md").write_text(markdown(report))
    ctx.log(f"wrote {out / f'bench_{device.type}.md'} and .json ({report['elapsed_s']:.0f} s in all)")
    if not args.work and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
