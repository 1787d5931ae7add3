"""Training outside FLARE: one site alone (local-only) or several sites pooled (centralized).

Uses the job's own training settings and the same Trainer as the FLARE Executor, so these
baselines differ from the federated runs only in where the data sits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fedgin.seg.data.site_data import TrainSamples, load_site_data
from fedgin.seg.evaluation import evaluate_model
from fedgin.seg.pooled_domain_norm import DomainNorms, train_domain_epochs
from fedgin.seg.site_config import load_site_config
from fedgin.seg.training import Trainer
from fedgin.tools.dice_table import dice_table
from fedgin.tools.files import write_json
from fedgin.tools.job_folder import job_training_config


def site_label(path: str | Path) -> str:
    """A site's name: ``site_name`` from its config, else the config file's stem."""
    return load_site_config(path).site_name or Path(path).stem


def train_local(
    job_dir: str | Path,
    site_configs: Sequence[str | Path],
    out_dir: str | Path,
    epochs: int,
    evaluate_split: str | None = "test",
    eval_site_configs: Sequence[str | Path] | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """Train on the pooled training splits of ``site_configs``; score on each site's split.

    ``eval_site_configs`` (default: ``site_configs``) are the sites scored afterwards, e.g. an
    MRI site for a model trained on CT alone.

    With ``local_norm`` in the job, each training site gets its own norm weights (DSBN, see
    :mod:`fedgin.seg.pooled_domain_norm`) and ``model_<site>.pt`` per site instead of ``model.pt``; each site
    is scored with its own.

    Returns:
        site name -> evaluation result (see :func:`fedgin.seg.evaluation.evaluate_model`).
    """
    config = job_training_config(job_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = {}
    for path in site_configs:
        site = load_site_config(path)
        data = load_site_data(
            site,
            config.organs,
            config.spatial_size,
            config.model.spatial_dims,
            splits=("training",),
            background_slice_fraction=config.background_slice_fraction,
            seed=config.seed,
            pixel_spacing=config.pixel_spacing,
            context_slices=config.context_slices,
        )
        name = site_label(path)
        if name in parts:
            if config.local_norm:  # each site's norm weights are kept under its name
                raise ValueError(f"{path}: two training sites are both named {name!r}; set site_name in each")
            name = f"{name} ({len(parts) + 1})"
        parts[name] = data.train
    trainer = Trainer(config)
    # local_norm: DSBN-style norm weights per training site (see fedgin.seg.pooled_domain_norm); else one pool.
    norms = DomainNorms(trainer, list(parts)) if config.local_norm else None
    pooled = None if norms else TrainSamples.concat(list(parts.values()), config.num_classes)
    start = time.time()
    steps = 0
    for epoch in range(epochs):
        trainer.start_round(epoch, epochs)
        if norms:
            stats = train_domain_epochs(trainer, parts, norms, epochs=1)
        else:
            stats = trainer.train_epochs(pooled, epochs=1)
        steps += stats["steps"]
        if echo:
            echo(f"  epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f} ({time.time() - start:.0f} s)")
    write_json(out / "train_stats.json", {"steps": steps, "train_s": time.time() - start, "epochs": epochs})
    models = {}
    if norms:
        for name in parts:
            models[name] = out / f"model_{name}.pt"
            torch.save({"model": norms.state_dict(name)}, models[name])
    model_path = out / "model.pt"
    if not norms:
        torch.save({"model": trainer.model.state_dict()}, model_path)
    results = {}
    if evaluate_split:
        for path in eval_site_configs or site_configs:
            name = site_label(path)
            if norms and name not in models:
                raise ValueError(f"{path}: site {name!r} did not train, so it has no norm weights of its own")
            results[name] = evaluate_model(models.get(name, model_path), path, split=evaluate_split, config=config)
        write_json(out / "dice.json", results)
        (out / "dice.md").write_text(dice_table(results, title=f"Dice ({evaluate_split} split)"))
        if echo:
            echo(dice_table(results))
    return results
