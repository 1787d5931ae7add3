"""Random thorax with the whole heart (blood pool + myocardium).

Each helper draws one structure group from ``rng``.  :func:`sample_heart` calls
them in a fixed order, which is also the order of the random draws, so a seed
always gives the same phantom; keep that order when changing anything here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy, BodyFrame, Layer, Tissue, _body_wall, _pose, _spine
from .fields import SmoothField
from .rotations import frame_from_axis
from .shapes import Box, Ellipsoid, ExtrudedEllipse, Intersect, Ribs, Shape, Subtract, Tube, Union, Warped

__all__ = ["sample_heart"]


@dataclass(frozen=True)
class _HeartAxes:
    """Where the heart sits: centre, orientation and size."""

    centre: np.ndarray
    rotation: np.ndarray  # columns: long axis (base → apex), towards the RV, their cross product
    radii: np.ndarray  # of the epicardial envelope along those axes


def sample_heart(rng: np.random.Generator) -> Anatomy:
    """Thorax with lungs, ribs, spine, sternum, great vessels and the whole
    heart (blood pool + myocardium).  z = 0 ≈ mid-ventricular level."""
    u = rng.uniform
    frame, layers = _thorax_frame(rng)
    layers += _sternum(rng, frame)
    diaphragm, below_diaphragm = _diaphragm_liver_stomach(rng, frame)
    layers += below_diaphragm
    # Heart geometry first (the mediastinum is shaped around it)
    heart = _heart_axes(rng, frame)
    layers += _lungs(rng, frame, diaphragm)
    great_vessels, posterior_mediastinum = _great_vessels(rng, frame, heart)
    layers.append(great_vessels)
    layers += _heart_chambers(rng, frame, heart)
    layers += posterior_mediastinum
    layers += frame.spine.layers

    rot, t = _pose(rng)
    deformation = SmoothField.random(rng, amplitude=u(5, 10), wavelength=(120, 320))
    info = {"scale": frame.s, "t_fat": frame.t_fat, "t_muscle": frame.t_mus}
    return Anatomy("heart", frame.body, layers, rot, t, deformation, info=info)


def _thorax_frame(rng: np.random.Generator) -> tuple[BodyFrame, list[Layer]]:
    """Body outline, chest wall, spine and ribs; returns the frame and the wall + rib layers."""
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
    y_front = spine.y_body + spine.r_body  # anterior surface of the vertebral body

    frame = BodyFrame(s, body, muscle, cav, cavity, cav_ax, cav_ay, y_body, y_front, spine, t_fat, t_mus)
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
    return frame, layers


def _sternum(rng: np.random.Generator, frame: BodyFrame) -> list[Layer]:
    """Sternum + costal cartilage at the front."""
    u = rng.uniform
    body, muscle, t_fat, t_mus = frame.body, frame.muscle, frame.t_fat, frame.t_mus
    st_y = body.ay_ant - t_fat - t_mus * 0.5
    sternum = ExtrudedEllipse(
        ax=u(14, 20), ay_ant=u(5, 7), ay_post=u(5, 7), center_xy=(0.0, st_y), z_range=(-u(70, 90), 1e9)
    )
    return [
        Layer(Tissue.BONE, sternum, within=muscle, name="sternum"),
        Layer(Tissue.MARROW, sternum.offset(2.5), within=muscle, name="sternum_marrow"),
    ]


def _diaphragm_liver_stomach(rng: np.random.Generator, frame: BodyFrame) -> tuple[Shape, list[Layer]]:
    """Diaphragm: two domes (right higher); below it liver (right) and stomach (left).

    Returns the diaphragm (which bounds the lungs) and the liver / stomach layers.
    """
    u = rng.uniform
    cavity, cav_ax = frame.cavity, frame.cav_ax
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
    layers = [
        Layer(Tissue.LIVER, liver, within=cavity, name="liver_dome"),
        Layer(Tissue.BOWEL_WALL, stomach, within=cavity, name="stomach"),
        Layer(
            Tissue.GAS,
            Intersect([stomach, Box((-1e9, st_c[1] + 5.0, -1e9), (1e9, 1e9, 1e9))]),
            within=cavity,
            name="stomach_gas",
        ),
    ]
    return diaphragm, layers


def _heart_axes(rng: np.random.Generator, frame: BodyFrame) -> _HeartAxes:
    """Heart centre, orientation and size."""
    u = rng.uniform
    s = frame.s
    h_c = np.array([-u(12, 28), u(22, 38), u(-30, -10)])  # heart centre
    long_axis = np.array([-u(0.5, 0.7), u(0.4, 0.6), -u(0.45, 0.7)])  # base → apex: left, anterior, inferior
    H = frame_from_axis(long_axis, [0.45, 0.9, 0.0])  # 2nd axis towards the RV (anterior-right)
    hr = np.array([u(62, 72), u(48, 56), u(40, 48)]) * s
    return _HeartAxes(h_c, H, hr)


def _lungs(rng: np.random.Generator, frame: BodyFrame, diaphragm: Shape) -> list[Layer]:
    """Lungs (each hemithorax above the diaphragm, except the mediastinum) and pulmonary vessels."""
    u = rng.uniform
    cavity, cav_ax, cav_ay, y_body = frame.cavity, frame.cav_ax, frame.cav_ay, frame.y_body
    layers = []
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
    return layers


def _great_vessels(rng: np.random.Generator, frame: BodyFrame, heart: _HeartAxes) -> tuple[Layer, list[Layer]]:
    """Aorta, pulmonary artery, SVC and oesophagus.

    Returns the great vessels at the base (drawn before the heart, which carves
    them) and the posterior mediastinum (descending aorta, oesophagus: drawn
    after the heart, which they push forward).
    """
    u = rng.uniform
    s, cav, cavity, spine, y_body = frame.s, frame.cav, frame.cavity, frame.spine, frame.y_body
    h_c = heart.centre
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
    great_vessels = Layer(Tissue.VESSEL, Union([asc_aorta, pa, svc]), within=cav, name="great_vessels")
    posterior_mediastinum = [
        Layer(Tissue.VESSEL, desc_aorta, within=cav, name="descending_aorta"),
        Layer(Tissue.SOFT, oes, within=cavity, name="oesophagus"),
    ]
    return great_vessels, posterior_mediastinum


def _heart_chambers(rng: np.random.Generator, frame: BodyFrame, heart: _HeartAxes) -> list[Layer]:
    """Heart: ellipsoidal envelope (epicardium) with four blood-pool chambers, in pericardial fat."""
    u = rng.uniform
    cavity = frame.cavity
    h_c, H, hr = heart.centre, heart.rotation, heart.radii
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
    return [
        Layer(Tissue.FAT, peri, within=cavity, name="pericardial_fat"),
        Layer(Tissue.MYOCARDIUM, env, within=cavity, name="myocardium"),
        Layer(Tissue.BLOOD, Intersect([Union([lv, rv, la, ra]), env]), within=cavity, name="blood_pool"),
    ]
