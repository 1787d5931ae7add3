"""Tissue map → CT (Hounsfield units) or MRI intensities.

The two renderings of the same tissue map are deliberately *not* related by a
monotonic function: CT follows contrast-enhanced portal-venous attenuation
(fat dark, bone and enhanced vessels bright), the MRI follows a T2-weighted
(abdomen) or bSSFP (heart) look (fat and fluid bright, flow voids and cortical
bone dark, liver dark, bright blood pool in the heart).  A CT-only model
therefore cannot transfer by intensity alone; it has to rely on shape.

Per case: random jitter of each tissue's value, smooth within-organ texture,
partial-volume blur, then modality noise (Gaussian for CT; multiplicative bias
field + Rician noise for MRI).
"""

from __future__ import annotations

import numpy as np

from fedgin.seg.site_config import normalize_modality

from .anatomy import Tissue
from .fields import SmoothField

__all__ = [
    "CT_HU",
    "MR_T2",
    "MR_BSSFP",
    "tissue_table",
    "render_ct",
    "render_mr",
    "render",
    "MODALITIES",
]

MODALITIES = ("CT", "MR")

T = Tissue
# tissue: (mean HU, per-case jitter SD (HU), texture amplitude (HU, SD))
CT_HU: dict[Tissue, tuple[float, float, float]] = {
    T.AIR: (-1000.0, 0.0, 0.0),
    T.LUNG: (-850.0, 25.0, 35.0),
    T.FAT: (-100.0, 10.0, 12.0),
    T.MUSCLE: (50.0, 6.0, 8.0),
    T.BONE: (650.0, 60.0, 80.0),
    T.MARROW: (230.0, 30.0, 35.0),
    T.DISC: (85.0, 10.0, 8.0),
    T.CSF: (15.0, 5.0, 4.0),
    T.VESSEL: (180.0, 25.0, 5.0),
    T.BOWEL_WALL: (60.0, 10.0, 10.0),
    T.BOWEL_FLUID: (15.0, 8.0, 6.0),
    T.GAS: (-950.0, 20.0, 20.0),
    T.SOFT: (40.0, 8.0, 10.0),
    T.LIVER: (110.0, 12.0, 7.0),
    T.SPLEEN: (120.0, 12.0, 6.0),
    T.KIDNEY_RIGHT: (170.0, 20.0, 12.0),
    T.KIDNEY_LEFT: (170.0, 20.0, 12.0),
    T.PANCREAS: (90.0, 12.0, 12.0),
    T.GALLBLADDER: (10.0, 5.0, 3.0),
    T.BLOOD: (260.0, 40.0, 6.0),
    T.MYOCARDIUM: (100.0, 12.0, 7.0),
}
# CT angiography-like heart scans: vessels enhance like the blood pool
CT_HU_HEART_OVERRIDES = {T.VESSEL: (260.0, 40.0, 6.0)}

# tissue: (mean signal on a 0-1000 scale, relative per-case jitter, relative texture)
MR_T2: dict[Tissue, tuple[float, float, float]] = {
    T.AIR: (0.0, 0.0, 0.0),
    T.LUNG: (25.0, 0.2, 0.2),
    T.FAT: (650.0, 0.08, 0.05),
    T.MUSCLE: (120.0, 0.1, 0.06),
    T.BONE: (40.0, 0.2, 0.2),
    T.MARROW: (420.0, 0.12, 0.08),
    T.DISC: (560.0, 0.12, 0.06),
    T.CSF: (920.0, 0.05, 0.03),
    T.VESSEL: (45.0, 0.3, 0.2),  # flow void
    T.BOWEL_WALL: (280.0, 0.12, 0.08),
    T.BOWEL_FLUID: (850.0, 0.08, 0.05),
    T.GAS: (8.0, 0.3, 0.3),
    T.SOFT: (300.0, 0.12, 0.08),
    T.LIVER: (200.0, 0.1, 0.05),
    T.SPLEEN: (480.0, 0.1, 0.05),
    T.KIDNEY_RIGHT: (560.0, 0.1, 0.07),
    T.KIDNEY_LEFT: (560.0, 0.1, 0.07),
    T.PANCREAS: (330.0, 0.1, 0.08),
    T.GALLBLADDER: (960.0, 0.04, 0.02),
    T.BLOOD: (60.0, 0.3, 0.2),
    T.MYOCARDIUM: (160.0, 0.1, 0.05),
}

# bSSFP cine-like cardiac MRI: bright blood (also in vessels), dark-ish myocardium
MR_BSSFP: dict[Tissue, tuple[float, float, float]] = {
    **MR_T2,
    T.LUNG: (30.0, 0.2, 0.2),
    T.FAT: (720.0, 0.08, 0.05),
    T.MUSCLE: (180.0, 0.1, 0.06),
    T.MARROW: (480.0, 0.12, 0.08),
    T.DISC: (420.0, 0.12, 0.06),
    T.CSF: (880.0, 0.05, 0.03),
    T.VESSEL: (860.0, 0.08, 0.04),
    T.LIVER: (240.0, 0.1, 0.05),
    T.BLOOD: (900.0, 0.06, 0.03),
    T.MYOCARDIUM: (200.0, 0.1, 0.05),
}


def tissue_table(modality: str, task: str) -> dict[Tissue, tuple[float, float, float]]:
    """The (mean, jitter, texture) table used for ``modality`` / ``task``."""
    modality = normalize_modality(modality)
    if modality == "CT":
        table = dict(CT_HU)
        if task == "heart":
            table.update(CT_HU_HEART_OVERRIDES)
        return table
    return dict(MR_BSSFP if task == "heart" else MR_T2)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
_MATERIAL = {T.KIDNEY_LEFT: T.KIDNEY_RIGHT}  # tissues sharing one per-case value


def _case_lut(table, rng, multiplicative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-case jittered mean per tissue code and texture amplitude LUTs."""
    mean = np.zeros(256, dtype=np.float32)
    tex = np.zeros(256, dtype=np.float32)
    draws = {t: rng.standard_normal() for t in sorted(table)}  # fixed draw order
    for t, (m, jit, tx) in table.items():
        z = draws[_MATERIAL.get(t, t)]
        mean[int(t)] = m * (1.0 + jit * z) if multiplicative else m + jit * z
        mean[int(t)] = max(mean[int(t)], 0.0) if multiplicative else mean[int(t)]
        tex[int(t)] = tx
    return mean, tex


def _texture(rng, world: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-SD smooth texture on world points (N, 3) → (N,)."""
    fine = SmoothField.random(rng, dims=1, n_waves=24, amplitude=1.0, wavelength=(8.0, 25.0))
    coarse = SmoothField.random(rng, dims=1, n_waves=8, amplitude=1.0, wavelength=(30.0, 90.0))
    f = fine(world) / np.sqrt((fine.amps**2).sum() / 2) + 0.7 * coarse(world) / np.sqrt((coarse.amps**2).sum() / 2)
    return (f / np.sqrt(1.0 + 0.49)).astype(np.float32)


def _blur3(vol: np.ndarray, weights=((0.25, 0.5, 0.25), (0.25, 0.5, 0.25), (0.2, 0.6, 0.2))) -> np.ndarray:
    """Separable 3-tap blur (edge-replicated): partial-volume effect."""
    out = vol
    for axis, (a, b, c) in enumerate(weights):
        n = out.shape[axis]
        if n < 2:
            continue
        pad = [(0, 0)] * out.ndim
        pad[axis] = (1, 1)
        p = np.pad(out, pad, mode="edge")
        lo, mid, hi = (np.take(p, np.arange(s, s + n), axis=axis) for s in (0, 1, 2))
        out = a * lo + b * mid + c * hi
    return out.astype(np.float32)


# ----------------------------------------------------------------------------
# renderers
# ----------------------------------------------------------------------------
def render_ct(
    tissue: np.ndarray,
    world: np.ndarray,
    rng: np.random.Generator,
    *,
    task: str = "abdomen",
    noise_sd: tuple[float, float] = (10.0, 20.0),
) -> np.ndarray:
    """CT in Hounsfield units, int16.  ``tissue``: uint8 volume; ``world``:
    voxel-centre world coordinates, ``tissue.shape + (3,)``."""
    mean, tex = _case_lut(tissue_table("CT", task), rng, multiplicative=False)
    img = mean[tissue] + tex[tissue] * _texture(rng, world.reshape(-1, 3)).reshape(tissue.shape)
    img = _blur3(img)
    img = img + rng.normal(0.0, rng.uniform(*noise_sd), size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


def render_mr(
    tissue: np.ndarray,
    world: np.ndarray,
    rng: np.random.Generator,
    *,
    task: str = "abdomen",
    noise_frac: tuple[float, float] = (0.01, 0.03),
    bias: tuple[float, float] = (0.2, 0.4),
    gain: tuple[float, float] = (0.6, 1.6),
    dtype=np.int16,
) -> np.ndarray:
    """T2-weighted (abdomen) / bSSFP (heart) MRI with a smooth multiplicative
    bias field and Rician noise, arbitrary positive scale."""
    mean, tex = _case_lut(tissue_table("MR", task), rng, multiplicative=True)
    pts = world.reshape(-1, 3)
    img = mean[tissue] * (1.0 + tex[tissue] * _texture(rng, pts).reshape(tissue.shape))
    img = _blur3(np.maximum(img, 0.0))
    bias_field = SmoothField.random(rng, dims=1, n_waves=4, amplitude=rng.uniform(*bias), wavelength=(250.0, 600.0))
    g = rng.uniform(*gain)
    img = img * (g * np.exp(bias_field(pts))).reshape(tissue.shape).astype(np.float32)
    sigma = rng.uniform(*noise_frac) * 1000.0 * g
    n1 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2**2)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.clip(np.rint(img), 0, np.iinfo(dtype).max).astype(dtype)
    return img.astype(dtype)


def render(
    tissue: np.ndarray, world: np.ndarray, modality: str, rng: np.random.Generator, *, task: str = "abdomen"
) -> np.ndarray:
    if normalize_modality(modality) == "CT":
        return render_ct(tissue, world, rng, task=task)
    return render_mr(tissue, world, rng, task=task)
