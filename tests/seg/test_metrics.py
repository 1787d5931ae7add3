"""Dice per organ with nnU-Net's convention: false positives on a volume without the organ count."""

import math

import pytest
import torch
from fedgin.seg.metrics import organ_dice


def _maps():
    label = torch.zeros(1, 8, 8, 2, dtype=torch.long)
    label[:, :4, :4] = 1  # organ 1 only
    pred = torch.zeros_like(label)
    pred[:, :4, :2] = 1  # half of organ 1
    pred[:, 6:, 6:] = 2  # organ 2, absent from the label
    return pred, label


def test_an_organ_predicted_but_absent_from_the_label_scores_zero():
    pred, label = _maps()
    dice = organ_dice(pred, label, num_classes=4)
    assert dice[0] == pytest.approx(2 * 16 / (16 + 32))
    assert dice[1] == 0.0  # painted where the volume has none: a false positive, scored
    assert math.isnan(dice[2])  # absent from both: not scored


def test_shapes_are_checked():
    pred, label = _maps()
    with pytest.raises(ValueError, match="prediction shape"):
        organ_dice(pred[..., :1], label, 4)
    with pytest.raises(ValueError, match=r"\(1, \*spatial\)"):
        organ_dice(pred[0], label[0], 4)
