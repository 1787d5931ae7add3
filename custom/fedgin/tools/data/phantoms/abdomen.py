"""Random upper abdomen (≈ T11–L4): liver, spleen, kidneys, pancreas, gallbladder.

Each helper draws one organ / structure group from ``rng``.  :func:`sample_abdomen`
calls them in a fixed order, which is also the order of the random draws, so a
seed always gives the same phantom; keep that order when changing anything here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import (
    Anatomy,
    BodyFrame,
    Layer,
    Tissue,
    _body_wall,
    _bowel_loops,
    _pose,
    _spine,
    _tube_path,
)
from .fields import SmoothField
from .rotations import rotation_matrix
from .shapes import Box, Ellipsoid, ExtrudedEllipse, Intersect, Ribs, Subtract, Tube, Union, Warped

__all__ = ["sample_abdomen"]


@dataclass(frozen=True)
class _PancreasAxis:
    """Centre line of the pancreas, which the mesenteric / splenic veins follow."""

    z: float  # level of the neck
    y: float  # anterior-posterior reference of the gland
    points: np.ndarray  # uncinate, head, neck, body, tail
    radii: np.ndarray


def sample_abdomen(rng: np.random.Generator) -> Anatomy:
    """Upper abdomen (≈ T11–L4) with liver, spleen, kidneys, pancreas,
    gallbladder, vessels, spine, bowel and body wall.  z = 0 ≈ L1/L2."""
    u = rng.uniform
    frame, layers = _abdomen_frame(rng)
    layers += _ribs_and_lung_bases(rng, frame)
    layers += _bowel(rng, frame)
    layers += _stomach(rng, frame)
    # --- Labelled organs, in carving priority (later wins) -----------------
    liver, liver_centre, liver_radii = _liver(rng, frame)
    layers.append(liver)
    spleen, spleen_centre = _spleen(rng, frame)
    layers.append(spleen)
    pancreas, pancreas_axis = _pancreas(rng, frame, spleen_centre)
    layers.append(pancreas)
    kidneys, kidney_geometry = _kidneys(rng, frame)
    layers += kidneys
    layers.append(_gallbladder(rng, frame, liver_centre, liver_radii))
    layers += _vessels(rng, frame, liver_centre, pancreas_axis, kidney_geometry)
    layers += _psoas(rng, frame)
    layers += frame.spine.layers

    rot, t = _pose(rng)
    deformation = SmoothField.random(rng, amplitude=u(6, 12), wavelength=(120, 320))
    info = {"scale": frame.s, "t_fat": frame.t_fat, "t_muscle": frame.t_mus}
    return Anatomy("abdomen", frame.body, layers, rot, t, deformation, info=info)


def _abdomen_frame(rng: np.random.Generator) -> tuple[BodyFrame, list[Layer]]:
    """Body outline, abdominal wall, spine and posterior wall; returns the frame and the wall layers."""
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

    frame = BodyFrame(s, body, muscle, cav, cavity, cav_ax, cav_ay, y_body, y_front, spine, t_fat, t_mus)
    layers: list[Layer] = [
        Layer(Tissue.FAT, body, name="subcutaneous_fat"),
        Layer(Tissue.MUSCLE, muscle, name="abdominal_wall"),
        Layer(Tissue.FAT, cav, name="visceral_fat"),
        Layer(Tissue.MUSCLE, quadratus, within=muscle, name="quadratus_lumborum"),
    ]
    return frame, layers


def _ribs_and_lung_bases(rng: np.random.Generator, frame: BodyFrame) -> list[Layer]:
    """Lower ribs (T10-T12 level) around liver and spleen, and the lung bases above them."""
    u = rng.uniform
    cav, cavity, y_body, t_mus = frame.cav, frame.cavity, frame.y_body, frame.t_mus
    layers = [
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
    ]
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
    return layers


def _bowel(rng: np.random.Generator, frame: BodyFrame) -> list[Layer]:
    """Bowel clutter: small bowel (mid / lower), colon (flanks + transverse)."""
    u = rng.uniform
    cavity, cav_ax, cav_ay, y_front = frame.cavity, frame.cav_ax, frame.cav_ay, frame.y_front
    layers = _bowel_loops(
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
    return layers


def _stomach(rng: np.random.Generator, frame: BodyFrame) -> list[Layer]:
    """Stomach (left upper quadrant, anterior), wall + fluid + anterior gas cap."""
    u = rng.uniform
    cavity = frame.cavity
    st_c = np.array([-u(35, 60), u(15, 45), u(45, 75)])
    st_r = np.array([u(35, 50), u(25, 38), u(38, 55)])
    st_R = rotation_matrix(0, np.deg2rad(u(-25, 5)), np.deg2rad(u(-30, 10)))
    stomach = Ellipsoid.lobed(rng, st_c, st_r, st_R, amount=0.07)
    st_in = Ellipsoid(st_c, st_r - u(3.0, 5.0), st_R, stomach.lobe_freqs, stomach.lobe_amps, stomach.lobe_phases)
    gas_level = st_c[1] + st_r[1] * u(-0.1, 0.6)
    return [
        Layer(Tissue.BOWEL_WALL, stomach, within=cavity, name="stomach_wall"),
        Layer(Tissue.BOWEL_FLUID if u() < 0.7 else Tissue.SOFT, st_in, within=cavity, name="stomach_content"),
        Layer(
            Tissue.GAS,
            Intersect([st_in, Box((-1e9, gas_level, -1e9), (1e9, 1e9, 1e9))]),
            within=cavity,
            name="stomach_gas",
        ),
    ]


def _liver(rng: np.random.Generator, frame: BodyFrame) -> tuple[Layer, np.ndarray, np.ndarray]:
    """Liver: right lobe + left lobe crossing the midline, smooth deformation.

    Returns the layer and the right lobe's centre and radii (the gallbladder and
    the portal vein are placed relative to them).
    """
    u = rng.uniform
    s, cavity, cav_ax, cav_ay = frame.s, frame.cavity, frame.cav_ax, frame.cav_ay
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
    return Layer(Tissue.LIVER, liver, within=cavity, name="liver"), l_c, l_r


def _spleen(rng: np.random.Generator, frame: BodyFrame) -> tuple[Layer, np.ndarray]:
    """Spleen: left posterolateral, along the ribs, crescent (hilum concavity).

    Returns the layer and the spleen's centre (the pancreatic tail points at it).
    """
    u = rng.uniform
    s, cavity, cav_ax, y_body = frame.s, frame.cavity, frame.cav_ax, frame.y_body
    sp_r = np.array([u(18, 26), u(38, 52), u(40, 55)]) * s
    sp_c = np.array([-(cav_ax - sp_r[0] - u(8, 22)), y_body + u(-5, 25), u(45, 75)])
    sp_R = rotation_matrix(np.deg2rad(u(-15, 15)), 0, np.deg2rad(u(15, 40)))
    sp_shell = Ellipsoid.lobed(rng, sp_c, sp_r, sp_R, amount=0.07)
    sp_hole = Ellipsoid(sp_c + sp_R @ np.array([sp_r[0] * u(1.2, 1.5), 0, 0]), sp_r * [0.9, 0.65, 0.65], sp_R)
    spleen = Subtract(sp_shell, [sp_hole])
    return Layer(Tissue.SPLEEN, spleen, within=cavity, name="spleen"), sp_c


def _pancreas(rng: np.random.Generator, frame: BodyFrame, sp_c: np.ndarray) -> tuple[Layer, _PancreasAxis]:
    """Pancreas: head right of midline by the duodenum, neck/body anterior to the
    aorta/SMA, tail towards the splenic hilum (``sp_c``), rising to the left."""
    u = rng.uniform
    s, cavity, y_front = frame.s, frame.cavity, frame.y_front
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
    return Layer(Tissue.PANCREAS, pancreas, within=cavity, name="pancreas"), _PancreasAxis(zp, yp, pan_pts, pan_r)


def _kidneys(rng: np.random.Generator, frame: BodyFrame) -> tuple[list[Layer], dict]:
    """Kidneys: posterior, either side of the spine; left one higher.

    Returns the layers and ``{side: (centre, radii)}`` with side +1 = right, -1 = left.
    """
    u = rng.uniform
    s, cavity, spine, y_body = frame.s, frame.cavity, frame.spine, frame.y_body
    layers = []
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
    return layers, kid


def _gallbladder(rng: np.random.Generator, frame: BodyFrame, l_c: np.ndarray, l_r: np.ndarray) -> Layer:
    """Gallbladder: under the liver's inferior surface (liver centre ``l_c``, radii ``l_r``), anterior, right."""
    u = rng.uniform
    cavity, cav_ay = frame.cavity, frame.cav_ay
    gb_r = np.array([u(12, 17), u(12, 17), u(26, 40)])
    gb_c = np.array([l_c[0] - u(5, 30), u(20, 45) + min(0.0, cav_ay - 110), l_c[2] - l_r[2] * u(0.55, 0.75)])
    gb_R = rotation_matrix(np.deg2rad(-u(25, 55)), np.deg2rad(u(-15, 15)), 0)
    gallbladder = Ellipsoid.lobed(rng, gb_c, gb_r, gb_R, amount=0.06)
    return Layer(Tissue.GALLBLADDER, gallbladder, within=cavity, name="gallbladder")


def _vessels(
    rng: np.random.Generator, frame: BodyFrame, l_c: np.ndarray, pancreas: _PancreasAxis, kid: dict
) -> list[Layer]:
    """Aorta, IVC and the portal / splenic / mesenteric / left renal veins.

    They carve the organs (the IVC runs through the liver's bare area); ``l_c`` is
    the liver centre and ``kid`` the kidneys' ``{side: (centre, radii)}``.
    """
    u = rng.uniform
    s, cavity, cavity_full, y_front = frame.s, frame.cavity, frame.cav, frame.y_front
    zp, yp, pan_pts, pan_r = pancreas.z, pancreas.y, pancreas.points, pancreas.radii
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
    return [
        Layer(Tissue.VESSEL, Union([smv, portal, splenic_v, renal_v]), within=cavity, name="veins"),
        Layer(Tissue.VESSEL, aorta, within=cavity_full, name="aorta"),
        Layer(Tissue.VESSEL, ivc, within=cavity_full, name="ivc"),
    ]


def _psoas(rng: np.random.Generator, frame: BodyFrame) -> list[Layer]:
    """Psoas muscles (lower levels) beside the vertebral bodies."""
    u = rng.uniform
    cavity_full, spine, y_body = frame.cav, frame.spine, frame.y_body
    layers = []
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
    return layers
