"""bench/run_bench.py runs end to end at smoke size (structure only: no timing is asserted)."""

import importlib.util
import json
import sys

from helpers import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("run_bench", REPO / "bench" / "run_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gin_and_infer_sections_write_the_report(tmp_path):
    bench = load_bench()
    out = tmp_path / "results"
    rc = bench.main(
        ["--only", "gin,families,options,infer", "--smoke", "--device", "cpu", "--out", str(out)]
        + ["--work", str(tmp_path)]
    )
    assert rc == 0

    report = json.loads((out / "bench_cpu.json").read_text())
    assert report["device"] == "cpu" and report["smoke"] is True
    assert {"cpu_count", "torch", "device", "device_name"} <= set(report["machine"])
    assert set(report["sections"]) == {"gin", "families", "options", "infer"}

    gin = report["sections"]["gin"]["cases"]
    assert set(gin) == {"2d", "3d"}
    for case in gin.values():
        for key in ("gin_batched_ms", "gin_loop_ms", "train_step_ms", "gin_share_of_step", "loop_over_batched"):
            assert case[key] > 0, key
        assert isinstance(case["met"], bool)

    options = report["sections"]["options"]
    assert set(options["step_ms"]) == {"Trainer (as used)", "channels-last weights"}  # CPU: no AMP, no copy
    assert all(ms > 0 for ms in options["step_ms"].values()) and options["copy_ms"] is None

    rows = report["sections"]["infer"]["rows"]
    assert {(r["model"], r["device"]) for r in rows} == {("2d", "cpu"), ("3d", "cpu")}
    assert all(r["volumes"] > 0 and r["volumes_per_s"] > 0 for r in rows)

    md = (out / "bench_cpu.md").read_text()
    assert "## 1. GIN cost" in md and "## 1c. Speed options" in md and "## 5. Inference" in md and "failed" not in md


def test_fl_verdict_refuses_what_the_machine_noise_cannot_resolve():
    load_bench()  # puts bench/ on sys.path, where the sections live
    from sections import fl

    runs = [
        {"rounds": 30, "flare": {"wall_s": 142.5}, "plain": {"wall_s": 131.8}},
        {"rounds": 30, "flare": {"wall_s": 145.0}, "plain": {"wall_s": 159.3}},  # the same plain work, 21 % slower
    ]
    noise = fl.repeat_noise(runs, 30)
    assert abs(noise - (159.3 - 131.8) / 131.8) < 1e-9
    assert abs(fl.pooled_ratio(runs, 30) - (142.5 + 145.0) / (131.8 + 159.3)) < 1e-9
    assert not fl.resolved(0.988, noise)  # below 1: FLARE cannot beat the same work without it
    assert not fl.resolved(1.15, noise)  # nearer the target than the noise
    assert fl.resolved(1.15, 0.01) and fl.resolved(1.05, None)
    assert fl.repeat_noise(runs[:1], 30) is None
