"""The size of a weight update, as the aggregator's outlier check and the Gaussian privacy filter measure it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def update_norm(arrays: Mapping) -> float:
    """The L2 norm of all of an update's arrays together, as one flat vector (float64, so huge
    updates do not overflow)."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(a, dtype=np.float64)))) for a in arrays.values()))
