"""TotalSegmentator converter: per-structure masks merged, meta.csv splits, the MRI release, real fixtures."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from fedgin.tools.data.datasets import totalsegmentator as ts
from fedgin.tools.data.datasets.common import DatasetError, Options
from helpers import ABDOMEN, TOTALSEG_IDS, write_nifti

# blocks 0..4: liver, spleen, stomach (not ours), pancreas, heart
STRUCTURES = ["liver", "spleen", "stomach", "pancreas", "heart"]
AFFINE = np.diag([-1.5, -1.5, 3.0, 1.0])


def make_release(root, fake, subjects=("s0000", "s0001", "s0002", "s0003"), image="ct.nii.gz", meta=True):
    for k, subject in enumerate(subjects):
        write_nifti(root / subject / image, fake.image_volume(k), AFFINE)
        for j, structure in enumerate(STRUCTURES + ["kidney_right", "kidney_left", "gallbladder"]):
            mask = np.zeros(fake.grid, np.uint8)
            if j < len(STRUCTURES):
                mask[fake.block(j)] = 1
            write_nifti(root / subject / "segmentations" / f"{structure}.nii.gz", mask, AFFINE)
    if meta:
        splits = ["train", "train", "val", "test"]
        rows = [f"{s};{40 + i};f;A;ct;{splits[i % 4]}" for i, s in enumerate(subjects)]
        (root / "meta.csv").write_text("\n".join(["image_id;age;gender;institute;study_type;split", *rows]) + "\n")
    return root


def test_ct_release_masks_merged_with_meta_splits(tmp_path, fake, load_site):
    src = make_release(tmp_path / "Totalsegmentator_dataset_v201", fake)
    out = tmp_path / "out"
    before = sorted(src.rglob("*"))
    sites = ts.convert(src, out)
    assert sorted(src.rglob("*")) == before  # nothing written into the release
    site_dir = out / "totalsegmentator-ct"
    datalist = json.loads((site_dir / "datalist.json").read_text())
    assert [e["label"] for e in datalist["training"]] == ["labels/s0000.nii.gz", "labels/s0001.nii.gz"]
    assert datalist["validation"][0]["image"] == str(src / "s0002" / "ct.nii.gz")  # image referenced in place
    assert datalist["test"][0]["label"] == "labels/s0003.nii.gz"
    merged = nib.load(site_dir / "labels" / "s0000.nii.gz")
    assert merged.get_data_dtype() == np.uint8 and np.allclose(merged.affine, AFFINE)
    values = np.asarray(merged.dataobj)
    assert values[fake.block(0)].min() == 5 and values[fake.block(3)].min() == 7  # liver 5, pancreas 7 (v2 ids)
    assert set(np.unique(values)) == {0, 1, 5, 7}  # stomach and heart are not merged for the abdomen task
    _, _, counts = load_site(sites["totalsegmentator-ct"])
    assert counts == {1: 2 * fake.block_voxels(0), 2: 2 * fake.block_voxels(1), 5: 2 * fake.block_voxels(3)}


def test_mri_release_heart_task_and_seeded_split_without_meta(tmp_path, fake, load_site):
    src = make_release(
        tmp_path / "TotalsegmentatorMRI", fake, subjects=("s0001", "s0002"), image="mri.nii.gz", meta=False
    )
    sites = ts.convert(src, tmp_path / "out", options=Options(task="heart", val=0, test=0))
    config = json.loads(sites["totalsegmentator-mr"].read_text())
    assert config["modality"] == "MR" and config["labels"] == {"heart": 22}  # total_mr id
    _, data, counts = load_site(sites["totalsegmentator-mr"], ["heart"])
    assert counts == {1: 2 * fake.block_voxels(4)}


def test_errors(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no subject folders \(s0000, s0001, ...\)"):
        ts.convert(tmp_path / "empty", tmp_path / "out")
    src = make_release(tmp_path / "release", fake, subjects=("s0000",), meta=False)
    (src / "s0000" / "segmentations" / "pancreas.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"s0000/segmentations/pancreas.nii.gz: mask of pancreas missing"):
        ts.convert(src, tmp_path / "out")
    (src / "meta.csv").write_text("image_id,split\ns0000,holdout\n")
    with pytest.raises(DatasetError, match="s0000 has split 'holdout'"):
        ts.convert(src, tmp_path / "out")
    (src / "s0000" / "ct.nii.gz").rename(src / "s0000" / "image.nii.gz")
    with pytest.raises(DatasetError, match="neither ct.nii.gz nor mri.nii.gz; pass --modality"):
        ts.convert(src, tmp_path / "out")


@pytest.mark.parametrize(
    "modality, image, seg",
    [("CT", "example_ct_sm.nii.gz", "example_seg.nii.gz"), ("MR", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz")],
)
def test_real_fixtures_both_label_styles(tmp_path, fixtures_dir, load_site, modality, image, seg):
    """The real TotalSegmentator test files, as a ready multi-label file (s0000) and as per-organ masks (s0001)."""
    image_file = ts.IMAGE_FILES[modality]
    src = tmp_path / "release"
    for subject in ("s0000", "s0001"):
        (src / subject).mkdir(parents=True)
        os.symlink(fixtures_dir / image, src / subject / image_file)
    os.symlink(fixtures_dir / seg, src / "s0000" / "segmentations.nii.gz")
    ref = nib.load(fixtures_dir / seg)
    seg_ids = np.asarray(ref.dataobj)
    for organ, label_id in TOTALSEG_IDS.items():
        write_nifti(
            src / "s0001" / "segmentations" / f"{organ}.nii.gz", (seg_ids == label_id).astype(np.uint8), ref.affine
        )
    sites = ts.convert(src, tmp_path / "out", options=Options(val=0, test=0))
    name = f"totalsegmentator-{modality.lower()}"
    datalist = json.loads((tmp_path / "out" / name / "datalist.json").read_text())
    assert [e["label"] for e in datalist["training"]] == [
        str(src / "s0000" / "segmentations.nii.gz"),
        "labels/s0001.nii.gz",
    ]
    merged = np.asarray(nib.load(tmp_path / "out" / name / "labels" / "s0001.nii.gz").dataobj)
    ours = np.isin(seg_ids, list(TOTALSEG_IDS.values()))
    assert np.array_equal(merged, np.where(ours, seg_ids, 0))  # the merge rebuilds TotalSegmentator's own ids
    site, data, counts = load_site(sites[name])
    assert site.modality == modality and set(data.present_organs) == set(ABDOMEN)
    assert counts.get(1, 0) > 0  # liver present in the real scans
