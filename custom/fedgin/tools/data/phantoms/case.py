"""One phantom case in memory: grid (affine) + anatomy + rendering + label."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedgin.seg.site_config import normalize_modality

from .anatomy import ORGANS, TASKS, sample_anatomy, tissue_to_label, voxel_world_coords
from .render import render

__all__ = [
    "LABEL_IDS",
    "DEFAULT_GRID",
    "normalize_modality",
    "make_affine",
    "make_case",
]

#: Label ids per task and modality, as found in the public data sets the
#: phantom sites imitate (BTCV for abdominal CT, CHAOS for abdominal MRI,
#: MM-WHS-like values for the heart).
LABEL_IDS: dict[str, dict[str, dict[str, int]]] = {
    "abdomen": {
        "CT": {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 6, "pancreas": 11},
        "MR": {"liver": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4, "pancreas": 5, "gallbladder": 6},
    },
    "heart": {
        "CT": {"heart": 1},
        "MR": {"heart": 500},
    },
}

#: Default voxel grid per modality: (shape, spacing mm, orientation code).
DEFAULT_GRID: dict[str, tuple[tuple[int, int, int], tuple[float, float, float], str]] = {
    "CT": ((96, 96, 40), (4.0, 4.0, 5.0), "RAS"),
    "MR": ((80, 80, 30), (5.0, 5.0, 6.5), "LPS"),
}

_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def make_affine(shape, spacing, orientation: str = "RAS", center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel → world (RAS+ mm) affine of an axis-aligned grid.

    ``orientation`` is a nibabel axis code (``"RAS"``, ``"LPS"``, ``"PLS"`` …):
    letter *k* is the direction voxel axis *k* increases towards.  The grid is
    centred on ``center`` (world mm).
    """
    code = orientation.upper()
    if len(code) != 3 or any(c not in _AXIS for c in code) or len({_AXIS[c][0] for c in code}) != 3:
        raise ValueError(f"invalid orientation code {orientation!r}")
    aff = np.eye(4)
    for k, c in enumerate(code):
        ax, sign = _AXIS[c]
        aff[:3, k] = 0.0
        aff[ax, k] = sign * float(spacing[k])
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    aff[:3, 3] = np.asarray(center, dtype=np.float64) - aff[:3, :3] @ half
    return aff


def make_case(
    task: str,
    modality: str,
    rng: np.random.Generator,
    shape=None,
    spacing=None,
    label_ids: Mapping[str, int] | None = None,
    orientation: str | None = None,
):
    """Make one random case in memory.

    Returns ``(image, label, affine)``: ``image`` int16 (CT in HU; MR on an
    arbitrary positive scale), ``label`` uint8 (int16 if an id exceeds 255)
    with this site's ids (default :data:`LABEL_IDS` ``[task][modality]``),
    ``affine`` the 4×4 voxel → world RAS+ mm matrix.  Defaults for ``shape``,
    ``spacing`` and ``orientation`` come from :data:`DEFAULT_GRID`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    modality = normalize_modality(modality)
    d_shape, d_spacing, d_orient = DEFAULT_GRID[modality]
    shape = tuple(int(n) for n in (shape or d_shape))
    spacing = tuple(float(s) for s in (spacing or d_spacing))
    orientation = orientation or d_orient
    if label_ids is None:
        label_ids = LABEL_IDS[task][modality]
    unknown = set(label_ids) - set(ORGANS[task])
    if unknown:
        raise ValueError(f"label_ids name organs not in task {task!r}: {sorted(unknown)}")
    ids = [int(v) for v in label_ids.values()]
    if len(set(ids)) != len(ids) or any(not 0 < v <= 32767 for v in ids):
        raise ValueError(f"label ids must be distinct integers in 1..32767, got {dict(label_ids)}")

    affine = make_affine(shape, spacing, orientation)
    anatomy_rng, render_rng = rng.spawn(2)
    anatomy = sample_anatomy(task, anatomy_rng)
    world = voxel_world_coords(shape, affine)
    tissue = anatomy.tissue_at(world.reshape(-1, 3)).reshape(shape)
    image = render(tissue, world, modality, render_rng, task=task)
    label = tissue_to_label(tissue, task, dict(label_ids))
    return image, label, affine
