"""Dice per organ of one volume, with nnU-Net's convention for organs a volume does not hold.

MONAI's ``DiceMetric(ignore_empty=True)`` leaves an organ unscored whenever the label lacks it, even
when the model paints it all over the volume: false positives on volumes (or sites) without an
organ never count. nnU-Net's convention, followed here: an organ absent from both the label and
the prediction is not scored (NaN); absent from the label but predicted scores 0; otherwise Dice.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import DiceMetric


def organ_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    """(num_classes - 1,) Dice of each organ of one volume.

    Args:
        pred: (1, H, W[, D]) predicted class indices (one channel).
        label: (1, H, W[, D]) the label's class indices.
        num_classes: classes including background (0).

    Raises:
        ValueError: when the prediction and the label differ in shape or have no channel axis.
    """
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.ndim < 3 or pred.shape[0] != 1:
        raise ValueError(f"expected label maps of shape (1, *spatial), got {tuple(pred.shape)}")
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
    # Label maps in, one-hot done per class inside MONAI: a full-size int64 one-hot of a
    # 512 x 512 x 300 CT would take gigabytes. ignore_empty=False: an empty label scores 1 when the
    # prediction is empty too and 0 when it is not; the first case is then made "not scored".
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False, num_classes=num_classes)
    dice = metric(pred[None], label[None])[0].numpy().astype(np.float64)
    organs = torch.arange(1, num_classes)
    in_label = torch.isin(organs, torch.unique(label))
    in_pred = torch.isin(organs, torch.unique(pred))
    dice[(~in_label & ~in_pred).numpy()] = np.nan
    return dice
