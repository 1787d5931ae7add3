"""The command line: help, --gin/--no-gin and --set KEY=VALUE, errors that name the problem."""

import argparse

import numpy as np
import pytest
import torch
from fedgin.tools.cli import build_parser, main
from fedgin.tools.job_folder import job_training_config
from helpers import REPO, write_nifti, write_site


def test_set_changes_the_built_jobs_training_options(tmp_path):
    out = tmp_path / "job"
    argv = [
        "build-job",
        str(REPO / "jobs/fedavg_abdomen"),
        "--out",
        str(out),
        "--set",
        "augmentation=randconv",
        "--set",
        "local_norm=true",
        "--set",
        'augmentation_options={"kernel_sizes": [1, 3]}',
        "--set",
        "lr=1e-3",
    ]
    with pytest.raises(SystemExit, match="--no-gin and --set augmentation=randconv"):
        main([*argv, "--no-gin"])
    assert main(argv) == 0
    config = job_training_config(out)
    assert config.augmentation == "randconv" and config.local_norm is True and config.lr == 1e-3
    assert config.augmentation_options == {"kernel_sizes": [1, 3]}
    assert config.model.affine_norm is True


@pytest.mark.parametrize(
    "item, message",
    [("augmentation", "KEY=VALUE"), ("learning_rate=1", "unknown training option"), ("augmentation=fancy", "fancy")],
)
def test_a_bad_set_is_named_before_anything_runs(tmp_path, item, message):
    with pytest.raises(SystemExit, match=message):
        main(["build-job", str(REPO / "jobs/fedavg_abdomen"), "--out", str(tmp_path / "job"), "--set", item])
    assert not (tmp_path / "job").exists()


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["-h"])
    out = capsys.readouterr().out
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) >= 12 and "write-jobs" in sub.choices
    assert [c for c in sub.choices if c not in out] == []
    assert "COMMAND -h" in out


def test_evaluate_on_an_empty_split_is_an_error_naming_it(tmp_path, capsys):
    write_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 4), np.float32))
    write_nifti(tmp_path / "lab.nii.gz", np.ones((8, 8, 4), np.uint8))
    site = write_site(tmp_path, "CT", {"training": [("img.nii.gz", "lab.nii.gz")], "test": []}, {"liver": 1})
    job = REPO / "jobs/fedgin_abdomen"
    model = tmp_path / "model.pt"
    torch.save({"model": job_training_config(job).build_model().state_dict()}, model)
    rc = main(["evaluate", "--model", str(model), "--site-config", str(site), "--job", str(job)])
    assert rc == 1
    assert f"{site}: its 'test' split lists no volumes" in capsys.readouterr().err
