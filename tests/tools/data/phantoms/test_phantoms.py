"""Tests of the synthetic CT / MRI phantom generator (fedgin.tools.data.phantoms)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fedgin.tools.data.phantoms import (
    DEFAULT_GRID,
    LABEL_IDS,
    ORGAN_TISSUES,
    ORGANS,
    PhantomSiteSpec,
    Tissue,
    default_site_specs,
    generate_phantom_dataset,
    make_affine,
    make_case,
    render_ct,
    render_mr,
    sample_anatomy,
    save_nifti,
    scale_site_specs,
    tissue_table,
)
from fedgin.tools.data.phantoms.anatomy import voxel_world_coords

# Plausible organ volumes (ml) inside the field of view.
VOLUME_ML = {
    "liver": (500, 3000),
    "spleen": (60, 600),
    "kidney_right": (40, 350),
    "kidney_left": (40, 350),
    "pancreas": (15, 200),
    "gallbladder": (4, 120),
    "heart": (250, 1200),
}


def tiny_sites(max_cases: int = 1, size: float = 0.5) -> list[PhantomSiteSpec]:
    return scale_site_specs(default_site_specs(), size=size, max_cases=max_cases)


@pytest.fixture(scope="module")
def abdomen_ds(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("abdomen")
    return out, generate_phantom_dataset("abdomen", out, seed=0, sites=tiny_sites())


def _load(path):
    img = nib.load(str(path))
    return img, np.asanyarray(img.dataobj)


def _spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


# ----------------------------------------------------------------------------
# single cases
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("task,modality", [("abdomen", "CT"), ("abdomen", "MR"), ("heart", "MR")])
def test_case_roundtrips_through_nifti(tmp_path, task, modality):
    shape = (40, 36, 16)
    image, label, affine = make_case(task, modality, np.random.default_rng(3), shape=shape, spacing=(9.0, 10.0, 12.0))
    assert image.shape == label.shape == shape
    assert image.dtype == np.int16
    assert label.dtype == (np.int16 if max(LABEL_IDS[task][modality].values()) > 255 else np.uint8)
    for arr, name in ((image, "img.nii.gz"), (label, "lab.nii.gz")):
        save_nifti(arr, affine, tmp_path / name)
        img, data = _load(tmp_path / name)
        assert data.dtype == arr.dtype
        assert data.shape == arr.shape
        np.testing.assert_array_equal(data, arr)
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)
        np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
        np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_make_case_is_deterministic_given_rng():
    a = make_case("abdomen", "CT", np.random.default_rng(7), shape=(24, 24, 10), spacing=(16, 16, 20))
    b = make_case("abdomen", "CT", np.random.default_rng(7), shape=(24, 24, 10), spacing=(16, 16, 20))
    c = make_case("abdomen", "CT", np.random.default_rng(8), shape=(24, 24, 10), spacing=(16, 16, 20))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_make_case_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        make_case("brain", "CT", rng)
    with pytest.raises(ValueError):
        make_case("abdomen", "PET", rng)
    with pytest.raises(ValueError):
        make_case("abdomen", "CT", rng, label_ids={"heart": 1})
    with pytest.raises(ValueError):
        make_case("abdomen", "CT", rng, label_ids={"liver": 1, "spleen": 1})


def test_orientation_codes():
    for modality, codes in (("CT", ("R", "A", "S")), ("MR", ("L", "P", "S"))):
        _, _, affine = make_case(
            "abdomen", modality, np.random.default_rng(0), shape=(20, 20, 8), spacing=(20.0, 20.0, 25.0)
        )
        assert nib.aff2axcodes(affine) == codes
    assert nib.aff2axcodes(make_affine((4, 5, 6), (1, 2, 3), "PLI")) == ("P", "L", "I")
    with pytest.raises(ValueError):
        make_affine((4, 4, 4), (1, 1, 1), "RRS")


def test_anatomy_is_defined_in_world_coordinates():
    """An LPS grid samples exactly the RAS grid's anatomy, flipped in x and y."""
    anatomy = sample_anatomy("abdomen", np.random.default_rng(11))
    shape, spacing = (32, 32, 12), (12.0, 12.0, 16.0)
    ras = anatomy.tissue_map(shape, make_affine(shape, spacing, "RAS"))
    lps = anatomy.tissue_map(shape, make_affine(shape, spacing, "LPS"))
    np.testing.assert_array_equal(lps, ras[::-1, ::-1, :])
    assert (ras == Tissue.LIVER).sum() > 50


def _world_centroid(label: np.ndarray, affine: np.ndarray, label_id: int) -> np.ndarray:
    ijk = np.argwhere(label == label_id)
    assert len(ijk), label_id
    return (ijk @ affine[:3, :3].T + affine[:3, 3]).mean(axis=0)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_liver_on_patients_right(modality):
    shape, spacing, orient = DEFAULT_GRID[modality]
    shape = tuple(n // 2 for n in shape)
    spacing = tuple(2 * s for s in spacing)
    ids = LABEL_IDS["abdomen"][modality]
    for seed in range(3):
        _, label, affine = make_case(
            "abdomen", modality, np.random.default_rng(seed), shape=shape, spacing=spacing, orientation=orient
        )

        liver, spleen, k_r, k_l = (
            _world_centroid(label, affine, ids[o]) for o in ("liver", "spleen", "kidney_right", "kidney_left")
        )
        # RAS+: +x is the patient's right
        assert liver[0] > 15 and spleen[0] < -15, (liver, spleen)
        assert k_r[0] > 15 and k_l[0] < -15
        assert liver[2] > k_r[2]  # liver above the right kidney
        # after reorientation to canonical RAS the liver is at larger i than the spleen
        canon = nib.as_closest_canonical(nib.Nifti1Image(label, affine))
        assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
        data = np.asanyarray(canon.dataobj)
        assert np.argwhere(data == ids["liver"])[:, 0].mean() > np.argwhere(data == ids["spleen"])[:, 0].mean()


@pytest.mark.parametrize("task", ["abdomen", "heart"])
def test_organ_volumes_plausible(task):
    shape, spacing, orient = DEFAULT_GRID["CT"]
    affine = make_affine(shape, spacing, orient)
    world = voxel_world_coords(shape, affine).reshape(-1, 3)
    voxel_ml = np.prod(spacing) / 1000.0
    for seed in range(4):
        tissue = sample_anatomy(task, np.random.default_rng(seed)).tissue_at(world)
        for organ, tissues in ORGAN_TISSUES[task].items():
            ml = np.isin(tissue, tissues).sum() * voxel_ml
            lo, hi = VOLUME_ML[organ]
            assert lo <= ml <= hi, (task, seed, organ, ml)


# ----------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------
def _tissue_and_world(task="abdomen", seed=5, shape=(48, 48, 20), spacing=(8.0, 8.0, 10.0)):
    affine = make_affine(shape, spacing)
    world = voxel_world_coords(shape, affine)
    tissue = sample_anatomy(task, np.random.default_rng(seed)).tissue_at(world.reshape(-1, 3)).reshape(shape)
    return tissue, world


def test_ct_values_plausible_hu():
    tissue, world = _tissue_and_world()
    ct = render_ct(tissue, world, np.random.default_rng(0))
    assert ct.dtype == np.int16
    assert ct.min() >= -1024 and ct.max() <= 3071
    assert abs(float(np.median(ct[tissue == Tissue.AIR])) + 1000) < 30  # air outside the body
    liver = float(np.median(ct[tissue == Tissue.LIVER]))
    fat = float(np.median(ct[tissue == Tissue.FAT]))
    assert 60 < liver < 170 and -160 < fat < -40
    assert np.percentile(ct[tissue == Tissue.BONE], 90) > 250


def _interior(mask: np.ndarray) -> np.ndarray:
    """Voxels whose in-plane 4-neighbours share the tissue (away from partial volume)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner if inner.sum() >= 3 else mask


def test_mr_intensity_ordering_differs_from_ct():
    tissue, world = _tissue_and_world(shape=(64, 64, 20), spacing=(6.0, 6.0, 10.0))
    ct = render_ct(tissue, world, np.random.default_rng(1)).astype(float)
    mr = render_mr(tissue, world, np.random.default_rng(2)).astype(float)
    assert mr.min() >= 0
    med = {}
    for t in (
        Tissue.FAT,
        Tissue.MUSCLE,
        Tissue.LIVER,
        Tissue.SPLEEN,
        Tissue.GALLBLADDER,
        Tissue.VESSEL,
        Tissue.BOWEL_FLUID,
        Tissue.KIDNEY_RIGHT,
    ):
        m = _interior(tissue == t)
        assert m.sum() >= 3, t
        med[t] = (np.median(ct[m]), np.median(mr[m]))
    # inversions (non-monotonic mapping): fat, gallbladder/fluid, vessels
    assert med[Tissue.FAT][0] < med[Tissue.LIVER][0] and med[Tissue.FAT][1] > med[Tissue.LIVER][1]
    assert med[Tissue.GALLBLADDER][0] < med[Tissue.LIVER][0] and med[Tissue.GALLBLADDER][1] > med[Tissue.LIVER][1]
    assert med[Tissue.VESSEL][0] > med[Tissue.LIVER][0] and med[Tissue.VESSEL][1] < med[Tissue.LIVER][1]
    assert med[Tissue.LIVER][0] > med[Tissue.MUSCLE][0] - 30 and med[Tissue.LIVER][1] < med[Tissue.SPLEEN][1]
    # the nominal tissue tables are far from monotonically related
    for task in ("abdomen", "heart"):
        ct_t, mr_t = tissue_table("CT", task), tissue_table("MR", task)
        keys = sorted(ct_t)
        rho = _spearman([ct_t[k][0] for k in keys], [mr_t[k][0] for k in keys])
        assert rho < 0.5, (task, rho)
    # ... and so are the rendered per-tissue means of one tissue map
    keys = [k for k in np.unique(tissue) if k != 0 and (tissue == k).sum() > 10]
    rho = _spearman([ct[tissue == k].mean() for k in keys], [mr[tissue == k].mean() for k in keys])
    assert rho < 0.5, rho


# ----------------------------------------------------------------------------
# data set on disk
# ----------------------------------------------------------------------------
def test_site_config_and_datalist_valid(abdomen_ds):
    out, configs = abdomen_ds
    assert set(configs) == {"site-ct", "site-mri"}
    for spec in tiny_sites():
        cfg_path = configs[spec.name]
        assert cfg_path == out / spec.name / "site_config.json" and cfg_path.is_file()
        cfg = json.loads(cfg_path.read_text())
        partial = spec.name == "site-mri"  # the paper's setting: no MRI pancreas or gallbladder labels
        assert set(cfg) == {"site_name", "modality", "data_root", "datalist", "labels"} | (
            {"eval_labels"} if partial else set()
        )
        assert cfg["site_name"] == spec.name
        assert cfg["modality"] == {"site-ct": "CT", "site-mri": "MR"}[spec.name]
        ids = {o: LABEL_IDS["abdomen"][cfg["modality"]][o] for o in ORGANS["abdomen"]}
        trained = {o: i for o, i in ids.items() if not (partial and o in ("pancreas", "gallbladder"))}
        assert cfg["labels"] == trained
        assert cfg.get("eval_labels") == (ids if partial else None)
        root = cfg_path.parent / cfg["data_root"]
        datalist = json.loads((root / cfg["datalist"]).read_text())
        assert set(datalist) == {"training", "validation", "test"}
        assert [len(datalist[k]) for k in ("training", "validation", "test")] == [spec.n_train, spec.n_val, spec.n_test]
        seen = set()
        for entries in datalist.values():
            for e in entries:
                assert set(e) == {"image", "label"}
                assert not Path(e["image"]).is_absolute()
                assert (root / e["image"]).is_file() and (root / e["label"]).is_file()
                seen.add(e["image"])
        assert len(seen) == spec.n_cases  # splits are different cases
    assert json.loads((out / "phantom_dataset.json").read_text())["task"] == "abdomen"


def test_labels_use_site_ids_and_every_organ_present(abdomen_ds):
    out, configs = abdomen_ds
    for name, cfg_path in configs.items():
        cfg = json.loads(cfg_path.read_text())
        ids = set(cfg.get("eval_labels", cfg["labels"]).values())  # every label file holds every organ
        datalist = json.loads((cfg_path.parent / "datalist.json").read_text())
        for entries in datalist.values():
            for e in entries:
                img, image = _load(cfg_path.parent / e["image"])
                lab, label = _load(cfg_path.parent / e["label"])
                assert label.dtype == np.uint8 and image.dtype == np.int16
                np.testing.assert_allclose(img.affine, lab.affine)
                present = set(np.unique(label).tolist()) - {0}
                assert present == ids, (name, e, present)
                expected = ("R", "A", "S") if cfg["modality"] == "CT" else ("L", "P", "S")
                assert nib.aff2axcodes(img.affine) == expected
                if cfg["modality"] == "CT":
                    assert image.min() >= -1024 and image.max() <= 3071
                else:
                    assert image.min() >= 0


def test_heart_dataset_ids(tmp_path):
    sites = [s.with_counts(1, 0, 0) for s in scale_site_specs(default_site_specs("heart"), size=0.4)]
    configs = generate_phantom_dataset("heart", tmp_path, seed=3, sites=sites)
    for name, want in (("site-ct", 1), ("site-mri", 500)):
        cfg = json.loads(configs[name].read_text())
        assert cfg["labels"] == {"heart": want}
        _, label = _load(configs[name].parent / "labelsTr" / ("ct_000.nii.gz" if want == 1 else "mri_000.nii.gz"))
        assert set(np.unique(label).tolist()) == {0, want}
        assert label.dtype == (np.uint8 if want == 1 else np.int16)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_seed_reproduces_files_byte_for_byte(tmp_path):
    sites = [s.with_counts(1, 1, 0) for s in tiny_sites(size=0.35)]
    generate_phantom_dataset("abdomen", tmp_path / "a", seed=4, sites=sites)
    generate_phantom_dataset("abdomen", tmp_path / "b", seed=4, sites=sites)
    generate_phantom_dataset("abdomen", tmp_path / "c", seed=5, sites=sites)
    a, b, c = (_file_bytes(tmp_path / d) for d in "abc")
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if "imagesTr" in k]
    assert images and all(a[k] != c[k] for k in images)


def test_case_independent_of_number_of_cases(tmp_path):
    base = tiny_sites(size=0.35)
    generate_phantom_dataset("abdomen", tmp_path / "small", seed=2, sites=[s.with_counts(1, 1, 0) for s in base])
    generate_phantom_dataset(
        "abdomen", tmp_path / "big", seed=2, sites=[s.with_counts(3, 0, 0) for s in base], num_workers=2
    )
    for rel in ("site-ct/imagesTr/ct_000.nii.gz", "site-ct/imagesTr/ct_001.nii.gz", "site-mri/labelsTr/mri_001.nii.gz"):
        assert (tmp_path / "small" / rel).read_bytes() == (tmp_path / "big" / rel).read_bytes()
    # sites draw independent cases
    ct0 = np.asanyarray(nib.load(str(tmp_path / "big/site-ct/labelsTr/ct_000.nii.gz")).dataobj)
    ct1 = np.asanyarray(nib.load(str(tmp_path / "big/site-ct/labelsTr/ct_001.nii.gz")).dataobj)
    assert not np.array_equal(ct0, ct1)


def test_default_and_scaled_specs():
    ct, mri = default_site_specs("abdomen")
    assert (ct.name, ct.modality, ct.n_train, ct.n_val, ct.n_test) == ("site-ct", "CT", 12, 3, 5)
    assert (mri.name, mri.modality, mri.n_train, mri.n_val, mri.n_test) == ("site-mri", "MR", 3, 3, 5)
    assert ct.orientation == "RAS" and mri.orientation == "LPS"
    assert ct.shape != mri.shape and ct.spacing != mri.spacing
    small = ct.scaled(0.5, max_cases=2)
    assert small.shape == (48, 48, 20) and (small.n_train, small.n_val, small.n_test) == (2, 2, 2)
    np.testing.assert_allclose(np.multiply(small.shape, small.spacing), np.multiply(ct.shape, ct.spacing))
    with pytest.raises(ValueError):
        PhantomSiteSpec("x", "PET", 1, 1, 1, (8, 8, 8), (1, 1, 1))
