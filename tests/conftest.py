"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, TOTALSEG_IDS, write_site

# The real FLARE POC (port 8002, tests/tools/federation/test_poc.py) and provisioned (8102,
# test_provisioned_federation.py) systems each live in one file: `--dist loadfile` (pyproject.toml)
# runs a file's tests on one worker, one after another. pytest-xdist's xdist_group did not hold
# marked tests on one worker here (pytest 9.2, xdist 3.8), so the suite does not rely on it.


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One worker a core: one thread each, for the processes a test starts too (two workers with
        # two threads each on two cores made one training test 30x slower).
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"real NIfTI fixtures missing at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def fixture_sites(tmp_path, fixtures_dir) -> dict[str, Path]:
    """site-ct (real CT) and site-mri (real MRI), the same case in every split (a smoke-test set)."""
    sites = {}
    for name, modality, image, label in (
        ("site-ct", "CT", "example_ct_sm.nii.gz", "example_seg.nii.gz"),
        ("site-mri", "MR", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz"),
    ):
        case = [(str(fixtures_dir / image), str(fixtures_dir / label))]
        sites[name] = write_site(
            tmp_path / name,
            modality,
            {"training": case, "validation": case, "test": case},
            TOTALSEG_IDS,
            site_name=name,
        )
    return sites
