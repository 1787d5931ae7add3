"""Helpers for the converter tests: organ blocks of known size, and loading a written site."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fedgin.seg.data.site_data import load_site_data
from fedgin.seg.site_config import load_site_config
from helpers import ABDOMEN

GRID = (16, 16, 6)
SIZE = 64  # training size: every 16 x 16 voxel becomes 4 x 4 = 16 pixels
ORGAN_SLICES = slice(1, 5)  # organs on 4 slices, so they survive the background-slice draw


def block(j: int) -> tuple[slice, slice, slice]:
    """Region of the j-th structure: rows 2j, 2j+1, columns 0..j, on ORGAN_SLICES (8 (j + 1) voxels)."""
    return slice(2 * j, 2 * j + 2), slice(0, j + 1), ORGAN_SLICES


def block_voxels(j: int) -> int:
    return 8 * (j + 1)


def label_volume(ids: list[int], dtype=np.uint8) -> np.ndarray:
    """A label map with id ``ids[j]`` in ``block(j)``."""
    label = np.zeros(GRID, dtype=dtype)
    for j, label_id in enumerate(ids):
        label[block(j)] = label_id
    return label


def image_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-200, 300, GRID).astype(np.int16)


@pytest.fixture
def load_site():
    """``load(config, organs)`` -> (SiteConfig, SiteData with the training split, class -> source voxels)."""

    def load(config: Path, organs=tuple(ABDOMEN)):
        site = load_site_config(config)
        data = load_site_data(site, list(organs), (SIZE, SIZE), 2, splits=("training",))
        labels = data.train.labels
        counts = {int(c): int((labels == c).sum()) // (SIZE // GRID[0]) ** 2 for c in torch.unique(labels) if c > 0}
        return site, data, counts

    return load


@pytest.fixture
def fake():
    """The volume builders above, for the tests (conftest modules are not importable by name)."""
    return SimpleNamespace(
        grid=GRID,
        block=block,
        block_voxels=block_voxels,
        label_volume=label_volume,
        image_volume=image_volume,
    )
