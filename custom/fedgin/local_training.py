"""Training outside FLARE: one site alone (local-only) or several sites pooled (centralized).

Uses the job's own training settings and the same Trainer as the FLARE Executor, so these
baselines differ from the federated runs only in where the data sits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fedgin.data.site_data import TrainSamples, load_site_data
from fedgin.evaluation import evaluate_model, write_json
from fedgin.jobs import job_training_config
from fedgin.report import dice_table
from fedgin.site_config import load_site_config
from fedgin.training import Trainer


def train_local(
    job_dir: str | Path,
    site_configs: Sequence[str | Path],
    out_dir: str | Path,
    epochs: int,
    gin: bool | None = None,
    evaluate_split: str | None = "test",
    eval_site_configs: Sequence[str | Path] | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """Train on the pooled training splits of ``site_configs``; score on each site's split.

    ``eval_site_configs`` (default: ``site_configs``) are the sites scored afterwards, e.g. an
    MRI site for a model trained on CT alone.

    Returns:
        site config stem -> evaluation result (see :func:`fedgin.evaluation.evaluate_model`).
    """
    config = job_training_config(job_dir)
    if gin is not None:
        config.gin.enabled = gin
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for path in site_configs:
        site = load_site_config(path)
        data = load_site_data(
            site, config.organs, config.spatial_size, config.model.spatial_dims, splits=("training",),
            background_slice_fraction=config.background_slice_fraction, seed=config.seed,
        )  # fmt: skip
        parts.append(data.train)
    pooled = TrainSamples.concat(parts, config.num_classes)
    trainer = Trainer(config)
    start = time.time()
    steps = 0
    for epoch in range(epochs):
        stats = trainer.train_epochs(pooled, epochs=1)
        steps += stats["steps"]
        if echo:
            echo(f"  epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f} ({time.time() - start:.0f} s)")
    write_json(out / "train_stats.json", {"steps": steps, "train_s": time.time() - start, "epochs": epochs})
    model_path = out / "model.pt"
    torch.save({"model": trainer.model.state_dict()}, model_path)
    results = {}
    if evaluate_split:
        for path in eval_site_configs or site_configs:
            results[load_site_config(path).site_name or Path(path).stem] = evaluate_model(
                model_path, path, split=evaluate_split, config=config
            )
        write_json(out / "dice.json", results)
        (out / "dice.md").write_text(dice_table(results, title=f"Dice ({evaluate_split} split)"))
        if echo:
            echo(dice_table(results))
    return results
