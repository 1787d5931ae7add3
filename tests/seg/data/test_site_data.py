"""The volume pipeline on synthetic NIfTI and on the real TotalSegmentator CT and MRI."""

import nibabel as nib
import numpy as np
import pytest
import torch
from fedgin.seg.data.site_data import DataError, load_site_data
from fedgin.seg.site_config import load_site_config
from helpers import ABDOMEN, write_nifti, write_site


def _centroid(mask: torch.Tensor) -> np.ndarray:
    return np.argwhere(mask.numpy()).mean(0)


def test_real_ct_and_mri_load_normalize_reorient_and_slice(fixture_sites, fixtures_dir):
    ct_hu = nib.load(fixtures_dir / "example_ct_sm.nii.gz")
    assert nib.aff2axcodes(ct_hu.affine) == ("R", "A", "S")
    assert ct_hu.get_fdata().min() < -900  # real Hounsfield units
    assert nib.aff2axcodes(nib.load(fixtures_dir / "example_mr_sm.nii.gz").affine) == ("L", "P", "S")
    for name, raw_shape in (("site-ct", (122, 101, 30)), ("site-mri", (117, 91, 20))):
        data = load_site_data(load_site_config(fixture_sites[name]), ABDOMEN, (64, 64), splits=("training", "test"))
        volume = data.test[0]
        assert tuple(volume.label.shape) == (1, *raw_shape)  # original grid kept for Dice
        assert tuple(volume.image.shape) == (1, 64, 64, raw_shape[2])  # in-plane resize only
        assert 0.0 <= float(volume.image.min()) and float(volume.image.max()) <= 1.0
        assert float(volume.image.max()) > 0.9 and float(volume.image.min()) < 0.1
        assert set(volume.label.unique().tolist()) == set(range(len(ABDOMEN) + 1))
        # After reorientation to RAS, patient's right (liver, right kidney) is at higher x than the left side.
        liver, spleen = _centroid(volume.label[0] == 1), _centroid(volume.label[0] == 2)
        right_kidney, left_kidney = _centroid(volume.label[0] == 3), _centroid(volume.label[0] == 4)
        assert liver[0] > spleen[0] and right_kidney[0] > left_kidney[0], name
        # Training samples are axial slices holding organs (plus a few empty ones).
        train = data.train
        assert train.images.shape[1:] == (1, 64, 64) and train.labels.dtype == torch.uint8
        assert len(train) <= raw_shape[2]
        assert (train.labels.flatten(1).amax(1) > 0).float().mean() > 0.8


def test_lps_and_ras_copies_of_one_volume_give_the_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, (12, 10, 6)).astype(np.float32)
    label = np.zeros((12, 10, 6), np.uint8)
    label[8:11, 2:5, 1:4] = 6  # off-centre, so a wrong flip would move it
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    lps = ras.copy()
    lps[:2, :2] *= -1
    lps[:2, 3] = [2.0 * 11, 2.0 * 9]  # same world extent, axes flipped
    splits = {}
    for name, aff, img, lab in (("ras", ras, image, label), ("lps", lps, image[::-1, ::-1], label[::-1, ::-1])):
        write_nifti(tmp_path / f"{name}_img.nii.gz", np.ascontiguousarray(img), aff)
        write_nifti(tmp_path / f"{name}_lab.nii.gz", np.ascontiguousarray(lab), aff)
        splits[name] = [(f"{name}_img.nii.gz", f"{name}_lab.nii.gz")]
    cfg = write_site(tmp_path, "CT", {"training": splits["ras"], "test": splits["ras"] + splits["lps"]}, {"liver": 6})
    data = load_site_data(load_site_config(cfg), ["liver"], (12, 10), splits=("test",))
    a, b = data.test
    torch.testing.assert_close(a.image, b.image)
    torch.testing.assert_close(a.label, b.label)
    assert int(a.label.sum()) == 27


def test_mismatched_image_and_label_name_the_files(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 4), np.float32))
    write_nifti(tmp_path / "lab.nii.gz", np.zeros((8, 6, 4), np.uint8))
    cfg = write_site(tmp_path, "CT", {"training": [("img.nii.gz", "lab.nii.gz")]}, {"liver": 1})
    with pytest.raises(DataError, match=r"img.nii.gz, .*lab.nii.gz: image shape \(8, 8, 4\) and label shape"):
        load_site_data(load_site_config(cfg), ["liver"], (8, 8))


def test_empty_training_list_is_an_error(tmp_path):
    cfg = write_site(tmp_path, "MR", {"training": []}, {"liver": 1})
    with pytest.raises(DataError, match="'training' list is empty"):
        load_site_data(load_site_config(cfg), ["liver"], (8, 8))


def test_background_slice_share_is_seeded(tmp_path):
    label = np.zeros((8, 8, 40), np.uint8)
    label[2:5, 2:5, :5] = 1
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(1).normal(size=(8, 8, 40)).astype(np.float32))
    write_nifti(tmp_path / "lab.nii.gz", label)
    cfg = load_site_config(write_site(tmp_path, "MR", {"training": [("img.nii.gz", "lab.nii.gz")]}, {"liver": 1}))
    runs = [load_site_data(cfg, ["liver"], (8, 8), background_slice_fraction=0.3, seed=s).train for s in (0, 0, 1)]
    assert 5 < len(runs[0]) < 40
    torch.testing.assert_close(runs[0].images, runs[1].images)
    assert len(runs[0]) != len(runs[2]) or not torch.equal(runs[0].images, runs[2].images)


def test_partial_label_site_marks_its_unlabelled_organs(tmp_path):
    """A CHAOS-like site (no pancreas, no gallbladder) loads; its samples say which classes they label."""
    label = np.zeros((8, 8, 4), np.uint8)
    label[1:4, 1:4] = 63  # liver in CHAOS's grey value
    label[5:7, 5:7] = 99  # a structure the site does not list
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32))
    write_nifti(tmp_path / "lab.nii.gz", label)
    splits = {"training": [("img.nii.gz", "lab.nii.gz")], "validation": [("img.nii.gz", "lab.nii.gz")]}
    cfg = load_site_config(write_site(tmp_path, "MR", splits, {"liver": 63, "spleen": 252}))
    data = load_site_data(cfg, ABDOMEN, (8, 8))
    assert data.present_organs == ["liver", "spleen"]
    expected = torch.tensor([True, True, True, False, False, False, False])  # background, liver, spleen, ...
    assert data.train.labelled.shape == (len(data.train), 7)
    assert (data.train.labelled == expected).all()
    assert set(torch.unique(data.train.labels).tolist()) <= {0, 1}


def test_site_without_any_job_organ_is_named(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 4), np.float32))
    write_nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 4), np.uint8))
    cfg = write_site(tmp_path, "CT", {"training": [("img.nii.gz", "lab.nii.gz")]}, {"heart": 1})
    with pytest.raises(DataError, match=r"site_config.json: 'labels' names none of the job's organs"):
        load_site_data(load_site_config(cfg), ["liver", "spleen"], (8, 8))


def test_eval_labels_score_an_organ_the_site_does_not_train_on(tmp_path):
    """Organ transfer: training samples mark the pancreas as unlabelled (its voxels background), the
    validation and test volumes carry it and the site scores it."""
    label = np.zeros((8, 8, 4), np.uint8)
    label[1:4, 1:4] = 1  # liver
    label[5:7, 5:7] = 5  # pancreas: unlabelled for training, labelled for scoring
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32))
    write_nifti(tmp_path / "lab.nii.gz", label)
    case = [("img.nii.gz", "lab.nii.gz")]
    splits = {"training": case, "validation": case, "test": case}
    cfg = write_site(tmp_path, "MR", splits, {"liver": 1}, eval_labels={"liver": 1, "pancreas": 5})
    data = load_site_data(load_site_config(cfg), ABDOMEN, (8, 8), splits=("training", "validation", "test"))
    assert data.present_organs == ["liver"] and data.scored_organs == ["liver", "pancreas"]
    assert set(torch.unique(data.train.labels).tolist()) == {0, 1}
    assert not data.train.labelled[:, ABDOMEN.index("pancreas") + 1].any()
    pancreas_class = ABDOMEN.index("pancreas") + 1
    for volume in data.validation + data.test:
        assert set(torch.unique(volume.label).tolist()) == {0, 1, pancreas_class}
