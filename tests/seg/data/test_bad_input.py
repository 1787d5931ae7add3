"""Bad site input gives an error that names the file or key and the problem.

Cases tested elsewhere: image/label shapes differ and an empty training list
(tests/data/test_site_data.py); a datalist entry pointing to a missing file and a site config
with unknown or missing keys or an unknown modality (tests/test_site_config.py).
"""

import logging

import numpy as np
import pytest
from fedgin.seg.data.site_data import DataError, load_site_data
from fedgin.seg.site_config import load_site_config
from helpers import write_nifti, write_site


def _site(tmp_path, image=None, label=None, image_affine=None, labels=None):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 8, 4)).astype(np.float32) if image is None else image
    if label is None:
        label = np.zeros((8, 8, 4), np.uint8)
        label[2:5, 2:5] = 1
    write_nifti(tmp_path / "img.nii.gz", image, image_affine)
    write_nifti(tmp_path / "lab.nii.gz", label)
    cfg = write_site(tmp_path, "CT", {"training": [("img.nii.gz", "lab.nii.gz")]}, labels or {"liver": 1})
    return load_site_config(cfg)


def _load(site):
    return load_site_data(site, ["liver"], (8, 8))


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_corrupt_or_truncated_nifti_names_the_file(tmp_path, damage):
    site = _site(tmp_path)
    path = tmp_path / "img.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"garbage" * 50)
    with pytest.raises(DataError, match=r"img.nii.gz: not a readable NIfTI file, corrupt or truncated\?") as e:
        _load(site)
    assert "lab.nii.gz" not in str(e.value)  # the broken file, not both


def test_image_and_label_on_different_grids(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 10.0
    site = _site(tmp_path, image_affine=shifted)
    with pytest.raises(DataError, match=r"img.nii.gz, .*lab.nii.gz: image and label affines differ"):
        _load(site)


def test_label_ids_not_in_the_site_config(tmp_path, caplog):
    """Unlisted ids are background by design; training labels with none of the listed ids are an error."""
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:5, 2:5] = 7  # e.g. TotalSegmentator v1's id where the config says v2's
    site = _site(tmp_path, label=label, labels={"liver": 5})
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as e:
        _load(site)
    message = str(e.value)
    assert "site_config.json: 'labels' ids [5] occur in none of the training labels" in message
    assert "lab.nii.gz holds ids [0, 7]" in message
    assert any("lab.nii.gz: holds none of the label ids [5]" in r.getMessage() for r in caplog.records)


def test_nan_or_inf_voxels(tmp_path):
    image = np.ones((8, 8, 4), np.float32)
    image[1, 2, 3] = np.inf
    with pytest.raises(DataError, match=r"img.nii.gz, .*lab.nii.gz: image contains NaN or Inf voxels"):
        _load(_site(tmp_path, image=image))


@pytest.mark.parametrize(
    ("shape", "message"),
    [((8, 8), r"image is 2D \(shape \(8, 8\)\); a 3D volume is expected"), ((8, 8, 4, 3), r"image is 4D \(3 volumes")],
)
def test_2d_or_4d_image_where_3d_is_expected(tmp_path, shape, message):
    label = np.zeros(shape[:3], np.uint8)
    label[2:5, 2:5] = 1
    site = _site(tmp_path, image=np.ones(shape, np.float32), label=label)
    with pytest.raises(DataError, match=r"img.nii.gz, .*lab.nii.gz: " + message):
        _load(site)
