"""End to end: a real FLARE simulator run of fedgin_abdomen on two tiny phantom sites."""

import json
import math
import os
import re
import tempfile

import psutil
import pytest
import torch
from fedgin.flare.cpu_turns import CPU_TURNS_ENV
from fedgin.tools.cli import main
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.cpu_sharing import client_thread_env
from fedgin.tools.federation.progress import read_tb_scalars
from fedgin.tools.federation.simulation import simulate
from fedgin.tools.federation.simulator_process import EARLY_STOP_NOTE
from helpers import ABDOMEN, REPO, TINY_TRAINING


@pytest.mark.simulator
def test_fedgin_abdomen_runs_in_the_flare_simulator(tmp_path, monkeypatch):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    temp = tempfile.mkdtemp(prefix="t", dir="/tmp")  # short: FLARE puts sockets under it
    monkeypatch.setattr(tempfile, "tempdir", temp)
    lines = []
    result = simulate(
        REPO / "jobs/fedgin_abdomen",
        sites,
        tmp_path / "ws",
        num_rounds=2,
        executor_overrides=TINY_TRAINING,
        echo=lines.append,
        timeout_s=300,
    )
    # Progress a person can follow: both sites report both rounds, also as a plot.
    for site in sites:
        for r in (1, 2):
            assert any(f"round {r}/2 {site}:" in line for line in lines), lines
        # Each site read and preprocessed its data once for the whole job, not once per round.
        ready = [line for line in lines if f"{site}: " in line and "site ready" in line]
        assert len(ready) == 1
        # Sites that share the machine each get all its cores and take turns on them: see
        # fedgin.tools.federation.cpu_sharing and fedgin.flare.cpu_turns.
        threads = {**os.environ, **client_thread_env(len(sites))}["OMP_NUM_THREADS"]
        turns = ", CPU turns" if os.environ.get(CPU_TURNS_ENV) != "" else ""
        assert f"({threads} threads{turns})" in ready[0]
    # Balanced local work (fedgin.flare.step_balance): from round 2 on, every site trains as many steps
    # as the busiest site did in the round before; round 1 is one epoch each.
    steps = {
        (site, r): int(re.search(rf"round {r}/2 {site}:.* over (\d+) steps", "\n".join(lines)).group(1))
        for site in sites
        for r in (1, 2)
    }
    assert len({steps[s, 1] for s in sites}) == 2, steps  # the tiny sites differ in size ...
    assert {steps[s, 2] for s in sites} == {max(steps[s, 1] for s in sites)}, steps  # ... and then train alike
    # The finished job was not left in FLARE's shutdown waits; nothing of it is left running or in
    # the temp folder.
    sim_log = (result.workspace / "simulator.log").read_text()
    assert EARLY_STOP_NOTE in sim_log and " - ERROR - " not in sim_log
    ws = str(result.workspace)
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if ws in " ".join(p.info["cmdline"] or [])]
    assert not [name for name in os.listdir(temp) if name.startswith(("fedgin-sim-", "pymp-"))]
    # Each site streamed its figures through FLARE's experiment tracking; the server wrote them as
    # TensorBoard files (fedgin.flare.metrics), the plot comes from them, and they agree with the logs.
    scalars = read_tb_scalars(result.workspace / "results/tb_events")
    assert set(scalars) == set(sites)
    for site, tags in scalars.items():
        assert {"val_dice/mean", "val_dice/liver", "train/loss", "train/steps", "train/seconds"} <= set(tags)
        assert all(set(values) == {1, 2} for values in tags.values()), tags
        assert {r: int(tags["train/steps"][r]) for r in (1, 2)} == {r: steps[site, r] for r in (1, 2)}
    progress = json.loads((result.workspace / "results/progress.json").read_text())
    assert sorted((p["site"], p["round"]) for p in progress) == sorted((s, r) for s in sites for r in (1, 2))
    for record in progress:
        line = next(x for x in lines if f"round {record['round']}/2 {record['site']}:" in x)
        assert f"val mean Dice {record['val_mean_dice']:.3f}" in line
    assert (result.workspace / "results/progress.png").stat().st_size > 10_000

    state = torch.load(result.global_model, weights_only=True)["model"]
    assert state and all(torch.isfinite(v).all() for v in state.values())

    # Cross-site validation: every site scored the final and the best global model. Sites' own
    # models are not collected: they would leave the site unfiltered.
    cross = result.cross_site
    assert set(cross) == set(sites)
    for models in cross.values():
        assert set(models) == {"SRV_FL_global_model.pt", "SRV_best_FL_global_model.pt"}
        assert all(0.0 <= m["val_mean_dice"] <= 1.0 for m in models.values())

    # The Dice report of the final global model on each site's test split.
    dice = json.loads((result.workspace / "results/dice.json").read_text())
    assert set(dice) == set(sites)
    assert {d["modality"] for d in dice.values()} == {"CT", "MR"}
    for d in dice.values():
        assert list(d["dice"]) == ABDOMEN and d["n_volumes"] == 1
        assert all(v is None or 0.0 <= v <= 1.0 for v in d["dice"].values())
        assert d["mean_dice"] is not None and math.isfinite(d["mean_dice"])
    table = (result.workspace / "results/dice.md").read_text()
    assert all(organ in table for organ in ABDOMEN) and "site-mri (MR" in table

    # The evaluate command finds the job's settings next to FLARE's model file.
    model = result.workspace / "simulate/server/simulate_job/app_server/FL_global_model.pt"
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(model), "--site-config", str(sites["site-mri"]), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["dice"] == dice["site-mri"]["dice"]
    # ... and next to the copy in results/ (the run's own settings: here the test's tiny model).
    out = tmp_path / "eval_results.json"
    argv = ["evaluate", "--model", str(result.global_model), "--site-config", str(sites["site-mri"]), "--out", str(out)]
    assert main(argv) == 0 and json.loads(out.read_text())["dice"] == dice["site-mri"]["dice"]

    # A seed reproduces a run: the same job on the same data gives the same global model, also when
    # the sites compute at the same time instead of taking CPU turns.
    monkeypatch.setenv(CPU_TURNS_ENV, "" if turns else str(tmp_path / "turns.lock"))
    again = simulate(
        REPO / "jobs/fedgin_abdomen",
        sites,
        tmp_path / "ws2",
        num_rounds=2,
        executor_overrides=TINY_TRAINING,
        evaluate_split=None,
        echo=None,
        timeout_s=300,
    )
    state_again = torch.load(again.global_model, weights_only=True)["model"]
    assert all(torch.equal(v, state_again[k]) for k, v in state.items())

    # The privacy filter ran on every outgoing update: 2 sites x 2 rounds.
    for site in sites:
        site_log = (result.workspace / f"simulate/{site}/log.txt").read_text()
        assert len(re.findall(rf"PercentilePrivacy.*identity={site},.*task_name=train.*Max abs delta_w", site_log)) == 2
    # Data paths stay at the sites: nothing in the server's own log names a data file.
    server_log = (result.workspace / "simulate/server/log.txt").read_text()
    assert ".nii.gz" not in server_log and str(tmp_path / "data") not in server_log
