"""bench/he_cost.py runs at smoke size and writes its figures (structure only: no timing is asserted)."""

import importlib.util
import json
import sys

from helpers import REPO


def test_he_cost_smoke_writes_the_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("he_cost", REPO / "bench" / "he_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0

    report = json.loads((tmp_path / "out/he_cost.json").read_text())
    figures = report["in_process"]["median"]
    for key in ("encrypt_s", "read_update_s", "aggregate_s", "update_global_s", "decrypt_s"):
        assert figures[key] > 0, key
    assert figures["update_bytes"] > figures["plain_update_bytes"] > 0
    assert figures["max_abs_error"] < 1e-5  # CKKS: the encrypted round is FedAvg
    assert set(report["in_process"]["dice"]) == {"plain", "he", "control"}
    assert "one site's update as sent" in (tmp_path / "out/he_cost.md").read_text()
