"""Section families: one full training step per augmentation family, against no augmentation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import median, rounded, time_calls, train_config

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
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


def markdown(sec: dict) -> list[str]:
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
