"""fedgin without its checkout, as a plain (non-editable) ``pip install .`` leaves it: the package only."""

import json
import shutil
import subprocess
import sys

from fedgin.tools.files import PACKAGE_DIR

SCRIPT = """
import fedgin, json
from pathlib import Path
from fedgin.tools.job_folder import find_jobs_dir
from fedgin.tools.files import checkout_file
jobs = find_jobs_dir()
try:
    checkout_file("poc/privacy.json")
    error = None
except FileNotFoundError as e:
    error = str(e)
print(json.dumps({"package": fedgin.__file__, "jobs": str(jobs),
                  "names": sorted(p.name for p in jobs.iterdir()), "error": error}))
"""


def test_without_a_checkout_jobs_come_from_their_definitions_and_poc_files_are_named(tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE_DIR, site / "fedgin", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site))
    assert out["names"] == ["fedavg_abdomen", "fedavg_heart", "fedgin_abdomen", "fedgin_heart"]
    assert "poc/privacy.json not found" in out["error"] and "checkout" in out["error"]
