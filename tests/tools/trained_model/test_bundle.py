"""``python -m fedgin export``: a MONAI bundle that MONAI runs without fedgin, giving predict's masks."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from fedgin.tools.cli import main
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.job_folder import job_training_config
from helpers import FIXTURES, REPO, TINY_TRAINING

# Slices resized to the model's size, or resampled to 5 mm (the fixtures have 3 mm), cropped to the
# body and covered by a sliding window (fedgin.seg.data.geometry).
GRIDS = {"resize": {}, "spacing": {"pixel_spacing": [5.0, 5.0]}}


def _job_and_model(tmp_path, grid: str = "resize"):
    overrides = {**TINY_TRAINING, **GRIDS[grid]}
    job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job", executor_overrides=overrides)
    model = tmp_path / "FL_global_model.pt"
    torch.save({"model": job_training_config(job).build_model().state_dict()}, model)
    return job, model


def _monai_bundle_run(bundle, scans, masks, tmp_path):
    """``python -m monai.bundle run`` in a process where importing fedgin fails."""
    blocker = tmp_path / "no_fedgin" / "fedgin"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('the bundle must not need fedgin')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(bundle / "configs/inference.json"),
        "--bundle_root",
        str(bundle),
        "--input_dir",
        str(scans),
        "--output_dir",
        str(masks),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# The MR fixture is LPS: the spacing grid's inversion must also undo the reorientation.
@pytest.mark.parametrize(
    "grid, modality, scan",
    [
        ("resize", "MR", "example_mr_sm.nii.gz"),
        ("resize", "CT", "example_ct_sm.nii.gz"),
        ("spacing", "MR", "example_mr_sm.nii.gz"),
    ],
)
def test_the_bundle_runs_without_fedgin_and_gives_predicts_masks(tmp_path, grid, modality, scan):
    job, model = _job_and_model(tmp_path, grid)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(FIXTURES / scan, scans / scan)
    full = nib.load(FIXTURES / scan)  # and a one-slice scan (a 2D acquisition): its mask keeps the axis
    nib.save(nib.Nifti1Image(np.asarray(full.dataobj)[:, :, 3:4], full.affine, full.header), scans / "one.nii.gz")
    bundle = tmp_path / "bundle"
    argv = [
        "export",
        "--model",
        str(model),
        "--job",
        str(job),
        "--out",
        str(bundle),
        "--modality",
        modality,
        "--trained-on",
        "CT,MR",
    ]
    assert main(argv) == 0
    assert (bundle / "models/model.pt").is_file() and (bundle / "scripts/restore.py").is_file()
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["fedgin"]["modality"] == modality and meta["fedgin"]["trained_on_modalities"] == ["CT", "MR"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "liver"
    assert meta["fedgin"]["flare_job"] == "fedgin_abdomen" and meta["fedgin"]["rounds"] == 30
    resamples = job_training_config(job).pixel_spacing is not None
    assert ("Spacingd" in (bundle / "configs/inference.json").read_text()) == resamples
    for name in ("metadata.json", "inference.json"):  # no path of this machine (sites, data, model) inside
        assert str(tmp_path) not in (bundle / "configs" / name).read_text()

    _monai_bundle_run(bundle, scans, tmp_path / "bundle_masks", tmp_path)
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--job",
                str(job),
                "--input",
                str(scans),
                "--modality",
                modality,
                "--out",
                str(tmp_path / "predict_masks"),
            ]
        )
        == 0
    )
    stem = scan.replace(".nii.gz", "")
    ours = nib.load(tmp_path / "predict_masks" / f"{stem}_seg.nii.gz")
    theirs = nib.load(tmp_path / "bundle_masks" / f"{stem}_seg.nii.gz")
    image = nib.load(FIXTURES / scan)
    assert theirs.shape == image.shape and np.allclose(theirs.affine, image.affine, atol=1e-4)
    assert np.array_equal(np.asarray(theirs.dataobj), np.asarray(ours.dataobj))
    assert len(np.unique(np.asarray(ours.dataobj))) > 1  # not a blank mask: the comparison means something
    one = nib.load(scans / "one.nii.gz")
    for masks in ("predict_masks", "bundle_masks"):
        mask = nib.load(tmp_path / masks / "one_seg.nii.gz")
        assert mask.shape == one.shape and np.allclose(mask.affine, one.affine, atol=1e-4), masks


def test_the_bundles_body_crop_selects_what_fedgins_does():
    from fedgin.seg.config import TrainConfig
    from fedgin.seg.data.geometry import body_in_plane
    from fedgin.tools.trained_model.bundle import model_grid_transforms

    config = TrainConfig.from_dict({"organs": ["liver"], "pixel_spacing": [1.5, 1.5]})
    (crop,) = [t for t in model_grid_transforms(config) if t["_target_"] == "CropForegroundd"]
    select = eval(crop["select_fn"][1:], {"torch": torch})  # MONAI's "$" expression
    body = torch.zeros(1, 20, 16, 5)
    body[0, 4:12, 3:9, 2] = 0.5
    for image in (body, torch.zeros(1, 20, 16, 5)):  # a body in one slice; a blank scan (kept whole)
        assert torch.equal(select(image), torch.as_tensor(body_in_plane(image)))
    assert bool(select(torch.zeros(1, 20, 16, 5)).all())


def test_export_refuses_what_it_cannot_represent(tmp_path, capsys):
    job, model = _job_and_model(tmp_path)
    heart = build_job(REPO / "jobs/fedgin_heart", tmp_path / "heart", executor_overrides=TINY_TRAINING)
    args = ["--out", str(tmp_path / "b"), "--modality", "CT", "--trained-on", "CT,MR"]
    assert main(["export", "--model", str(model), "--job", str(heart), *args]) == 1
    assert "does not fit this job's model" in capsys.readouterr().err
    local = build_job(
        REPO / "jobs/fedgin_abdomen", tmp_path / "local", executor_overrides={**TINY_TRAINING, "local_norm": True}
    )
    torch.save({"model": job_training_config(local).build_model().state_dict()}, tmp_path / "local.pt")
    assert main(["export", "--model", str(tmp_path / "local.pt"), "--job", str(local), *args]) == 1
    assert "local_norm" in capsys.readouterr().err
    stacked = build_job(
        REPO / "jobs/fedgin_abdomen", tmp_path / "stacked", executor_overrides={**TINY_TRAINING, "context_slices": 1}
    )
    torch.save({"model": job_training_config(stacked).build_model().state_dict()}, tmp_path / "stacked.pt")
    assert main(["export", "--model", str(tmp_path / "stacked.pt"), "--job", str(stacked), *args]) == 1
    assert "context_slices (2.5D)" in capsys.readouterr().err
