"""Segment a new scan with a trained model, on the scan's own grid.

The same preprocessing as training and evaluation (:func:`fedgin.seg.data.site_data.image_transforms`:
load, RAS, the modality's normalization; then onto the model's grid, :class:`fedgin.seg.data.geometry.ModelGrid`)
and the same inference (:meth:`fedgin.seg.training.Trainer.predict`: resized slices' probabilities
interpolated to the RAS grid, or a sliding window over resampled slices inverted to it; argmax);
then the label map is turned back from RAS into the file's own orientation, so it has the input's
shape and affine. Its Dice against a label is what ``evaluate`` reports for the same model.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation

from fedgin.seg.config import TrainConfig
from fedgin.seg.data.geometry import ModelGrid
from fedgin.seg.data.site_data import image_transforms, load_case
from fedgin.seg.training import Trainer


class Segmenter:
    """A trained model ready to segment scans of one job.

    Args:
        config: the job's training options (model, input size, organs).
        weights: the model's state dict (numpy arrays or tensors).
        device: "cpu", "cuda", ... (default: the GPU when there is one; mixed precision there).
        source: where the weights come from (the model file), named in errors.

    Raises:
        ValueError: when the weights do not fit the job's model (naming the keys or shapes).
    """

    def __init__(self, config: TrainConfig, weights: dict, device: str | None = None, source: str = "weights"):
        self.config = config
        self.trainer = Trainer(config, device=device)
        # Every key, a site's own norm weights included (local_norm): a saved model is used whole.
        self.trainer.load_saved({k: np.asarray(v) for k, v in weights.items()}, source=source)
        self.grid = ModelGrid.of(config)
        self.to_model_grid = self.grid.image_transform()

    @property
    def label_names(self) -> dict[int, str]:
        """Label value -> organ name (0 is background)."""
        return {0: "background", **{i + 1: organ for i, organ in enumerate(self.config.organs)}}

    def segment(self, image_path: str | Path, modality: str, normalization: dict | None = None) -> MetaTensor:
        """The label map (1, H, W, D) uint8 of one scan, on the scan's own grid and orientation.

        Raises:
            fedgin.seg.data.site_data.DataError: naming the file, when it is not a readable 3D
                NIfTI image with finite values.
        """
        case = load_case({"image": str(image_path)}, image_transforms(modality, normalization))
        ras = case["image"]  # (1, H, W, D), RAS
        model_input = self.to_model_grid({"image": ras})["image"]
        if self.grid.resamples:
            classes = self.trainer.predict_on_grid(model_input, self.grid, tuple(ras.shape[1:]))
        else:
            classes = self.trainer.predict_image(model_input.as_tensor().float(), tuple(ras.shape[1:]))
        meta = {k: v for k, v in ras.meta.items() if k != "affine"}
        mask = MetaTensor(classes[None].to(torch.uint8), affine=ras.affine, meta=meta)
        original = np.asarray(ras.meta.get("original_affine", ras.affine))
        return Orientation(axcodes="".join(nib.aff2axcodes(original)), labels=None)(mask)


def organ_volumes_ml(mask: MetaTensor, label_names: dict[int, str]) -> dict[str, float]:
    """Volume in millilitres of every organ in a label map (voxel count x voxel volume)."""
    affine = np.asarray(mask.affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    counts = torch.bincount(mask.as_tensor().flatten().long(), minlength=len(label_names))
    return {name: float(counts[value]) * voxel_ml for value, name in label_names.items() if value > 0}
