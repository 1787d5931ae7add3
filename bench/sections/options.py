"""Section options: the training step as `Trainer` runs it against channels-last weights and, on CUDA, no AMP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import median, rounded, time_interleaved, train_config

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
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


def markdown(sec: dict) -> list[str]:
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
