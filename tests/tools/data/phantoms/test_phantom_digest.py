"""Seeded checksums of the phantom generator's tissue maps.

These pin the exact anatomy that ``sample_anatomy`` draws for a few seeds, so
they prove that a refactor of the generator (moving code, splitting functions)
left every random draw unchanged and every phantom bit-identical.  A deliberate
change of the phantoms (new structure, other parameter ranges, another draw
order) must update the pinned values, with a note in the change saying why.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fedgin.tools.data.phantoms import DEFAULT_GRID, make_affine, sample_anatomy
from fedgin.tools.data.phantoms.anatomy import voxel_world_coords

# The CT field of view, sampled coarsely so the test stays fast.
SMALL_GRID = (24, 24, 10)

PINNED_DIGESTS = {
    ("abdomen", 0): "70346e9f1e216586",
    ("abdomen", 1): "6289c87a6c9523f3",
    ("abdomen", 2): "f86a26d064934d1a",
    ("heart", 0): "795523438a87f1cc",
    ("heart", 1): "e06171d32d821903",
    ("heart", 2): "465996f7d82ab343",
}


def tissue_digest(task: str, seed: int) -> str:
    """First 16 hex digits of the SHA-256 of the tissue map of one seeded case on ``SMALL_GRID``."""
    shape, spacing, orientation = DEFAULT_GRID["CT"]
    spacing = tuple(sp * n / m for sp, n, m in zip(spacing, shape, SMALL_GRID, strict=True))
    affine = make_affine(SMALL_GRID, spacing, orientation)
    anatomy = sample_anatomy(task, np.random.default_rng(seed))
    points = voxel_world_coords(SMALL_GRID, affine).reshape(-1, 3)
    tissue = anatomy.tissue_at(points).reshape(SMALL_GRID)
    return hashlib.sha256(np.ascontiguousarray(tissue.astype(np.int16)).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("task,seed", sorted(PINNED_DIGESTS))
def test_phantom_digest_is_pinned(task: str, seed: int):
    assert tissue_digest(task, seed) == PINNED_DIGESTS[task, seed]
