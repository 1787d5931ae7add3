"""Section infer: volumes per second of `Trainer.predict` + Dice on the phantoms' test volumes (2D and 3D models)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from .common import cell, median, rounded, time_calls, train_config

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
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
            data = load_site_data(
                site,
                cfg.organs,
                cfg.spatial_size,
                cfg.model.spatial_dims,
                splits=("test",),
                pixel_spacing=cfg.pixel_spacing,
            )
            volumes += data.test
        if not volumes:
            raise RuntimeError("the phantom sites have no test volumes")
        for device in devices:
            trainer = Trainer(cfg, device)  # untrained weights: the speed does not depend on them
            ctx.log(f"  infer {name}: {len(volumes)} test volumes on {device} ...")
            dice_per_volume(trainer, volumes[:1])  # warm-up: allocator, kernels, MONAI metric set-up
            passes = time_calls(lambda t=trainer, v=volumes: dice_per_volume(t, v), device, 0, ctx.sizes.infer_repeats)
            per_pass = median(passes)
            rows.append(
                {
                    "model": name,
                    "spatial_size": list(cfg.spatial_size),
                    "device": str(device),
                    "amp": trainer.use_amp,
                    "volumes": len(volumes),
                    "s_per_volume": rounded(per_pass / len(volumes), 4),
                    "volumes_per_s": rounded(len(volumes) / per_pass, 3),
                    "voxels_per_volume_mean": int(statistics.mean(v.label.numel() for v in volumes)),
                }
            )
            ctx.log(f"  infer {name} on {device}: {rows[-1]['volumes_per_s']} volumes/s")
    return {"rows": rows, "weights": "untrained (speed only)"}


def markdown(sec: dict) -> list[str]:
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
            f"| {r['volumes']} | {cell(r['s_per_volume'])} | {cell(r['volumes_per_s'], '{:.2f}')} |"
        )
    return lines + [""]
