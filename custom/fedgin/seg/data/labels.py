"""Map a site's own label ids to the job's class indices (0 = background, i = organs[i-1])."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type


def class_lookup(organs: Sequence[str], site_labels: Mapping[str, Sequence[int]]) -> dict[int, int]:
    """site label id -> class index for the job's ``organs``; organs the site lacks are left out."""
    lookup = {}
    for index, organ in enumerate(organs, start=1):
        for label_id in site_labels.get(organ, ()):
            if label_id in lookup:
                raise ValueError(f"label id {label_id} is given for two organs")
            lookup[int(label_id)] = index
    return lookup


class MapLabelsd(MapTransform):
    """Replace site label ids by class indices; ids not listed (other structures) become background.

    Real label maps carry many structures a job does not segment (TotalSegmentator has >100), so
    unlisted ids are background rather than an error.
    """

    def __init__(self, keys: KeysCollection, lookup: Mapping[int, int], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if not lookup:
            raise ValueError("empty label lookup: the site config names none of the job's organs")
        size = max(lookup) + 1
        self.table = np.zeros(size, dtype=np.uint8)
        for site_id, index in lookup.items():
            self.table[site_id] = index

    def _map(self, label):
        arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        ids = np.rint(arr).astype(np.int64)
        ids = np.where((ids >= 0) & (ids < len(self.table)), ids, 0)
        mapped, *_ = convert_to_dst_type(
            self.table[ids], label, dtype=torch.uint8 if isinstance(label, torch.Tensor) else np.uint8
        )
        return mapped

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._map(d[key])
        return d
