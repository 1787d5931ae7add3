#!/usr/bin/env python3
"""Does test-time augmentation help a trained model on real scans? Re-scores saved models.

Each saved model (``fed_ablation.py --save-models``: ``{"model": state_dict, "config": options}``)
is scored on each site's test split, Dice per organ on each volume's original grid:

- ``logits``: the evaluation's own path (slices at the model's input size, logits bilinearly
  interpolated to the volume's grid, argmax);
- ``probs``: the same with the softmax probabilities interpolated instead of the logits;
- ``flip``: probabilities averaged with those of the slice mirrored left-right (its left/right organ
  channels swapped back);
- ``gin4``: probabilities averaged over the slice and 4 GIN draws of it (the training augmentation,
  seeded).

    python bench/tta_eval.py --model M1.pt --model M2.pt --site site-ct=DEV/site-ct.json \\
        --site site-mri=DEV/site-mri.json --out bench/results/tta

Writes ``OUT/results.json`` and ``OUT/report.md`` (mean Dice per site and mode, per model and mean).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "custom"))

from fedgin.seg.config import TrainConfig  # noqa: E402
from fedgin.seg.data.site_data import load_site_data  # noqa: E402
from fedgin.seg.metrics import organ_dice  # noqa: E402
from fedgin.seg.site_config import load_site_config  # noqa: E402
from fedgin.seg.training import Trainer, summarize_dice  # noqa: E402
from fedgin.seg.transforms import gin_batch  # noqa: E402

MODES = {"logits": 0, "probs": 0, "flip": 0, "gin4": 4}


def swap_sides(organs: list[str]) -> list[int]:
    """Channel order that swaps each ``*_left`` organ with its ``*_right`` twin (background first)."""
    order = list(range(len(organs) + 1))
    for i, organ in enumerate(organs):
        if organ.endswith("_left") and organ.replace("_left", "_right") in organs:
            j = organs.index(organ.replace("_left", "_right"))
            order[i + 1], order[j + 1] = j + 1, i + 1
    return order


@torch.no_grad()
def predict(trainer: Trainer, image: torch.Tensor, out_size: tuple, mode: str, seed: int) -> torch.Tensor:
    """Class indices (H, W, D) with the softmax averaged over the mode's views of each slice."""
    trainer.model.eval()
    slices = image.permute(3, 0, 1, 2)  # (D, 1, S, S)
    generator = torch.Generator().manual_seed(seed)
    swap = swap_sides(trainer.config.organs)
    preds = []
    for start in range(0, slices.shape[0], trainer.config.eval_batch_size):
        x = slices[start : start + trainer.config.eval_batch_size]
        if mode == "logits":
            preds.append(F.interpolate(trainer.model(x), size=out_size[:2], mode="bilinear").argmax(1))
            continue
        prob = trainer.model(x).softmax(1)
        views = 1
        for _ in range(MODES[mode]):
            prob += trainer.model(gin_batch(x, generator=generator, **trainer.config.gin.kwargs())).softmax(1)
            views += 1
        if mode == "flip":
            # RAS slices: axis -2 runs left to right; a mirrored left kidney is predicted as the right one.
            flipped = trainer.model(x.flip(-2)).softmax(1).flip(-2)
            prob += flipped[:, swap]
            views += 1
        prob = F.interpolate(prob / views, size=out_size[:2], mode="bilinear")
        preds.append(prob.argmax(1))
    return torch.cat(preds).permute(1, 2, 0)


def score(trainer: Trainer, volumes, organs_present, mode: str) -> dict:
    rows = []
    for i, volume in enumerate(volumes):
        pred = predict(trainer, volume.image, tuple(volume.label.shape[1:]), mode, seed=i)
        rows.append(organ_dice(pred[None], volume.label, trainer.config.num_classes))
    return summarize_dice(np.stack(rows), trainer.config.organs, organs_present)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--site", action="append", required=True, metavar="NAME=SITE_CONFIG")
    p.add_argument("--mode", action="append", choices=list(MODES), default=None)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "tta"))
    args = p.parse_args(argv)
    modes = args.mode or list(MODES)
    results = []
    data = {}
    for path in args.model:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        config = TrainConfig.from_dict(saved["config"])
        if config.pixel_spacing is not None or config.context_slices:
            raise SystemExit(
                f"{path}: test-time augmentation here is for resized 2D slices (no pixel_spacing, no context)"
            )
        trainer = Trainer(config, device="cpu")
        trainer.model.load_state_dict(saved["model"])
        for item in args.site:
            name, site_path = item.split("=", 1)
            key = (name, tuple(config.spatial_size), config.pixel_spacing)
            if key not in data:
                data[key] = load_site_data(
                    load_site_config(site_path),
                    config.organs,
                    config.spatial_size,
                    splits=("test",),
                    pixel_spacing=config.pixel_spacing,
                )
            site = data[key]
            for mode in modes:
                start = time.time()
                dice = score(trainer, site.test, site.scored_organs, mode)
                results.append(
                    {"model": Path(path).name, "site": name, "mode": mode, "test": dice, "seconds": time.time() - start}
                )
                print(
                    f"{Path(path).name} {name} {mode}: {dice['mean_dice']:.4f} ({time.time() - start:.0f} s)",
                    flush=True,
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    sites = sorted({r["site"] for r in results})
    lines = [
        "| model | " + " | ".join(f"{s} {m}" for s in sites for m in modes) + " |",
        "|---|" + "---|" * (len(sites) * len(modes)),
    ]
    for model in dict.fromkeys(r["model"] for r in results):
        cells = [
            next(r["test"]["mean_dice"] for r in results if r["model"] == model and r["site"] == s and r["mode"] == m)
            for s in sites
            for m in modes
        ]
        lines.append(f"| {model} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
