"""Test helpers: tiny NIfTI volumes written with nibabel, site configs, paths of the real fixtures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
EXTRA_MODULES = ("matplotlib", "tenseal", "pydicom", "mlflow", "fire", "ignite", "pytest", "ruff")


def fresh_site_venv(folder: Path) -> Path:
    """A new venv with a site's install (``poc/site_install.sh``: torch, then ``pip install .``, the
    commands the Dockerfile runs); returns its ``bin/`` folder. Checks that no extra got in."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    bin_dir = folder / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(folder)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", str(REPO / "poc/site_install.sh"), str(REPO)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"site install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    probe = f"import importlib.util as u; print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])"
    found = subprocess.run([str(bin_dir / "python"), "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"a site install brought extras: {found.stdout}"
    return bin_dir
