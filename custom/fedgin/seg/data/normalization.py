"""Modality-specific intensity normalization, one small class per scheme (as in nnU-Net v2).

CT intensities are physical (Hounsfield units), so one fixed window fits every scanner; MRI
intensities are arbitrary per scan, so the range comes from each volume's own percentiles.
Both end in [0, 1].
"""

from __future__ import annotations

from monai.transforms import MapTransform, ScaleIntensityRanged, ScaleIntensityRangePercentilesd

from fedgin.seg.site_config import normalize_modality


class CTNormalization:
    """Clip CT to a Hounsfield window (default the abdominal soft-tissue window) and scale to [0, 1]."""

    name = "CT"
    allowed_keys = ("window",)

    def __init__(self, window: tuple[float, float] = (-125.0, 275.0)):
        lo, hi = (float(v) for v in window)
        if not lo < hi:
            raise ValueError(f"CT window must be [low, high] with low < high, got {window}")
        self.window = (lo, hi)

    def transform(self, keys="image") -> MapTransform:
        lo, hi = self.window
        return ScaleIntensityRanged(keys, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)


class MRNormalization:
    """Clip MRI to the volume's own lower/upper percentiles (default 0.5 / 99.5) and scale to [0, 1]."""

    name = "MR"
    allowed_keys = ("percentiles",)

    def __init__(self, percentiles: tuple[float, float] = (0.5, 99.5)):
        lo, hi = (float(v) for v in percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"MR percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        self.percentiles = (lo, hi)

    def transform(self, keys="image") -> MapTransform:
        lo, hi = self.percentiles
        return ScaleIntensityRangePercentilesd(keys, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)


SCHEMES = {"CT": CTNormalization, "MR": MRNormalization}


def normalization_for(modality: str, overrides: dict | None = None):
    """The normalization scheme of ``modality`` ("CT" or "MR", any alias), with the site config's overrides."""
    modality = normalize_modality(modality)
    scheme = SCHEMES[modality]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(scheme.allowed_keys))
    if unknown:
        raise ValueError(f"unknown {modality} normalization key(s) {unknown}; allowed: {list(scheme.allowed_keys)}")
    return scheme(**overrides)
