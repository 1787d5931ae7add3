"""Random anatomy in world coordinates → tissue label map.

World coordinates are millimetres in nibabel's RAS+ convention:
``+x`` = towards the patient's **Right**, ``+y`` = **Anterior**, ``+z`` =
**Superior**.  So the liver sits at positive x, the spleen at negative x, the
spine at negative y.

An :class:`Anatomy` is an ordered list of :class:`Layer` objects (tissue +
shape, optionally clipped to a region).  Later layers overwrite earlier ones,
so organs drawn later carve out organs drawn earlier in a fixed priority and
labelled organs can never overlap.  A case is drawn in a canonical "body"
frame; a random pose (small rotation + translation) and a smooth
low-frequency displacement field map world points into that frame, so every
case has its own position, orientation and non-rigid deformation on top of
the per-organ random size, position and surface shape.

Because the tissue at a world point does not depend on the voxel grid,
any resolution / orientation / field of view samples the same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .fields import SmoothField
from .rotations import matmul3, rotation_matrix
from .shapes import ExtrudedEllipse, Shape, Tube, Union, ZPeriodic, masked_contains

__all__ = [
    "Tissue",
    "TASKS",
    "ORGANS",
    "ORGAN_TISSUES",
    "Layer",
    "Anatomy",
    "sample_anatomy",
    "sample_abdomen",
    "sample_heart",
    "voxel_world_coords",
    "tissue_to_label",
]


class Tissue(IntEnum):
    """Tissue classes of the phantom (what is rendered; labels derive from it)."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4  # cortical bone
    MARROW = 5  # cancellous bone / marrow
    DISC = 6  # intervertebral disc, costal cartilage
    CSF = 7  # spinal canal
    VESSEL = 8  # aorta, IVC, portal / splenic / mesenteric vessels
    BOWEL_WALL = 9
    BOWEL_FLUID = 10
    GAS = 11  # bowel / stomach gas
    SOFT = 12  # unlabelled soft tissue (oesophagus, mediastinum, adrenals...)
    LIVER = 13
    SPLEEN = 14
    KIDNEY_RIGHT = 15
    KIDNEY_LEFT = 16
    PANCREAS = 17
    GALLBLADDER = 18
    BLOOD = 19  # cardiac blood pool
    MYOCARDIUM = 20


TASKS = ("abdomen", "heart")

#: Organ names used by the project, in the project's canonical order.
ORGANS: dict[str, list[str]] = {
    "abdomen": ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "gallbladder"],
    "heart": ["heart"],
}

#: Which tissues make up each labelled organ, per task.
ORGAN_TISSUES: dict[str, dict[str, tuple[Tissue, ...]]] = {
    "abdomen": {
        "liver": (Tissue.LIVER,),
        "spleen": (Tissue.SPLEEN,),
        "kidney_right": (Tissue.KIDNEY_RIGHT,),
        "kidney_left": (Tissue.KIDNEY_LEFT,),
        "pancreas": (Tissue.PANCREAS,),
        "gallbladder": (Tissue.GALLBLADDER,),
    },
    "heart": {"heart": (Tissue.BLOOD, Tissue.MYOCARDIUM)},
}


@dataclass
class Layer:
    tissue: Tissue
    shape: Shape
    within: Shape | None = None  # clip region (e.g. the abdominal cavity)
    name: str = ""


@dataclass
class Anatomy:
    """A sampled patient: layers in a canonical body frame plus a pose and a
    smooth deformation mapping world (RAS mm) points into that frame."""

    task: str
    body: Shape
    layers: list[Layer]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    deformation: SmoothField | None = None
    info: dict = field(default_factory=dict)

    def to_body_frame(self, points: np.ndarray) -> np.ndarray:
        """World (RAS mm) → canonical body frame (pose removed, deformation applied)."""
        q = matmul3(
            np.asarray(points, dtype=np.float32) - self.translation.astype(np.float32), self.rotation.astype(np.float32)
        )
        if self.deformation is not None:
            q = q + self.deformation(q)
        return q

    def tissue_at(self, points: np.ndarray) -> np.ndarray:
        """Tissue code (uint8) at each world point of an ``(N, 3)`` array."""
        q = self.to_body_frame(points)
        out = np.zeros(q.shape[0], dtype=np.uint8)
        inside = np.flatnonzero(masked_contains(self.body, q))
        if inside.size == 0:
            return out
        qb = q[inside]
        sub = np.zeros(inside.size, dtype=np.uint8)
        clip_cache: dict[int, np.ndarray] = {}
        for layer in self.layers:
            m = masked_contains(layer.shape, qb)
            if layer.within is not None:
                key = id(layer.within)
                if key not in clip_cache:
                    clip_cache[key] = masked_contains(layer.within, qb)
                m &= clip_cache[key]
            sub[m] = np.uint8(layer.tissue)
        out[inside] = sub
        return out

    def tissue_map(self, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Tissue codes sampled at the voxel centres of a grid (``shape``,
        ``affine`` voxel → world RAS mm)."""
        pts = voxel_world_coords(shape, affine)
        return self.tissue_at(pts.reshape(-1, 3)).reshape(shape)


def voxel_world_coords(shape, affine) -> np.ndarray:
    """World (RAS mm) coordinates of every voxel centre: ``shape + (3,)`` float32."""
    affine = np.asarray(affine, dtype=np.float64)
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    xyz = matmul3(ijk.reshape(-1, 3), affine[:3, :3].T).reshape(ijk.shape) + affine[:3, 3]
    return xyz.astype(np.float32)


def tissue_to_label(tissue: np.ndarray, task: str, label_ids: dict[str, int]) -> np.ndarray:
    """Organ label map from a tissue map, using this site's label ids."""
    max_id = max(label_ids.values()) if label_ids else 0
    dtype = np.uint8 if max_id <= 255 else np.int16
    lut = np.zeros(256, dtype=dtype)
    for organ, tissues in ORGAN_TISSUES[task].items():
        if organ not in label_ids:
            continue
        for t in tissues:
            lut[int(t)] = label_ids[organ]
    return lut[tissue]


def sample_anatomy(task: str, rng: np.random.Generator) -> Anatomy:
    if task == "abdomen":
        return sample_abdomen(rng)
    if task == "heart":
        return sample_heart(rng)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# ----------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------
def _pose(rng: np.random.Generator, shift_xy: float = 12.0, shift_z: float = 12.0):
    rot = rotation_matrix(
        np.deg2rad(rng.uniform(-3, 3)), np.deg2rad(rng.uniform(-3, 3)), np.deg2rad(rng.uniform(-5, 5))
    )
    t = np.array([rng.uniform(-shift_xy, shift_xy), rng.uniform(-shift_xy, shift_xy), rng.uniform(-shift_z, shift_z)])
    return rot, t


def _body_wall(rng: np.random.Generator, scale: float, *, ax, ay_ant, ay_post, g1, g2):
    u = rng.uniform
    body = ExtrudedEllipse(
        ax=ax * scale,
        ay_ant=ay_ant * scale,
        ay_post=ay_post * scale,
        power=u(2.0, 2.5),
        drift_xy=(u(-5, 5), u(-6, 6)),
        g1=g1,
        g2=g2,
    )
    t_fat = u(7.0, 28.0)
    t_mus = u(7.0, 12.0)
    muscle = body.offset(t_fat)
    cavity = body.offset(t_fat + t_mus)
    return body, muscle, cavity, t_fat, t_mus


@dataclass
class _Spine:
    layers: list
    block: Shape  # everything posterior structures occupy (excluded from the cavity)
    y_body: float  # y of the vertebral body centre
    r_body: float
    y_canal: float


def _spine(
    rng: np.random.Generator, scale: float, y_body: float, muscle: Shape, radius: tuple[float, float] = (16.0, 21.0)
) -> _Spine:
    u = rng.uniform
    r = u(*radius) * scale
    drift = (0.0, u(-8, 8))
    vb = ExtrudedEllipse(ax=1.15 * r, ay_ant=r, ay_post=0.85 * r, power=2.2, center_xy=(0.0, y_body), drift_xy=drift)
    marrow = vb.offset(3.0)
    period = u(31.0, 37.0) * scale
    phase = u(0, period)
    disc = ZPeriodic(vb.offset(1.0), period=period, width=u(7.0, 10.0), phase=phase)
    y_canal = y_body - 0.85 * r - u(9.0, 12.0)
    arch = ExtrudedEllipse(ax=u(15, 19), ay_ant=u(10, 13), ay_post=u(14, 17), center_xy=(0.0, y_canal), drift_xy=drift)
    canal = ExtrudedEllipse(ax=u(8, 10), ay_ant=u(7, 9), ay_post=u(7, 9), center_xy=(0.0, y_canal), drift_xy=drift)
    spinous = ExtrudedEllipse(
        ax=u(4, 6), ay_ant=20.0, ay_post=20.0, center_xy=(0.0, y_canal - u(28, 34)), drift_xy=drift
    )
    transverse = ZPeriodic(
        ExtrudedEllipse(ax=u(34, 42), ay_ant=6.0, ay_post=6.0, center_xy=(0.0, y_canal + 4.0), drift_xy=drift),
        period=period,
        width=u(12, 16),
        phase=phase + 0.5 * period,
    )
    para_w, para_h = u(20, 26) * scale, u(22, 30) * scale
    paraspinal = [
        ExtrudedEllipse(
            ax=para_w,
            ay_ant=para_h * 0.8,
            ay_post=para_h,
            power=2.2,
            center_xy=(sx * (para_w + 4.0), y_canal - 12.0),
            drift_xy=drift,
        )
        for sx in (-1.0, 1.0)
    ]
    layers = [
        Layer(Tissue.MUSCLE, Union(paraspinal), within=muscle, name="paraspinal"),
        Layer(Tissue.BONE, vb, name="vertebral_body"),
        Layer(Tissue.MARROW, marrow, name="marrow"),
        Layer(Tissue.DISC, disc, name="disc"),
        Layer(Tissue.BONE, Union([arch, spinous, transverse]), within=muscle, name="posterior_elements"),
        Layer(Tissue.CSF, canal, name="canal"),
    ]
    block = Union([vb.offset(-3.0), arch.offset(-3.0), spinous, transverse, *paraspinal])
    return _Spine(layers, block, y_body, r, y_canal)


def _tube_path(rng, p0, p1, n=4, wobble=8.0):
    pts = np.linspace(np.asarray(p0, float), np.asarray(p1, float), n)
    pts[1:-1] += rng.normal(0, wobble, size=(n - 2, 3))
    return pts


def _bowel_loops(
    rng: np.random.Generator, n: int, lo, hi, cavity: Shape, radius=(9.0, 16.0), gas_prob=0.3
) -> list[Layer]:
    """Unlabelled bowel clutter: tubes with a wall and fluid / gas content."""
    layers = []
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    for _ in range(n):
        start = rng.uniform(lo, hi)
        pts = [start]
        for _ in range(int(rng.integers(2, 5))):
            step = rng.normal(0, 1, 3)
            step[2] *= 0.6
            step = step / np.linalg.norm(step) * rng.uniform(25, 50)
            pts.append(np.clip(pts[-1] + step, lo, hi))
        pts = np.array(pts)
        r = rng.uniform(*radius)
        wall = Tube(pts, r)
        content = Tube(pts, max(r - rng.uniform(2.5, 4.0), 2.0))
        layers.append(Layer(Tissue.BOWEL_WALL, wall, within=cavity, name="bowel_wall"))
        c = rng.uniform()
        if c < gas_prob:
            tissue = Tissue.GAS
        elif c < gas_prob + 0.2:
            tissue = Tissue.SOFT  # collapsed loop / stool
        else:
            tissue = Tissue.BOWEL_FLUID
        layers.append(Layer(tissue, content, within=cavity, name="bowel_content"))
    return layers


@dataclass(frozen=True)
class BodyFrame:
    """Shared geometry of one case that every organ / structure helper builds on."""

    s: float  # patient size scale
    body: ExtrudedEllipse  # skin outline
    muscle: ExtrudedEllipse  # outer surface of the muscular wall
    cav: ExtrudedEllipse  # inner surface of the wall (the whole body cavity)
    cavity: Shape  # where viscera may lie: the cavity minus the spine (and posterior wall)
    cav_ax: float  # half-width of the cavity
    cav_ay: float  # anterior half-depth of the cavity
    y_body: float  # y of the vertebral body centre
    y_front: float  # y of the anterior surface of the vertebral body
    spine: _Spine
    t_fat: float  # subcutaneous fat thickness
    t_mus: float  # muscular wall thickness


# The per-task samplers build on the shared pieces above; they are imported last
# so that their modules can import this (by then fully defined) module.
from .abdomen import sample_abdomen  # noqa: E402
from .heart import sample_heart  # noqa: E402
