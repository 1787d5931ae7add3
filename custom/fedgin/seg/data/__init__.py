"""Site data: NIfTI loading, modality normalization, label mapping, 2D slicing and caching."""

from fedgin.seg.data.labels import MapLabelsd
from fedgin.seg.data.normalization import CTNormalization, MRNormalization, normalization_for
from fedgin.seg.data.site_data import EvalVolume, SiteData, TrainSamples, load_site_data

__all__ = [
    "CTNormalization",
    "EvalVolume",
    "MRNormalization",
    "MapLabelsd",
    "SiteData",
    "TrainSamples",
    "load_site_data",
    "normalization_for",
]
