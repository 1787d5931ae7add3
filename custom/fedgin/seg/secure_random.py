"""Cryptographically secure draws for differential privacy's noise and sampling ("secure mode").

By default the DP noise and the Poisson sampling come from seeded PRNGs (PyTorch's Philox/MT,
NumPy's PCG64): good statistics and a reproducible run, but a PRNG's stream is determined by its
seed and, for some generators, predictable from enough outputs; and IEEE floating-point Gaussian
samples leak through their low bits (Mironov 2012; Holohan & Braghin 2021,
https://arxiv.org/abs/2107.10138). For a real deployment, secure mode draws every random number
from the operating system's CSPRNG (``os.urandom``) and builds each Gaussian as Opacus's
``secure_mode`` does: the sum of four N(0, std^2) draws divided by two (same std), which makes the
floating-point attack of Holohan & Braghin infeasible (2^159 work). Such a run cannot be
reproduced; that is the point. (Opacus's own secure mode needs ``torchcsprng``, which no longer
builds against current PyTorch.)
"""

from __future__ import annotations

import math
import os

import numpy as np


def secure_uniform(shape) -> np.ndarray:
    """Uniform draws in (0, 1) (float64, 53 random bits each) from ``os.urandom``."""
    n = int(np.prod(shape, dtype=np.int64))
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return ((bits.astype(np.float64) + 0.5) / 2.0**53).reshape(shape)


def _standard_normal(shape) -> np.ndarray:
    """N(0, 1) draws by Box-Muller on two secure uniforms each."""
    u1, u2 = secure_uniform(shape), secure_uniform(shape)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def secure_normal(shape, std: float) -> np.ndarray:
    """N(0, std^2) draws (float64) from ``os.urandom``, each the sum of four draws over two."""
    if std == 0:
        return np.zeros(shape)
    return std * sum(_standard_normal(shape) for _ in range(4)) / 2.0
