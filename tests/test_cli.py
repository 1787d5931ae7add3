"""Command-line changes of a job's training options: --gin/--no-gin and --set KEY=VALUE."""

import pytest
from fedgin.cli import main
from fedgin.jobs import job_training_config
from helpers import REPO


def test_set_changes_the_built_jobs_training_options(tmp_path):
    out = tmp_path / "job"
    argv = ["build-job", str(REPO / "jobs/fedavg_abdomen"), "--out", str(out), "--set", "augmentation=randconv",
            "--set", "local_norm=true", "--set", 'augmentation_options={"kernel_sizes": [1, 3]}', "--set", "lr=1e-3",
            "--gin"]  # fmt: skip
    assert main(argv) == 0
    config = job_training_config(out)
    assert config.augmentation == "randconv" and config.local_norm is True and config.lr == 1e-3
    assert config.augmentation_options == {"kernel_sizes": [1, 3]}
    assert config.gin.enabled is True and config.model.affine_norm is True


@pytest.mark.parametrize(
    "item, message",
    [("augmentation", "KEY=VALUE"), ("learning_rate=1", "unknown training option"), ("augmentation=fancy", "fancy")],
)
def test_a_bad_set_is_named_before_anything_runs(tmp_path, item, message):
    with pytest.raises(SystemExit, match=message):
        main(["build-job", str(REPO / "jobs/fedavg_abdomen"), "--out", str(tmp_path / "job"), "--set", item])
    assert not (tmp_path / "job").exists()
