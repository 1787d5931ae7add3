"""Test helpers: tiny NIfTI volumes written with nibabel, site configs, paths of the real fixtures."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "totalsegmentator"
ABDOMEN = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "gallbladder"]
# TotalSegmentator's label ids (fixtures README).
TOTALSEG_IDS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "pancreas": 7}


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def write_site(root: Path, modality: str, splits: dict[str, list[tuple[str, str]]], labels: dict, **extra) -> Path:
    """A site config + datalist under ``root`` whose entries are (image, label) paths relative to root."""
    root.mkdir(parents=True, exist_ok=True)
    datalist = {s: [{"image": img, "label": lab} for img, lab in cases] for s, cases in splits.items()}
    (root / "datalist.json").write_text(json.dumps(datalist))
    cfg = {"modality": modality, "data_root": ".", "datalist": "datalist.json", "labels": labels, **extra}
    (root / "site_config.json").write_text(json.dumps(cfg))
    return root / "site_config.json"


# Executor overrides for a tiny, fast model in tests that run real FLARE jobs.
TINY_TRAINING = {"spatial_size": [32, 32], "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}}


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` on this machine (a POC or provisioned server can start there)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# Import names of what the extras install (pyproject.toml: plots, he, datasets, tracking, bundle, dev):
# a site runs without any of them.
EXTRA_MODULES = ("matplotlib", "tenseal", "pydicom", "PIL", "mlflow", "fire", "ignite", "pytest", "ruff")


def without_extras(folder: Path) -> str:
    """A PYTHONPATH entry under which importing any of :data:`EXTRA_MODULES` fails, as in a site's
    plain ``pip install .`` (the stubs shadow the installed packages)."""
    for name in EXTRA_MODULES:
        stub = folder / name
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text(f"raise ImportError('{name} is an extra: a site install has no {name}')\n")
    return str(folder)
