"""Rotations of world points (mm): rotation matrices, an orthonormal frame from an axis, and the
element-wise product of an ``(N, 3)`` point array with a matrix that the shapes and fields use."""

from __future__ import annotations

import numpy as np

__all__ = ["matmul3", "rotation_matrix", "frame_from_axis"]


def matmul3(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``p @ m`` for ``p`` of shape (N, 3), computed element-wise.

    Avoids multi-threaded BLAS for these skinny products: no thread
    over-subscription when cases are generated in parallel processes, and
    results that do not depend on the BLAS build or its thread count.
    """
    m = np.asarray(m, dtype=p.dtype)
    if m.ndim == 1:
        return p[:, 0] * m[0] + p[:, 1] * m[1] + p[:, 2] * m[2]
    return p[:, 0:1] * m[0] + p[:, 1:2] * m[1] + p[:, 2:3] * m[2]


def rotation_matrix(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation (radians) about x, then y, then z.  Columns are the rotated
    local axes expressed in world coordinates."""
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def frame_from_axis(axis, hint) -> np.ndarray:
    """Orthonormal frame whose first column is ``axis`` and whose second column
    is ``hint`` made orthogonal to it."""
    e1 = np.asarray(axis, dtype=np.float64)
    e1 = e1 / np.linalg.norm(e1)
    h = np.asarray(hint, dtype=np.float64)
    e2 = h - e1 * (h @ e1)
    e2 = e2 / np.linalg.norm(e2)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=1)
