"""CHAOS converter on real DICOM files (written with pydicom) and PNG masks in the Train_Sets layout."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fedgin.tools.data.datasets import chaos
from fedgin.tools.data.datasets.common import DatasetError, Options
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROWS, COLS, SLICES = 16, 16, 6
PIXEL_SPACING = (2.0, 1.0)  # (between rows, between columns): unequal, to catch a swap
SLICE_GAP = 3.0
SECRET = "DOE^JANE"  # a patient name that must never reach outputs or messages
# MR mask gray values slightly off the nominal 63/126/189/252, inside the documented ranges; 32 is not an organ
GRAYS = {"liver": 60, "kidney_right": 130, "kidney_left": 180, "spleen": 245}


def write_dicom(path, pixels, z, instance, modality="MR"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.Modality = SECRET, "123-45-678", modality
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-10.0, -20.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLS, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if modality == "CT":
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def mask_slice(k):
    """Slice k's mask: organs only on the first two files by name, each in its own rows."""
    gray = np.zeros((ROWS, COLS), np.uint8)
    gray[14:16, :] = 32  # a value outside every organ range stays background
    if k < 2:
        for j, value in enumerate(GRAYS.values()):
            gray[2 * j : 2 * j + 2, 0 : j + 3] = value  # rows 2j.., columns 0..j+2
    return gray


def make_patient(series_dir, ground_dir, stem, png_stem, modality="MR"):
    """File k (by name) lies at z = 100 - 3k (names run head to feet) and has pixel value 1000 + k."""
    for k in range(SLICES):
        pixels = np.full((ROWS, COLS), 1000 + k)
        pixels[0, 1] = 4000  # marks row 0, column 1
        write_dicom(series_dir / f"{stem}{k + 1:05d}.dcm", pixels, 100.0 - SLICE_GAP * k, k + 1, modality)
        Image.fromarray(mask_slice(k) if modality == "MR" else (mask_slice(k) > 50).astype(np.uint8) * 255).save(
            ground_dir / f"{png_stem}{k + 1:05d}.png" if modality == "MR" else ground_dir / f"liver_GT_{k:03d}.png"
        )


def make_chaos(root, patients=("1", "2", "5")):
    mr = root / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    for p in patients:
        (mr / p / "T2SPIR" / "Ground").mkdir(parents=True)
        make_patient(mr / p / "T2SPIR" / "DICOM_anon", mr / p / "T2SPIR" / "Ground", "IMG-0002-", "IMG-0002-")
        (mr / p / "T1DUAL" / "Ground").mkdir(parents=True)
        make_patient(
            mr / p / "T1DUAL" / "DICOM_anon" / "InPhase", mr / p / "T1DUAL" / "Ground", "IMG-0004-", "IMG-0004-"
        )
    ct = root / "CHAOS_Train_Sets" / "Train_Sets" / "CT" / "1"
    (ct / "Ground").mkdir(parents=True)
    make_patient(ct / "DICOM_anon", ct / "Ground", "i", "", modality="CT")
    return root / "CHAOS_Train_Sets"


def test_t2spir_dicom_and_png_become_one_grid(tmp_path, load_site, capsys, caplog):
    src = make_chaos(tmp_path)
    sites = chaos.convert(src, tmp_path / "out", options=Options(val=1, test=1))
    site_dir = tmp_path / "out" / "chaos-mr-t2spir"
    datalist = json.loads((site_dir / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    case = datalist["training"][0]
    image, label = nib.load(site_dir / case["image"]), nib.load(site_dir / case["label"])
    assert label.get_data_dtype() == np.uint8 and np.allclose(image.affine, label.affine)
    img, lab = np.asarray(image.dataobj), np.asarray(label.dataobj)
    assert img.shape == lab.shape == (COLS, ROWS, SLICES)
    # stacked feet to head: NIfTI slice 0 is the last file by name (z = 85), slice 5 the first (z = 100)
    assert [int(img[5, 5, k]) for k in range(SLICES)] == [1005, 1004, 1003, 1002, 1001, 1000]
    assert np.allclose(image.affine @ [0, 0, 0, 1], [10.0, 20.0, 100.0 - SLICE_GAP * 5, 1])  # LPS -> RAS
    assert np.allclose(np.diag(image.affine)[:3], [-PIXEL_SPACING[1], -PIXEL_SPACING[0], SLICE_GAP])
    assert img[1, 0, 5] == 4000  # DICOM row 0, column 1 -> voxel (1, 0)
    # masks follow their DICOM by name: organs on the first two files, i.e. the two top slices
    assert set(np.unique(lab[..., :4])) == {0} and lab[0, 0, 4] == 1 and lab[0, 0, 5] == 1
    for j, label_id in enumerate((1, 2, 3, 4)):  # liver, right kidney, left kidney, spleen
        assert np.all(lab[0 : j + 3, 2 * j : 2 * j + 2, 5] == label_id)
    assert lab[:, 14:16, 5].max() == 0

    config = json.loads(sites["chaos-mr-t2spir"].read_text())
    assert config["labels"] == {"liver": 1, "spleen": 4, "kidney_right": 2, "kidney_left": 3}  # no pancreas/GB
    site, data, counts = load_site(sites["chaos-mr-t2spir"])
    assert data.present_organs == ["liver", "spleen", "kidney_right", "kidney_left"]
    # classes: 1 liver, 2 spleen, 3 kidney_right, 4 kidney_left; each on 2 slices of (j + 3) x 2 voxels
    assert counts == {1: 2 * 2 * 3, 3: 2 * 2 * 4, 4: 2 * 2 * 5, 2: 2 * 2 * 6}
    written = b"".join(p.read_bytes() for p in site_dir.rglob("*") if p.is_file())
    logged = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert SECRET.encode() not in written and SECRET not in logged and "123-45-678" not in logged


def test_t1dual_in_phase_and_ct(tmp_path, load_site):
    src = make_chaos(tmp_path, patients=("1",))
    sites = chaos.convert(src, tmp_path / "out", "MR", Options(val=0, test=0), sequence="t1dual_in")
    assert list(sites) == ["chaos-mr-t1dual-in"]
    load_site(sites["chaos-mr-t1dual-in"])
    sites = chaos.convert(src, tmp_path / "out", "CT", Options(val=0, test=0))
    config = json.loads(sites["chaos-ct"].read_text())
    assert config["modality"] == "CT" and config["labels"] == {"liver": 1}
    site, data, counts = load_site(sites["chaos-ct"])
    image = nib.load(site.cases("training")[0]["image"])
    assert np.asarray(image.dataobj)[5, 5, 0] == 1005 - 1024  # RescaleIntercept applied: Hounsfield units
    assert list(counts) == [1] and data.present_organs == ["liver"]


def test_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"expected Train_Sets/MR or Train_Sets/CT"):
        chaos.convert(tmp_path / "empty", tmp_path / "out")
    src = make_chaos(tmp_path / "c", patients=("1",))
    with pytest.raises(DatasetError, match="CHAOS MR has no heart"):
        chaos.convert(src, tmp_path / "out", options=Options(task="heart"))
    ground = src / "Train_Sets" / "MR" / "1" / "T2SPIR" / "Ground"
    sorted(ground.iterdir())[-1].unlink()
    with pytest.raises(DatasetError, match=r"T2SPIR/Ground: 5 PNG masks for 6 DICOM slices"):
        chaos.convert(src, tmp_path / "out", options=Options(val=0, test=0))
    dcm = sorted((src / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon" / "InPhase").iterdir())[0]
    dcm.write_bytes(b"not a dicom")
    with pytest.raises(DatasetError, match=r"InPhase/IMG-0004-00001.dcm: cannot read DICOM pixel data"):
        chaos.convert(src, tmp_path / "out", options=Options(val=0, test=0), sequence="t1dual_in")
