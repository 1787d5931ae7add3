"""Section gin: batched GIN against one training step of the default model and against a per-sample loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import GIN_MAX_SHARE, median, met, rounded, time_interleaved, train_config, verdict

if TYPE_CHECKING:
    from .context import Context


def measure(ctx: Context) -> dict:
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


def markdown(sec: dict) -> list[str]:
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
            f"| {verdict(c['met'])} |"
        )
    return lines + [""]
