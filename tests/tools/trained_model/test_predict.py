"""``python -m fedgin predict``: inputs of every kind, the files it writes, and errors that name the problem."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from fedgin.tools.cli import main
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.job_folder import job_training_config
from fedgin.tools.trained_model.predict import model_kind
from helpers import FIXTURES, REPO, TINY_TRAINING


@pytest.fixture
def job_and_model(tmp_path):
    job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job", executor_overrides=TINY_TRAINING)
    model = tmp_path / "FL_global_model.pt"
    torch.save({"model": job_training_config(job).build_model().state_dict()}, model)
    return job, model


def _run(job, model, *args):
    return main(["predict", "--model", str(model), "--job", str(job), *args])


def test_a_file_a_folder_and_a_site_config(job_and_model, fixture_sites, tmp_path, capsys):
    job, model = job_and_model
    ct = FIXTURES / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    assert _run(job, model, "--input", str(ct), "--modality", "CT", "--out", str(out), "--preview") == 0
    mask = nib.load(out / "example_ct_sm_seg.nii.gz")
    assert mask.shape == nib.load(ct).shape and np.allclose(mask.affine, nib.load(ct).affine, atol=1e-4)
    assert mask.get_data_dtype() == np.uint8
    labels = json.loads((out / "labels.json").read_text())
    assert labels["0"] == "background" and labels["1"] == "liver" and len(labels) == 7
    result = json.loads((out / "predictions.json").read_text())
    assert result["model_kind"] == "final" and result["modality"] == "CT"
    assert set(result["files"][0]["organ_volumes_ml"]) == set(list(labels.values())[1:])
    assert (out / "example_ct_sm_preview.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "[1/1] example_ct_sm.nii.gz -> example_ct_sm_seg.nii.gz" in printed and "| file | liver" in printed

    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(FIXTURES / "example_mr_sm.nii.gz", folder / "a.nii.gz")
    shutil.copy(FIXTURES / "example_mr_sm.nii.gz", folder / "b.nii.gz")
    assert _run(job, model, "--input", str(folder), "--modality", "mri", "--out", str(tmp_path / "f")) == 0
    assert sorted(p.name for p in (tmp_path / "f").glob("*_seg.nii.gz")) == ["a_seg.nii.gz", "b_seg.nii.gz"]

    # A site config brings its modality (MR here) and datalist; the named split is segmented.
    assert _run(job, model, "--input", str(fixture_sites["site-mri"]), "--out", str(tmp_path / "s")) == 0
    assert json.loads((tmp_path / "s" / "predictions.json").read_text())["modality"] == "MR"


def test_a_decathlon_datalist(job_and_model, tmp_path):
    job, model = job_and_model
    shutil.copy(FIXTURES / "example_ct_sm.nii.gz", tmp_path / "case1.nii.gz")
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": [], "test": ["case1.nii.gz"], "holdout": [{"image": "case1.nii.gz"}]}))
    for split in ("test", "holdout"):
        out = tmp_path / split
        assert _run(job, model, "--input", str(datalist), "--modality", "CT", "--split", split, "--out", str(out)) == 0
        assert (out / "case1_seg.nii.gz").is_file()


def test_bad_inputs_are_errors_naming_the_file(job_and_model, tmp_path, capsys):
    job, model = job_and_model
    ct = FIXTURES / "example_ct_sm.nii.gz"
    out = str(tmp_path / "out")
    assert _run(job, model, "--input", str(ct), "--out", out) == 1
    assert "example_ct_sm.nii.gz: give --modality CT or MR" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert _run(job, model, "--input", str(notes), "--modality", "CT", "--out", out) == 1
    assert "notes.txt: not a NIfTI file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _run(job, model, "--input", str(tmp_path / "empty"), "--modality", "CT", "--out", out) == 1
    assert "empty: no NIfTI files" in capsys.readouterr().err
    assert _run(job, model, "--input", str(ct), "--modality", "PET", "--out", out) == 1
    assert "unknown modality 'PET'" in capsys.readouterr().err
    twins = tmp_path / "twins"
    for sub in ("x", "y"):
        (twins / sub).mkdir(parents=True)
        shutil.copy(ct, twins / sub / "scan.nii.gz")
    datalist = tmp_path / "twins.json"
    datalist.write_text(json.dumps({"test": ["twins/x/scan.nii.gz", "twins/y/scan.nii.gz"]}))
    assert _run(job, model, "--input", str(datalist), "--modality", "CT", "--out", out) == 1
    assert "would both be written as scan_seg.nii.gz" in capsys.readouterr().err
    assert _run(job, model, "--input", str(datalist), "--modality", "CT", "--split", "validation", "--out", out) == 1
    assert "twins.json: no 'validation' list" in capsys.readouterr().err
    # A model of another job (the heart job's 2 classes against the abdomen's 7) is refused.
    heart = build_job(REPO / "jobs/fedgin_heart", tmp_path / "heart", executor_overrides=TINY_TRAINING)
    assert _run(heart, model, "--input", str(ct), "--modality", "CT", "--out", out) == 1
    err = capsys.readouterr().err
    assert "FL_global_model.pt does not fit this job's model (organs ['heart'])" in err and "shape" in err


def test_model_kind_follows_flare_names():
    assert model_kind("ws/results/FL_global_model.pt") == "final"
    assert model_kind("ws/app_server/best_FL_global_model.pt") == "best"


def test_a_one_slice_scan_gets_a_mask_of_its_exact_shape(job_and_model, tmp_path):
    """A 2D acquisition stored as one slice (H, W, 1): the mask keeps the singleton axis and the affine."""
    job, model = job_and_model
    ct = nib.load(FIXTURES / "example_ct_sm.nii.gz")
    one = nib.Nifti1Image(np.asarray(ct.dataobj)[:, :, 3:4].astype(np.float32), ct.affine)
    nib.save(one, tmp_path / "one.nii.gz")
    out = tmp_path / "out"
    assert _run(job, model, "--input", str(tmp_path / "one.nii.gz"), "--modality", "CT", "--out", str(out)) == 0
    mask = nib.load(out / "one_seg.nii.gz")
    assert mask.shape == one.shape and np.allclose(mask.affine, one.affine, atol=1e-4)
