"""BTCV / Synapse converter: the RawData download, the MONAI dataset_0.json layout and the CLI."""

from __future__ import annotations

import json

import pytest
from fedgin.tools.cli import main
from fedgin.tools.data.datasets import btcv
from fedgin.tools.data.datasets.common import DatasetError, Options
from helpers import write_nifti

# blocks 0..4: liver (6), spleen (1), pancreas (11), portal/splenic vein (10, not ours), gallbladder (4)
IDS = [6, 1, 11, 10, 4]


def make_rawdata(root, fake, n=6):
    for i in range(1, n + 1):
        write_nifti(root / "RawData" / "Training" / "img" / f"img{i:04d}.nii.gz", fake.image_volume(i))
        write_nifti(root / "RawData" / "Training" / "label" / f"label{i:04d}.nii.gz", fake.label_volume(IDS))
    write_nifti(root / "RawData" / "Testing" / "img" / "img0061.nii.gz", fake.image_volume(61))
    return root


def test_rawdata_layout_seeded_split(tmp_path, fake, load_site):
    src = make_rawdata(tmp_path / "btcv", fake)
    sites = btcv.convert(src, tmp_path / "out", options=Options(val=1, test=1, seed=1))
    datalist = json.loads((tmp_path / "out" / "btcv-ct" / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [4, 1, 1]
    assert datalist["training"][0]["image"].startswith("RawData/Training/img/img")
    again = btcv.convert(src, tmp_path / "out2", options=Options(val=1, test=1, seed=1))
    assert json.loads((tmp_path / "out2" / "btcv-ct" / "datalist.json").read_text()) == datalist  # seeded
    _, data, counts = load_site(sites["btcv-ct"])
    v = fake.block_voxels
    # 1 liver, 2 spleen, 5 pancreas (BTCV 11), 6 gallbladder; the veins (10) are background
    assert counts == {1: 4 * v(0), 2: 4 * v(1), 5: 4 * v(2), 6: 4 * v(4)}
    assert again


def test_monai_dataset_0_json_keeps_its_validation(tmp_path, fake, load_site):
    src = tmp_path / "BTCV"
    entries = []
    for i in range(1, 6):
        write_nifti(src / "imagesTr" / f"img{i:04d}.nii.gz", fake.image_volume(i))
        write_nifti(src / "labelsTr" / f"label{i:04d}.nii.gz", fake.label_volume(IDS))
        entries.append({"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"})
    (src / "dataset_0.json").write_text(
        json.dumps({"training": entries[:4], "validation": entries[4:], "test": ["imagesTs/img0061.nii.gz"]})
    )
    sites = btcv.convert(src, tmp_path / "out", options=Options(test=1))
    datalist = json.loads((tmp_path / "out" / "btcv-ct" / "datalist.json").read_text())
    assert datalist["validation"] == entries[4:] and len(datalist["test"]) == 1 and len(datalist["training"]) == 3
    load_site(sites["btcv-ct"])


def test_cli_prepare_btcv(tmp_path, fake, capsys):
    src = make_rawdata(tmp_path / "btcv", fake, n=3)
    rc = main(["prepare", "btcv", "--src", str(src), "--out", str(tmp_path / "out"), "--max-cases", "1"])
    assert rc == 0
    assert f"btcv-ct: {tmp_path / 'out' / 'btcv-ct' / 'site_config.json'}" in capsys.readouterr().out
    rc = main(["prepare", "btcv", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert rc == 1 and "nowhere: expected the BTCV dataset folder" in capsys.readouterr().err


def test_errors(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"expected RawData/Training/img \+ RawData/Training/label"):
        btcv.convert(tmp_path / "empty", tmp_path / "out")
    src = make_rawdata(tmp_path / "btcv", fake, n=2)
    (src / "RawData" / "Training" / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"img0002.nii.gz: its label .*label0002.nii.gz is missing"):
        btcv.convert(src, tmp_path / "out")
    with pytest.raises(DatasetError, match="BTCV is CT only"):
        btcv.convert(src, tmp_path / "out", "MR")
