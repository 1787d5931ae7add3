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

from .shapes import (
    Box,
    Ellipsoid,
    ExtrudedEllipse,
    Intersect,
    Ribs,
    Shape,
    SmoothField,
    Subtract,
    Tube,
    Union,
    Warped,
    ZPeriodic,
    frame_from_axis,
    masked_contains,
    matmul3,
    rotation_matrix,
)

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


# ----------------------------------------------------------------------------
# Abdomen
# ----------------------------------------------------------------------------
def sample_abdomen(rng: np.random.Generator) -> Anatomy:
    """Upper abdomen (≈ T11–L4) with liver, spleen, kidneys, pancreas,
    gallbladder, vessels, spine, bowel and body wall.  z = 0 ≈ L1/L2."""
    u = rng.uniform
    s = u(0.9, 1.1)  # patient size
    body, muscle, cavity_full, t_fat, t_mus = _body_wall(
        rng, s, ax=u(140, 172), ay_ant=u(100, 125), ay_post=u(88, 102), g1=u(0.0, 0.08), g2=u(-0.04, 0.02)
    )
    y_body = -body.ay_post + u(72, 86) * s  # vertebral body centre
    spine = _spine(rng, s, y_body, muscle)
    cav = cavity_full
    # posterior abdominal wall (quadratus lumborum): the kidneys lie against it
    ql_w, ql_h = u(22, 30) * s, u(17, 23) * s
    quadratus = Union(
        [
            ExtrudedEllipse(
                ax=ql_w,
                ay_ant=ql_h,
                ay_post=ql_h * 1.5,
                power=2.2,
                center_xy=(sx * (spine.r_body + u(38, 50) * s), y_body - u(34, 42) * s),
            )
            for sx in (-1.0, 1.0)
        ]
    )
    cavity = Subtract(cav, [spine.block, quadratus])  # where viscera may lie
    cav_ax = cav.ax - cav.inset
    cav_ay = cav.ay_ant - cav.inset
    y_front = spine.y_body + spine.r_body  # anterior surface of the vertebral body

    layers: list[Layer] = [
        Layer(Tissue.FAT, body, name="subcutaneous_fat"),
        Layer(Tissue.MUSCLE, muscle, name="abdominal_wall"),
        Layer(Tissue.FAT, cav, name="visceral_fat"),
        Layer(Tissue.MUSCLE, quadratus, within=muscle, name="quadratus_lumborum"),
    ]
    # Lower ribs (T10-T12 level) around liver and spleen
    layers.append(
        Layer(
            Tissue.BONE,
            Ribs(
                inner=cav.offset(-1.0),
                outer=cav.offset(-min(t_mus, 8.0)),
                period=u(30, 38),
                thickness=u(6, 9),
                drop=u(80, 120),
                phase=u(0, 40),
                gap=u(0.5, 0.9),
                spine_gap=0.35,
                z_range=(u(-5, 25), 1e9),
            ),
            name="ribs",
        )
    )
    # Lung bases in the posterior costophrenic recesses (top of the field of view)
    for sx in (-1.0, 1.0):
        layers.append(
            Layer(
                Tissue.LUNG,
                Ellipsoid.lobed(
                    rng,
                    (sx * u(70, 90), y_body - u(0, 15), u(150, 190)),
                    (u(55, 70), u(55, 75), u(90, 110)),
                    amount=0.05,
                ),
                within=cavity,
                name="lung_base",
            )
        )

    # Bowel clutter: small bowel (mid / lower), colon (flanks + transverse)
    layers += _bowel_loops(
        rng,
        int(rng.integers(14, 22)),
        lo=(-cav_ax + 25, y_front + 10, -130),
        hi=(cav_ax - 25, cav_ay - 12, 10),
        cavity=cavity,
        radius=(10.0, 17.0),
    )
    for sx in (-1.0, 1.0):  # ascending (right) / descending (left) colon
        x = sx * (cav_ax - u(20, 35))
        pts = _tube_path(rng, (x, y_front + u(0, 25), -140), (x, y_front + u(5, 30), u(-10, 20)), n=4)
        r = u(14, 22)
        layers.append(Layer(Tissue.BOWEL_WALL, Tube(pts, r), within=cavity, name="colon"))
        layers.append(
            Layer(Tissue.GAS if u() < 0.5 else Tissue.SOFT, Tube(pts, r - 3.0), within=cavity, name="colon_content")
        )
    zt = u(-30, 0)
    pts = _tube_path(rng, (cav_ax - 30, cav_ay * 0.5, zt), (-cav_ax + 30, cav_ay * 0.5, zt + u(0, 30)), n=5)
    r = u(14, 20)
    layers.append(Layer(Tissue.BOWEL_WALL, Tube(pts, r), within=cavity, name="transverse_colon"))
    layers.append(
        Layer(
            Tissue.GAS if u() < 0.6 else Tissue.BOWEL_FLUID,
            Tube(pts, r - 3.0),
            within=cavity,
            name="transverse_colon_content",
        )
    )

    # Stomach (left upper quadrant, anterior), wall + fluid + anterior gas cap
    st_c = np.array([-u(35, 60), u(15, 45), u(45, 75)])
    st_r = np.array([u(35, 50), u(25, 38), u(38, 55)])
    st_R = rotation_matrix(0, np.deg2rad(u(-25, 5)), np.deg2rad(u(-30, 10)))
    stomach = Ellipsoid.lobed(rng, st_c, st_r, st_R, amount=0.07)
    st_in = Ellipsoid(st_c, st_r - u(3.0, 5.0), st_R, stomach.lobe_freqs, stomach.lobe_amps, stomach.lobe_phases)
    gas_level = st_c[1] + st_r[1] * u(-0.1, 0.6)
    layers += [
        Layer(Tissue.BOWEL_WALL, stomach, within=cavity, name="stomach_wall"),
        Layer(Tissue.BOWEL_FLUID if u() < 0.7 else Tissue.SOFT, st_in, within=cavity, name="stomach_content"),
        Layer(
            Tissue.GAS,
            Intersect([st_in, Box((-1e9, gas_level, -1e9), (1e9, 1e9, 1e9))]),
            within=cavity,
            name="stomach_gas",
        ),
    ]

    # --- Labelled organs, in carving priority (later wins) -----------------
    # Liver: right lobe + left lobe crossing the midline, smooth deformation
    l_c = np.array([u(0.38, 0.5) * cav_ax, u(-25, 0), u(35, 60)])
    l_r = np.array([u(0.5, 0.62) * cav_ax, u(72, 92) * s, u(68, 88) * s])
    right_lobe = Ellipsoid.lobed(rng, l_c, l_r, rotation_matrix(0, 0, np.deg2rad(u(-10, 10))), amount=0.06)
    ll_c = np.array([u(-30, -8), u(25, 50) + min(0.0, cav_ay - 110), l_c[2] + u(0, 20)])
    left_lobe = Ellipsoid.lobed(
        rng,
        ll_c,
        (u(42, 62), u(26, 36), u(26, 40)),
        rotation_matrix(0, np.deg2rad(u(-10, 10)), np.deg2rad(u(-20, 5))),
        amount=0.08,
    )
    inferior_tip = Ellipsoid.lobed(
        rng,
        (l_c[0] + u(10, 30), l_c[1] + u(-10, 20), l_c[2] - l_r[2] * u(0.5, 0.8)),
        (u(30, 45), u(35, 50), u(30, 50)),
        amount=0.08,
    )
    liver = Warped(
        Union([right_lobe, left_lobe, inferior_tip]), SmoothField.random(rng, amplitude=u(6, 10), wavelength=(60, 160))
    )
    layers.append(Layer(Tissue.LIVER, liver, within=cavity, name="liver"))

    # Spleen: left posterolateral, along the ribs, crescent (hilum concavity)
    sp_r = np.array([u(18, 26), u(38, 52), u(40, 55)]) * s
    sp_c = np.array([-(cav_ax - sp_r[0] - u(8, 22)), y_body + u(-5, 25), u(45, 75)])
    sp_R = rotation_matrix(np.deg2rad(u(-15, 15)), 0, np.deg2rad(u(15, 40)))
    sp_shell = Ellipsoid.lobed(rng, sp_c, sp_r, sp_R, amount=0.07)
    sp_hole = Ellipsoid(sp_c + sp_R @ np.array([sp_r[0] * u(1.2, 1.5), 0, 0]), sp_r * [0.9, 0.65, 0.65], sp_R)
    spleen = Subtract(sp_shell, [sp_hole])
    layers.append(Layer(Tissue.SPLEEN, spleen, within=cavity, name="spleen"))

    # Pancreas: head right of midline by the duodenum, neck/body anterior to the
    # aorta/SMA, tail towards the splenic hilum, rising to the left.
    zp = u(-20, 10)
    yp = y_front + u(30, 45)
    pan_pts = np.array(
        [
            (u(22, 38), yp - u(10, 20), zp - u(25, 40)),  # uncinate / lower head
            (u(22, 38), yp - u(0, 10), zp - u(5, 15)),  # head
            (u(0, 12), yp + u(5, 15), zp),  # neck
            (-u(25, 40), yp + u(0, 10), zp + u(5, 15)),  # body
            (sp_c[0] + u(20, 35), sp_c[1] + u(10, 25), zp + u(15, 35)),  # tail
        ]
    )
    pan_r = np.array([u(11, 14), u(13, 17), u(8, 11), u(8, 11), u(7, 10)]) * s
    pancreas = Warped(Tube(pan_pts, pan_r), SmoothField.random(rng, amplitude=u(3, 5), wavelength=(25, 60)))
    layers.append(Layer(Tissue.PANCREAS, pancreas, within=cavity, name="pancreas"))

    # Kidneys: posterior, either side of the spine; left one higher
    kid = {}
    z_right = u(-55, -25)
    for side, tissue, zc in ((1.0, Tissue.KIDNEY_RIGHT, z_right), (-1.0, Tissue.KIDNEY_LEFT, z_right + u(5, 25))):
        k_r = np.array([u(24, 30), u(20, 26), u(50, 62)]) * s
        k_c = np.array([side * (spine.r_body + u(28, 42) + k_r[0] * 0.5), y_body + u(-8, 6), zc])
        k_R = rotation_matrix(np.deg2rad(u(-12, 12)), side * np.deg2rad(-u(8, 20)), side * np.deg2rad(u(15, 40)))
        shell = Ellipsoid.lobed(rng, k_c, k_r, k_R, amount=0.05)
        hilum = Ellipsoid(
            k_c + k_R @ np.array([-side * k_r[0] * u(0.85, 1.0), k_r[1] * 0.2, 0]), k_r * [0.45, 0.45, 0.38], k_R
        )
        kid[side] = (k_c, k_r)
        layers.append(Layer(tissue, Subtract(shell, [hilum]), within=cavity, name=tissue.name.lower()))

    # Gallbladder: under the liver's inferior surface, anterior, right
    gb_r = np.array([u(12, 17), u(12, 17), u(26, 40)])
    gb_c = np.array([l_c[0] - u(5, 30), u(20, 45) + min(0.0, cav_ay - 110), l_c[2] - l_r[2] * u(0.55, 0.75)])
    gb_R = rotation_matrix(np.deg2rad(-u(25, 55)), np.deg2rad(u(-15, 15)), 0)
    gallbladder = Ellipsoid.lobed(rng, gb_c, gb_r, gb_R, amount=0.06)
    layers.append(Layer(Tissue.GALLBLADDER, gallbladder, within=cavity, name="gallbladder"))

    # Vessels (carve organs: IVC runs through the liver's bare area)
    aorta_x, aorta_y = -u(8, 18), y_front + u(9, 13)
    aorta = Tube(
        _tube_path(rng, (aorta_x, aorta_y, 160), (aorta_x + u(-5, 5), aorta_y + u(0, 8), -160), n=4, wobble=3.0),
        u(9, 13) * s,
    )
    ivc = Ellipsoid((u(18, 28), y_front + u(6, 14), 0.0), (u(11, 15), u(7, 10), 400.0))
    smv = Tube(_tube_path(rng, (u(4, 12), yp - u(0, 5), zp - 120), (u(2, 10), yp - u(0, 8), zp), 3, 3), u(4.5, 6.5))
    portal = Tube([(u(2, 10), yp - u(0, 8), zp), (l_c[0] - u(15, 30), yp - u(0, 15), zp + u(35, 55))], u(6, 8))
    splenic_v = Tube(
        [(u(2, 10), yp - u(0, 8), zp), pan_pts[3] + (0, -pan_r[3], 0), pan_pts[4] + (0, -pan_r[4], 0)], u(3.5, 5)
    )
    renal_v = Tube(
        [kid[-1.0][0] + (kid[-1.0][1][0] * 0.3, 0, 0), (ivc.center[0], ivc.center[1], kid[-1.0][0][2])], u(4, 5.5)
    )
    layers += [
        Layer(Tissue.VESSEL, Union([smv, portal, splenic_v, renal_v]), within=cavity, name="veins"),
        Layer(Tissue.VESSEL, aorta, within=cavity_full, name="aorta"),
        Layer(Tissue.VESSEL, ivc, within=cavity_full, name="ivc"),
    ]
    # Psoas muscles (lower levels) beside the vertebral bodies
    for sx in (-1.0, 1.0):
        layers.append(
            Layer(
                Tissue.MUSCLE,
                Ellipsoid(
                    (sx * (spine.r_body + u(12, 18)), y_body + u(0, 8), -u(110, 140)),
                    (u(13, 18), u(14, 19), u(110, 130)),
                    rotation_matrix(0, sx * np.deg2rad(u(3, 8)), 0),
                ),
                within=cavity_full,
                name="psoas",
            )
        )
    layers += spine.layers

    rot, t = _pose(rng)
    deformation = SmoothField.random(rng, amplitude=u(6, 12), wavelength=(120, 320))
    return Anatomy("abdomen", body, layers, rot, t, deformation, info={"scale": s, "t_fat": t_fat, "t_muscle": t_mus})


# ----------------------------------------------------------------------------
# Heart / thorax
# ----------------------------------------------------------------------------
def sample_heart(rng: np.random.Generator) -> Anatomy:
    """Thorax with lungs, ribs, spine, sternum, great vessels and the whole
    heart (blood pool + myocardium).  z = 0 ≈ mid-ventricular level."""
    u = rng.uniform
    s = u(0.9, 1.1)
    body, muscle, cavity_full, t_fat, t_mus = _body_wall(
        rng, s, ax=u(140, 170), ay_ant=u(95, 115), ay_post=u(95, 110), g1=u(-0.08, 0.0), g2=u(-0.04, 0.0)
    )
    y_body = -body.ay_post + u(62, 74) * s
    spine = _spine(rng, s, y_body, muscle, radius=(13.0, 17.0))
    cav = cavity_full
    cavity = Subtract(cav, [spine.block])
    cav_ax = cav.ax - cav.inset
    cav_ay = cav.ay_ant - cav.inset

    layers: list[Layer] = [
        Layer(Tissue.FAT, body, name="subcutaneous_fat"),
        Layer(Tissue.MUSCLE, muscle, name="chest_wall"),
        Layer(Tissue.FAT, cav, name="mediastinal_fat"),
        Layer(
            Tissue.BONE,
            Ribs(
                inner=cav.offset(-1.0),
                outer=cav.offset(-min(t_mus, 9.0)),
                period=u(28, 34),
                thickness=u(7, 10),
                drop=u(80, 120),
                phase=u(0, 40),
                gap=u(0.35, 0.6),
                spine_gap=0.3,
            ),
            name="ribs",
        ),
    ]
    # Sternum + costal cartilage at the front
    st_y = body.ay_ant - t_fat - t_mus * 0.5
    sternum = ExtrudedEllipse(
        ax=u(14, 20), ay_ant=u(5, 7), ay_post=u(5, 7), center_xy=(0.0, st_y), z_range=(-u(70, 90), 1e9)
    )
    layers += [
        Layer(Tissue.BONE, sternum, within=muscle, name="sternum"),
        Layer(Tissue.MARROW, sternum.offset(2.5), within=muscle, name="sternum_marrow"),
    ]

    # Diaphragm: two domes (right higher); below it liver (right) and stomach (left)
    dome_r, dome_l = -u(65, 85), -u(75, 95)
    diaphragm = Union(
        [
            Ellipsoid((sx * u(40, 60), u(-10, 10), dz - 150.0), (u(110, 130), 160.0, 150.0))
            for sx, dz in ((1.0, dome_r), (-1.0, dome_l))
        ]
    )
    liver = Ellipsoid.lobed(
        rng, (u(30, 55), u(-15, 10), dome_r - 130.0), (cav_ax * u(0.8, 0.95), 110.0, 128.0), amount=0.03
    )
    st_c = np.array([-u(45, 65), u(10, 35), dome_l - u(45, 60)])
    stomach = Ellipsoid.lobed(rng, st_c, (u(35, 50), u(30, 40), 55.0), amount=0.06)
    layers += [
        Layer(Tissue.LIVER, liver, within=cavity, name="liver_dome"),
        Layer(Tissue.BOWEL_WALL, stomach, within=cavity, name="stomach"),
        Layer(
            Tissue.GAS,
            Intersect([stomach, Box((-1e9, st_c[1] + 5.0, -1e9), (1e9, 1e9, 1e9))]),
            within=cavity,
            name="stomach_gas",
        ),
    ]

    # Heart geometry first (the mediastinum is shaped around it)
    h_c = np.array([-u(12, 28), u(22, 38), u(-30, -10)])  # heart centre
    long_axis = np.array([-u(0.5, 0.7), u(0.4, 0.6), -u(0.45, 0.7)])  # base → apex: left, anterior, inferior
    H = frame_from_axis(long_axis, [0.45, 0.9, 0.0])  # 2nd axis towards the RV (anterior-right)
    hr = np.array([u(62, 72), u(48, 56), u(40, 48)]) * s

    # Lungs: each hemithorax above the diaphragm, except the mediastinum
    mediastinum = ExtrudedEllipse(
        ax=u(22, 32), ay_ant=cav_ay + 10.0, ay_post=-y_body + 5.0, center_xy=(-u(0, 10), 0.0), drift_xy=(0.0, 0.0)
    )
    lungs = []
    for sx in (-1.0, 1.0):
        c = np.array([sx * cav_ax * u(0.4, 0.5), u(-25, -5), 250.0])
        r = np.array([cav_ax * u(0.62, 0.72), u(115, 130), 420.0])
        lung = Subtract(
            Warped(Ellipsoid(c, r), SmoothField.random(rng, amplitude=u(4, 8), wavelength=(80, 200))),
            [diaphragm, mediastinum],
        )
        lungs.append(lung)
        layers.append(Layer(Tissue.LUNG, lung, within=cavity, name="lung"))
    # Pulmonary vessels: random small branches inside the lungs
    for _ in range(int(rng.integers(10, 18))):
        sx = rng.choice([-1.0, 1.0])
        p0 = np.array([sx * u(25, 45), u(-20, 10), u(-10, 40)])
        p1 = p0 + np.array([sx * u(30, 90), u(-60, 60), u(-60, 60)])
        layers.append(
            Layer(
                Tissue.VESSEL,
                Tube([p0, p1], [u(3, 6), u(1.5, 2.5)]),
                within=lungs[int(sx > 0)],
                name="pulmonary_vessel",
            )
        )

    # Great vessels at the base (drawn before the heart, which carves them)
    asc = np.array([u(0, 12), h_c[1] + u(-5, 10), h_c[2] + u(40, 55)])
    arch_top = np.array([-u(0, 10), asc[1] - u(25, 40), u(85, 105)])
    ao_r = u(12, 16) * s
    desc = np.array([-(1.15 * spine.r_body + u(0.6, 0.9) * ao_r + 3.0), y_body + u(0.2, 0.6) * spine.r_body, u(40, 60)])
    asc_aorta = Tube([asc - (0, 0, 30), asc + (0, 0, 30), arch_top, desc], [ao_r, ao_r, ao_r, ao_r * 0.85])
    desc_aorta = Tube([desc, desc - (0, 0, 260)], [ao_r * 0.85, ao_r * 0.8])
    pa0 = h_c + np.array([-u(5, 15), u(25, 35), u(30, 40)])
    pa = Tube([pa0, pa0 + (u(-10, 0), -u(10, 20), u(20, 30)), pa0 + (-u(25, 40), -u(35, 50), u(30, 40))], u(11, 14))
    svc = Tube([asc + (u(20, 28), -u(0, 10), -20), asc + (u(20, 28), -u(0, 10), 150)], u(8, 11))
    y_oes = y_body + spine.r_body + u(4, 8)
    oes = Tube([(-u(0, 8), y_oes, -150), (-u(0, 8), y_oes, 150)], u(6, 8))
    layers.append(Layer(Tissue.VESSEL, Union([asc_aorta, pa, svc]), within=cav, name="great_vessels"))

    # Heart: ellipsoidal envelope (epicardium) with four blood-pool chambers
    env = Ellipsoid.lobed(rng, h_c, hr, H, amount=0.05)
    peri = Ellipsoid(h_c, hr + u(3, 7), H, env.lobe_freqs, env.lobe_amps, env.lobe_phases)

    def chamber(offset, radii, amount=0.05):
        return Ellipsoid.lobed(rng, h_c + H @ (np.asarray(offset) * hr), np.asarray(radii) * hr, H, amount=amount)

    lv = chamber((u(0.1, 0.2), -u(0.25, 0.35), 0.0), (u(0.55, 0.65), u(0.38, 0.46), u(0.42, 0.5)))
    rv = Subtract(
        chamber((u(0.0, 0.1), u(0.5, 0.6), u(-0.1, 0.1)), (u(0.55, 0.65), u(0.3, 0.36), u(0.55, 0.65))),
        [chamber((0.15, -0.3, 0.0), (0.75, 0.62, 0.62), 0.0)],
    )
    la = chamber((-u(0.6, 0.7), -u(0.2, 0.3), -u(0.3, 0.4)), (u(0.3, 0.36), u(0.36, 0.42), u(0.4, 0.48)))
    ra = chamber((-u(0.55, 0.65), u(0.35, 0.45), -u(0.05, 0.15)), (u(0.32, 0.38), u(0.34, 0.4), u(0.45, 0.52)))
    layers += [
        Layer(Tissue.FAT, peri, within=cavity, name="pericardial_fat"),
        Layer(Tissue.MYOCARDIUM, env, within=cavity, name="myocardium"),
        Layer(Tissue.BLOOD, Intersect([Union([lv, rv, la, ra]), env]), within=cavity, name="blood_pool"),
        # posterior mediastinum: the descending aorta and oesophagus push the heart forward
        Layer(Tissue.VESSEL, desc_aorta, within=cav, name="descending_aorta"),
        Layer(Tissue.SOFT, oes, within=cavity, name="oesophagus"),
    ]
    layers += spine.layers

    rot, t = _pose(rng)
    deformation = SmoothField.random(rng, amplitude=u(5, 10), wavelength=(120, 320))
    return Anatomy("heart", body, layers, rot, t, deformation, info={"scale": s, "t_fat": t_fat, "t_muscle": t_mus})
