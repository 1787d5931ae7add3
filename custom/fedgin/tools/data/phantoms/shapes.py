"""Geometric shapes in world (mm) coordinates: primitives and their combinations.

Every shape answers two questions about an ``(N, 3)`` array of world points:
``contains(p) -> bool[N]`` and ``bbox() -> (lo, hi)``, an axis-aligned box that
holds every point the shape can contain.  The bounding box lets the anatomy
evaluate each shape only on the voxels that can possibly be inside it, which
keeps phantom generation fast.

Random draws are never made here: the shapes are plain parameter holders; the
anatomy samplers draw their parameters from a ``numpy.random.Generator``. Rotations live in
:mod:`.rotations`, the smooth random fields (deformations, bias, texture) in :mod:`.fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fields import SmoothField
from .rotations import matmul3

__all__ = [
    "Shape",
    "Ellipsoid",
    "Tube",
    "ExtrudedEllipse",
    "Warped",
    "Union",
    "Intersect",
    "Subtract",
    "ZPeriodic",
    "Ribs",
    "Box",
    "masked_contains",
]

_INF = np.float32(1e9)


class Shape:
    """Base class: a set of world points (mm)."""

    def contains(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Ellipsoid(Shape):
    """Ellipsoid with optional low-order radial perturbation.

    Inside ⇔ ``|u| <= 1 + Σ a_k cos(f_k · û + φ_k)`` where ``u`` are the local,
    radius-normalised coordinates and ``û = u / |u|`` the direction, so the
    surface is a smooth random star-shaped deformation of the ellipsoid.
    """

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    lobe_freqs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lobe_amps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lobe_phases: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.float32)
        self.radii = np.asarray(self.radii, dtype=np.float32)
        self.rotation = np.asarray(self.rotation, dtype=np.float32)
        self.lobe_freqs = np.asarray(self.lobe_freqs, dtype=np.float32).reshape(-1, 3)
        self.lobe_amps = np.asarray(self.lobe_amps, dtype=np.float32).reshape(-1)
        self.lobe_phases = np.asarray(self.lobe_phases, dtype=np.float32).reshape(-1)

    @classmethod
    def lobed(
        cls,
        rng: np.random.Generator,
        center,
        radii,
        rotation=None,
        *,
        amount: float = 0.08,
        n_lobes: int = 4,
        max_order: float = 2.5,
    ) -> Ellipsoid:
        """Ellipsoid with a random smooth surface perturbation of relative size
        about ``amount``."""
        d = rng.normal(size=(n_lobes, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        freqs = d * rng.uniform(1.0, max_order, size=(n_lobes, 1))
        amps = rng.uniform(0.3, 1.0, size=n_lobes)
        amps = amount * amps / amps.sum() * 1.5
        phases = rng.uniform(0, 2 * np.pi, size=n_lobes)
        return cls(center, radii, np.eye(3) if rotation is None else rotation, freqs, amps, phases)

    def contains(self, p):
        u = matmul3(p - self.center, self.rotation) / self.radii
        r2 = np.einsum("ij,ij->i", u, u)
        if self.lobe_amps.size == 0:
            return r2 <= 1.0
        r = np.sqrt(r2)
        uhat = u / np.maximum(r, 1e-6)[:, None]
        s = 1.0 + np.einsum("nk,k->n", np.cos(matmul3(uhat, self.lobe_freqs.T) + self.lobe_phases), self.lobe_amps)
        return r <= s

    def bbox(self):
        half = np.sqrt(((self.rotation * self.radii[None, :]) ** 2).sum(axis=1))
        half = half * (1.0 + float(np.abs(self.lobe_amps).sum()))
        return self.center - half, self.center + half


@dataclass
class Tube(Shape):
    """Swept sphere along a polyline with linearly varying radius (a chain of
    capsules).  Used for vessels, pancreas, bowel loops, ribs of the aorta…"""

    points: np.ndarray  # (M, 3)
    radii: np.ndarray  # (M,)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.radii = np.broadcast_to(np.asarray(self.radii, dtype=np.float32), (self.points.shape[0],)).copy()

    def contains(self, p):
        inside = np.zeros(p.shape[0], dtype=bool)
        for a, b, ra, rb in zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:], strict=True):
            ab = b - a
            L2 = float(ab @ ab)
            ap = p - a
            t = np.clip(matmul3(ap, ab) / max(L2, 1e-6), 0.0, 1.0)
            d = ap - t[:, None] * ab
            dist2 = np.einsum("ij,ij->i", d, d)
            r = ra + t * (rb - ra)
            inside |= dist2 <= r * r
        return inside

    def bbox(self):
        r = float(self.radii.max())
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r


@dataclass
class ExtrudedEllipse(Shape):
    """Body-like cylinder along z with a super-elliptic cross-section.

    Semi-axes: ``ax`` (left-right), ``ay_ant`` (anterior half), ``ay_post``
    (posterior half), each scaled by ``1 + g1·z' + g2·z'^2`` (``z' = z / 100``)
    and reduced by ``inset`` mm (so nested layers of ~constant thickness can be
    made from the same outline).  ``center_xy`` drifts linearly with z.
    """

    ax: float
    ay_ant: float
    ay_post: float
    power: float = 2.0
    inset: float = 0.0
    center_xy: tuple[float, float] = (0.0, 0.0)
    drift_xy: tuple[float, float] = (0.0, 0.0)  # mm per 100 mm of z
    g1: float = 0.0
    g2: float = 0.0
    z_range: tuple[float, float] = (-1e9, 1e9)

    def offset(self, inset: float) -> ExtrudedEllipse:
        """Same outline, moved inward by ``inset`` more mm."""
        return ExtrudedEllipse(
            self.ax,
            self.ay_ant,
            self.ay_post,
            self.power,
            self.inset + inset,
            self.center_xy,
            self.drift_xy,
            self.g1,
            self.g2,
            self.z_range,
        )

    def _axes(self, z):
        zz = z / np.float32(100.0)
        s = 1.0 + self.g1 * zz + self.g2 * zz * zz
        ax = np.maximum(self.ax * s - self.inset, 1.0)
        ay_a = np.maximum(self.ay_ant * s - self.inset, 1.0)
        ay_p = np.maximum(self.ay_post * s - self.inset, 1.0)
        cx = self.center_xy[0] + self.drift_xy[0] * zz
        cy = self.center_xy[1] + self.drift_xy[1] * zz
        return ax, ay_a, ay_p, cx, cy

    def contains(self, p):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax, ay_a, ay_p, cx, cy = self._axes(z)
        dy = y - cy
        ny = np.abs(dy) / np.where(dy > 0, ay_a, ay_p)
        nx = np.abs(x - cx) / ax
        inside = nx**self.power + ny**self.power <= 1.0
        return inside & (z >= self.z_range[0]) & (z <= self.z_range[1])

    def bbox(self):
        z0, z1 = max(self.z_range[0], -400.0), min(self.z_range[1], 400.0)
        zs = np.linspace(z0, z1, 33, dtype=np.float32)
        ax, ay_a, ay_p, cx, cy = self._axes(zs)
        lo = np.array([np.min(cx - ax), np.min(cy - ay_p), self.z_range[0]], dtype=np.float32)
        hi = np.array([np.max(cx + ax), np.max(cy + ay_a), self.z_range[1]], dtype=np.float32)
        return lo, hi

    def angle(self, p):
        """Angle of each point around the outline centre: 0 = posterior midline,
        ±π = anterior midline (positive towards +x)."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        _, _, _, cx, cy = self._axes(z)
        return np.arctan2(x - cx, -(y - cy))


@dataclass
class Warped(Shape):
    """``shape`` evaluated at ``p + field(p)``: a smooth local deformation."""

    shape: Shape
    field: SmoothField

    def contains(self, p):
        return self.shape.contains(p + self.field(p))

    def bbox(self):
        lo, hi = self.shape.bbox()
        m = self.field.max_abs
        return lo - m, hi + m


@dataclass
class Union(Shape):
    parts: list

    def contains(self, p):
        out = np.zeros(p.shape[0], dtype=bool)
        for s in self.parts:
            out |= _masked_contains(s, p)
        return out

    def bbox(self):
        boxes = [s.bbox() for s in self.parts]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


@dataclass
class Intersect(Shape):
    parts: list

    def contains(self, p):
        out = np.ones(p.shape[0], dtype=bool)
        for s in self.parts:
            idx = np.flatnonzero(out)
            if idx.size == 0:
                break
            out[idx] = s.contains(p[idx])
        return out

    def bbox(self):
        boxes = [s.bbox() for s in self.parts]
        return np.max([b[0] for b in boxes], axis=0), np.min([b[1] for b in boxes], axis=0)


@dataclass
class Subtract(Shape):
    """``base`` minus every shape in ``holes``."""

    base: Shape
    holes: list

    def contains(self, p):
        out = self.base.contains(p)
        for h in self.holes:
            idx = np.flatnonzero(out)
            if idx.size == 0:
                break
            out[idx] = ~_masked_contains(h, p[idx])
        return out

    def bbox(self):
        return self.base.bbox()


@dataclass
class ZPeriodic(Shape):
    """Points of ``shape`` in slabs ``(z - phase) mod period < width``
    (vertebral discs, segmented structures)."""

    shape: Shape
    period: float
    width: float
    phase: float = 0.0

    def contains(self, p):
        m = np.mod(p[:, 2] - self.phase, self.period) < self.width
        idx = np.flatnonzero(m)
        if idx.size:
            m[idx] = self.shape.contains(p[idx])
        return m

    def bbox(self):
        return self.shape.bbox()


@dataclass
class Ribs(Shape):
    """Rib cross-sections in the chest/abdominal wall.

    Bone lies in the shell between ``inner`` and ``outer`` where the rib
    centre-line, which runs from the spine (angle 0) around to the front while
    dropping by ``drop`` mm, passes within ``thickness / 2`` of the point.  The
    anterior ``gap`` (radians either side of the front midline) is left free
    (costal cartilage / sternum region).  Only ``z_range`` carries ribs.
    """

    inner: ExtrudedEllipse
    outer: ExtrudedEllipse
    period: float = 34.0
    thickness: float = 10.0
    drop: float = 70.0
    phase: float = 0.0
    gap: float = 0.45
    spine_gap: float = 0.25
    z_range: tuple[float, float] = (-1e9, 1e9)

    def contains(self, p):
        z = p[:, 2]
        ang = np.abs(self.inner.angle(p))  # 0 posterior … π anterior
        zr = z + self.drop * (ang / np.pi) - self.phase
        m = np.mod(zr, self.period) < self.thickness
        m &= (ang < np.pi - self.gap) & (ang > self.spine_gap)
        m &= (z >= self.z_range[0]) & (z <= self.z_range[1])
        idx = np.flatnonzero(m)
        if idx.size:
            q = p[idx]
            m[idx] = self.outer.contains(q) & ~self.inner.contains(q)
        return m

    def bbox(self):
        lo, hi = self.outer.bbox()
        lo = lo.copy()
        hi = hi.copy()
        lo[2] = max(lo[2], self.z_range[0])
        hi[2] = min(hi[2], self.z_range[1])
        return lo, hi


@dataclass
class Box(Shape):
    """Axis-aligned box (use ±inf for half-spaces, e.g. the gas level)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def contains(self, p):
        lo = np.asarray(self.lo, dtype=np.float32)
        hi = np.asarray(self.hi, dtype=np.float32)
        return np.all((p >= lo) & (p <= hi), axis=1)

    def bbox(self):
        lo = np.clip(np.asarray(self.lo, dtype=np.float32), -_INF, _INF)
        hi = np.clip(np.asarray(self.hi, dtype=np.float32), -_INF, _INF)
        return lo, hi


def _masked_contains(shape: Shape, p: np.ndarray) -> np.ndarray:
    """``shape.contains`` evaluated only for points inside its bounding box."""
    lo, hi = shape.bbox()
    m = p[:, 0] >= lo[0]
    m &= p[:, 0] <= hi[0]
    for a in (1, 2):
        m &= p[:, a] >= lo[a]
        m &= p[:, a] <= hi[a]
    idx = np.flatnonzero(m)
    if idx.size:
        m[idx] = shape.contains(p[idx])
    return m


def masked_contains(shape: Shape, p: np.ndarray) -> np.ndarray:
    """Public alias of the bounding-box accelerated ``contains``."""
    return _masked_contains(shape, p)
