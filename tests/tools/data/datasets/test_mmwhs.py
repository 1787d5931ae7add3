"""MM-WHS converter: whole heart (7 values merged) and substructures, CT and MR."""

from __future__ import annotations

import json

import pytest
from fedgin.tools.data.datasets import mmwhs
from fedgin.tools.data.datasets.common import HEART_SUBSTRUCTURES, DatasetError, Options
from helpers import write_nifti

# blocks 0..6 in HEART_SUBSTRUCTURES order: LV 500, RV 600, LA 420, RA 550, myocardium 205, aorta 820, PA 850
IDS = [500, 600, 420, 550, 205, 820, 850]


def make_mmwhs(root, fake, n=3, la_value=420):
    for mod in ("ct", "mr"):
        for i in range(1001, 1001 + n):
            ids = [la_value if v == 420 and mod == "mr" else v for v in IDS]
            write_nifti(root / f"{mod}_train" / f"{mod}_train_{i}_image.nii.gz", fake.image_volume(i))
            write_nifti(root / f"{mod}_train" / f"{mod}_train_{i}_label.nii.gz", fake.label_volume(ids, dtype="int16"))
    write_nifti(root / "ct_test" / "ct_test_2001_image.nii.gz", fake.image_volume(2001))
    return root


def test_whole_heart_both_modalities(tmp_path, fake, load_site):
    src = make_mmwhs(tmp_path / "MM-WHS", fake)
    sites = mmwhs.convert(src, tmp_path / "out", options=Options(task="heart", val=0, test=1))
    assert set(sites) == {"mmwhs-ct", "mmwhs-mr"}
    config = json.loads(sites["mmwhs-ct"].read_text())
    assert config["labels"] == {"heart": [205, 420, 421, 500, 550, 600, 820, 850]}
    for name in sites:
        _, data, counts = load_site(sites[name], ["heart"])
        assert counts == {1: 2 * sum(fake.block_voxels(j) for j in range(7))}


def test_substructures_and_the_stray_421(tmp_path, fake, load_site):
    src = make_mmwhs(tmp_path / "MM-WHS", fake, la_value=421)
    sites = mmwhs.convert(src, tmp_path / "out", "MR", Options(task="heart", classes="substructures", val=0, test=0))
    _, data, counts = load_site(sites["mmwhs-mr"], HEART_SUBSTRUCTURES)
    assert counts == {j + 1: 3 * fake.block_voxels(j) for j in range(7)}  # 421 counted as left atrium


def test_errors(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="expected a ct_train/ or mr_train/ folder"):
        mmwhs.convert(tmp_path / "empty", tmp_path / "out", options=Options(task="heart"))
    src = make_mmwhs(tmp_path / "MM-WHS", fake, n=1)
    with pytest.raises(DatasetError, match="MM-WHS has no abdomen labels"):
        mmwhs.convert(src, tmp_path / "out")
    (src / "mr_train" / "mr_train_1001_label.nii.gz").unlink()
    with pytest.raises(
        DatasetError, match="mr_train_1001_image.nii.gz: its label mr_train_1001_label.nii.gz is missing"
    ):
        mmwhs.convert(src, tmp_path / "out", "MR", Options(task="heart"))
