"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FIXTURES, TOTALSEG_IDS, write_site


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
