"""Score a trained model on a site's volumes: Dice per organ per 3D volume, averaged over volumes."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import load_site_data
from fedgin.seg.site_config import load_site_config
from fedgin.seg.training import Trainer, dice_per_volume, summarize_dice


def load_weights(path: str | Path) -> dict:
    """A state dict from FLARE's ``FL_global_model.pt`` (``{"model": ...}``) or a plain one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict or a dict with key 'model' holding one")
    return {k: v.numpy() for k, v in state.items()}


def evaluate_model(
    model_path: str | Path,
    site_config: str | Path,
    config: TrainConfig,
    split: str = "test",
    device: str | None = None,
) -> dict:
    """Dice per organ (mean over the split's volumes) of a model on one site's data.

    Returns:
        ``{"modality", "split", "n_volumes", "dice": {organ: value}, "mean_dice", "per_volume": [[...]]}``;
        organs the site does not label are left out.
    """
    if split not in ("validation", "test"):
        raise ValueError(f"evaluate the 'validation' or 'test' split, not {split!r}")
    site = load_site_config(site_config)
    data = load_site_data(
        site,
        config.organs,
        config.spatial_size,
        config.model.spatial_dims,
        splits=(split,),
        pixel_spacing=config.pixel_spacing,
    )
    volumes = data.validation if split == "validation" else data.test
    trainer = Trainer(config, device=device)
    trainer.load_saved(load_weights(model_path), source=str(model_path))
    per_volume = dice_per_volume(trainer, volumes)
    summary = summarize_dice(per_volume, config.organs, data.scored_organs)
    dice = {o: summary[f"dice_{o}"] for o in data.scored_organs}
    return {
        "modality": site.modality,
        "split": split,
        "n_volumes": len(volumes),
        "dice": {o: (None if math.isnan(v) else v) for o, v in dice.items()},
        "mean_dice": None if math.isnan(summary["mean_dice"]) else summary["mean_dice"],
        "per_volume": [[None if math.isnan(x) else float(x) for x in row] for row in per_volume.tolist()],
        "organs": list(config.organs),
    }
