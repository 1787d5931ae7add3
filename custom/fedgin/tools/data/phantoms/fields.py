"""Smooth random fields in world (mm) coordinates: sums of random plane waves, used as displacement
fields (organ deformations), bias fields and texture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rotations import matmul3

__all__ = ["SmoothField"]


@dataclass
class SmoothField:
    """Sum of random plane waves: ``f(p) = sum_k a_k * cos(2π k_k·p + φ_k)``.

    With ``dims`` > 1 it is a vector field (one independent sum per component),
    used as a low-frequency displacement field; with ``dims`` == 1 a scalar
    field (bias field, texture).  ``amplitude`` bounds ``|f|`` per component.
    """

    freqs: np.ndarray  # (dims, K, 3) cycles / mm
    amps: np.ndarray  # (dims, K)
    phases: np.ndarray  # (dims, K)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        *,
        dims: int = 3,
        n_waves: int = 6,
        amplitude: float = 5.0,
        wavelength: tuple[float, float] = (120.0, 300.0),
        anisotropy: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> SmoothField:
        """Random field whose components have RMS ``amplitude / 2`` and whose
        wavelengths lie in ``wavelength`` (mm).  ``anisotropy`` scales the
        frequency per world axis (e.g. ``(1, 1, 0.5)`` = smoother along z)."""
        direction = rng.normal(size=(dims, n_waves, 3))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-12
        lam = rng.uniform(wavelength[0], wavelength[1], size=(dims, n_waves, 1))
        freqs = direction / lam * np.asarray(anisotropy, dtype=np.float64)
        w = rng.uniform(0.5, 1.0, size=(dims, n_waves))
        amps = amplitude * w / w.sum(axis=1, keepdims=True)
        phases = rng.uniform(0.0, 2.0 * np.pi, size=(dims, n_waves))
        return cls(freqs.astype(np.float32), amps.astype(np.float32), phases.astype(np.float32))

    @property
    def dims(self) -> int:
        return int(self.freqs.shape[0])

    @property
    def max_abs(self) -> float:
        return float(np.abs(self.amps).sum(axis=1).max()) if self.amps.size else 0.0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """``p``: (N, 3) → (N, dims) float32 (or (N,) when ``dims`` == 1)."""
        p = np.asarray(p, dtype=np.float32)
        out = np.zeros((p.shape[0], self.dims), dtype=np.float32)
        two_pi = np.float32(2.0 * np.pi)
        for d in range(self.dims):
            arg = matmul3(p, (two_pi * self.freqs[d]).T) + self.phases[d]  # (N, K)
            out[:, d] = np.einsum("nk,k->n", np.cos(arg), self.amps[d])
        return out[:, 0] if self.dims == 1 else out
