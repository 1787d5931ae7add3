"""The plain-process baseline: the FL job's training and FedAvg in one Python process, with no FLARE involved."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from .common import BENCH_SCRIPT, rounded
from .processes import RssSampler, child_device

if TYPE_CHECKING:
    from .context import Context


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


def _plain_round(sites: dict, weights: dict, filter_args: dict | None, reload: bool, load) -> tuple[dict, dict]:
    """One round: each site in turn as the executor does it, then the server's step-weighted average of the diffs.

    Returns the new global weights and the round's record (wall time, reload time, each site's timed part).
    """
    start, load_s = time.time(), 0.0
    diffs, site_s = [], {}
    for name, s in sites.items():
        if reload:
            t = time.time()
            s["data"] = load(s["site"], s["cfg"])
            load_s += time.time() - t
        trainer = s["trainer"]
        trainer.set_weights(weights)
        t = time.time()  # the executor's timed part: validation + local epochs
        trainer.evaluate(s["data"].validation, s["data"].scored_organs)
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
    return weights, {"wall_s": wall, "reload": reload, "load_s": load_s, "site_s": site_s}


def _nbytes(data) -> int:
    """Bytes of a site's preprocessed tensors (training samples and validation volumes)."""
    tensors = [data.train.images, data.train.labels] + [t for v in data.validation for t in (v.image, v.label)]
    return sum(t.element_size() * t.nelement() for t in tensors)


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
    from fedgin.tools.job_folder import job_training_config

    imported = time.time()
    spec = json.loads(Path(spec_path).read_text())
    job, device = Path(spec["job"]), torch.device(spec["device"])
    base = job_training_config(job)
    filter_args = percentile_filter_args(job)

    def load(site, cfg):
        return load_site_data(
            site,
            cfg.organs,
            cfg.spatial_size,
            cfg.model.spatial_dims,
            splits=("training", "validation"),
            background_slice_fraction=cfg.background_slice_fraction,
            seed=cfg.seed,
            pixel_spacing=cfg.pixel_spacing,
            context_slices=cfg.context_slices,
        )

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
        reload = spec.get("reload") == "alternate" and r > 0 and r % 2 == 0
        weights, record = _plain_round(sites, weights, filter_args, reload, load)
        records.append({"round": r, **record})
    trained = time.time()
    for name, s in sites.items():
        for _ in range(int(spec.get("cross_evals", {}).get(name, 0))):
            s["trainer"].set_weights(weights)
            s["trainer"].evaluate(s["data"].validation, s["data"].scored_organs)
    done = time.time()

    out = {
        "process_start_to_imports_s": imported - created,
        "data_load_s": loaded - imported,
        "rounds": records,
        "cross_eval_s": done - trained,
        "finite": bool(all(np.isfinite(v).all() for v in weights.values())),
        "site_data_mb": {name: _nbytes(s["data"]) / 2**20 for name, s in sites.items()},
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
    cmd = [sys.executable, str(BENCH_SCRIPT), "--plain-worker", str(spec_path)]
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
