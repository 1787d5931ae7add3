"""POC mode for real: server and client processes on loopback, a job submitted with the admin kit."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from fedgin.flare.cpu_turns import CPU_TURNS_ENV
from fedgin.flare.metrics import TB_FOLDER
from fedgin.flare.privacy.filters import privacy_filter_config
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.admin import AdminError
from fedgin.tools.federation.cpu_sharing import client_thread_env
from fedgin.tools.federation.he import encrypted_layers
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.federation.poc import (
    PocError,
    PocWorkspace,
    download,
    follow,
    prepare,
    processes,
    run_poc,
    start,
    stop,
    submit,
)
from fedgin.tools.federation.progress import read_tb_scalars
from fedgin.tools.files import write_json
from fedgin.tools.job_folder import CLIENT_CONFIG
from helpers import ABDOMEN, REPO, TINY_TRAINING, fresh_site_venv, port_free


def test_workspace_inside_the_repo_is_refused():
    with pytest.raises(PocError, match="inside the repository"):
        PocWorkspace.at(REPO / "poc_ws")


@pytest.mark.poc
def test_full_poc_flow_with_encrypted_aggregation(tmp_path):
    """prepare (with HE contexts) -> start -> submit -> follow -> download -> decrypt -> Dice -> stop.
    HE's arithmetic on a real system: tests/tools/federation/test_provisioned_federation.py."""
    if not port_free(8002):
        pytest.skip("port 8002 (FLARE POC server) is taken on this machine")
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=4, size=0.5, max_cases=1)
    # A job that "forgets" its privacy filter: the sites' privacy.json scope must filter anyway.
    job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job_without_filter" / "fedgin_abdomen")
    client = json.loads((job / CLIENT_CONFIG).read_text())
    client["task_result_filters"] = []
    (job / CLIENT_CONFIG).write_text(json.dumps(client))
    lines = []
    summary = run_poc(
        job,
        sites,
        tmp_path / "pocws",
        num_rounds=2,
        executor_overrides=TINY_TRAINING,
        echo=lines.append,
        timeout_s=400,
        he=True,
    )
    assert any("FINISHED:COMPLETED" in line for line in lines), lines
    state = torch.load(summary["encrypted_global_model"], weights_only=True)["model"]
    assert encrypted_layers(summary["encrypted_global_model"]) == sorted(state)  # the server's: ciphertexts
    assert any("round 2/2 site-mri" in line for line in lines), lines
    state = torch.load(summary["global_model"], weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values())
    cross = json.loads(
        (tmp_path / "pocws/results" / summary["job_id"] / "workspace/cross_site_val/cross_val_results.json").read_text()
    )
    assert set(cross) == set(sites)
    assert list(summary["dice"]["site-ct"]["dice"]) == ABDOMEN
    # The downloaded job holds the TensorBoard files the server wrote from the sites' metric events.
    scalars = read_tb_scalars(tmp_path / "pocws/results" / summary["job_id"] / "workspace" / TB_FOLDER)
    assert set(scalars) == set(sites)
    for tags in scalars.values():
        assert {"val_dice/mean", "train/loss", "train/steps"} <= set(tags)
        assert all(set(values) == {1, 2} for values in tags.values())
    # Each site found its config in its own local/ folder; no data path reached the server or the results.
    ws = PocWorkspace.at(tmp_path / "pocws")
    for site in sites:
        assert (ws.prod / site / "local/fedgin_site.json").is_file()
        site_log = (ws.prod / site / summary["job_id"] / "log.txt").read_text()
        assert len(re.findall(r"PercentilePrivacy.*Max abs delta_w", site_log)) == 2  # site scope, both rounds
        # POC sites share this machine like simulated ones: all cores each, taking turns on them.
        threads = {**os.environ, **client_thread_env(len(sites))}["OMP_NUM_THREADS"]
        turns = ", CPU turns" if os.environ.get(CPU_TURNS_ENV) != "" else ""
        ready = [line for line in site_log.splitlines() if "site ready" in line]
        assert len(ready) == 1 and f"({threads} threads{turns})" in ready[0], ready
    # The server knows the scope but does not run its filter again on the sites' updates.
    server_scope = json.loads((ws.prod / "server/local/privacy.json").read_text())["scopes"][0]
    assert server_scope == {"name": "fedgin", "properties": {}}
    server_logs = "".join(p.read_text(errors="replace") for p in (ws.prod / "server").rglob("log*.txt"))
    downloaded = "".join(
        p.read_text(errors="replace") for p in (tmp_path / "pocws/results").rglob("*") if p.suffix in (".txt", ".json")
    )
    for text in (server_logs, downloaded):
        assert str(tmp_path / "data") not in text and ".nii.gz" not in text
    # The processes are gone and the port is free again.
    assert port_free(8002)


@pytest.mark.poc
def test_poc_stops_everything_when_the_run_fails(tmp_path):
    if not port_free(8002):
        pytest.skip("port 8002 (FLARE POC server) is taken on this machine")
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=4, size=0.5, max_cases=1)
    with pytest.raises(AdminError, match="did not finish within"):
        run_poc(REPO / "jobs/fedgin_abdomen", sites, tmp_path / "pocws", num_rounds=50, echo=None, timeout_s=3)
    # No orphaned server or client process of this workspace, and the port is free again.
    ps = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    assert str(tmp_path / "pocws") not in ps, [line for line in ps.splitlines() if "pocws" in line]
    assert processes(PocWorkspace.at(tmp_path / "pocws")) == []
    assert port_free(8002)


def test_stop_leaves_a_users_own_processes_on_the_poc_folder_alone(tmp_path):
    ws = PocWorkspace.at(tmp_path / "pocws")
    log = ws.root / "poc" / "site-1" / "log.txt"  # no prod_00: FLARE's own `poc stop` is not needed
    log.parent.mkdir(parents=True)
    log.write_text("")
    # A user's `tail -f` on a site log, and a stand-in for a FLARE participant of this workspace.
    tail = subprocess.Popen(["tail", "-f", str(log)])
    flare = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
            "-m",
            "nvflare.private.fed.app.client.client_train",
            str(log.parent),
        ]
    )
    try:
        time.sleep(0.5)
        assert processes(ws) == [flare.pid]
        stop(ws, grace_s=0)
        assert flare.wait(timeout=10) == -signal.SIGKILL
        assert tail.poll() is None  # still running
    finally:
        for p in (tail, flare):
            p.kill()
            p.wait()


@pytest.mark.poc
def test_a_sites_privacy_budget_holds_across_jobs(tmp_path, monkeypatch):
    """Two jobs in a row on one POC system, the sites' own privacy policy holding a Gaussian filter
    with max_epsilon 8 (sigma 1: epsilon 4.73 after one release, 7.08 after two, 9.01 after three).
    Job 1 releases one update per site, job 2 one more; then each site declines, and says why at
    the site and at the server. Before the ledger lived in the site's local/, job 2 started at 0.
    The server and the sites run in a fresh venv with a site's install (``poc/site_install.sh``, the
    Dockerfile's commands: torch, then ``pip install .``, no extra), not in this test's environment."""
    if not port_free(8002):
        pytest.skip("port 8002 (FLARE POC server) is taken on this machine")
    site_bin = fresh_site_venv(tmp_path / "site_venv")
    monkeypatch.setenv("PATH", f"{site_bin}{os.pathsep}{os.environ['PATH']}")  # what the kits' scripts run
    monkeypatch.delenv("PYTHONPATH", raising=False)
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=4, size=0.5, max_cases=1)
    gaussian = privacy_filter_config("gaussian", noise_multiplier=1.0, clip_norm=1.0, max_epsilon=8.0)
    policy = {"scopes": [{"name": "fedgin", "properties": {}, "task_result_filters": [gaussian]}]}
    policy["default_scope"] = "fedgin"
    write_json(tmp_path / "site_privacy.json", policy)
    ws = PocWorkspace.at(tmp_path / "pocws")
    prepare(ws, sites, privacy_policy=tmp_path / "site_privacy.json")
    statuses, jobs = [], []
    try:
        start(ws, python=site_bin / "python")  # FLARE starts the participants with the CLI's Python
        for rounds in (1, 2):
            jobs.append(submit(ws, REPO / "jobs/fedgin_abdomen", rounds, TINY_TRAINING))
            statuses.append(follow(ws, jobs[-1], echo=None, timeout=300).get("status"))
        downloaded = download(ws, jobs[1], tmp_path / "results")  # the server's run folder goes with the job
    finally:
        stop(ws)
    assert statuses[0] == "FINISHED:COMPLETED"
    assert statuses[1] != "FINISHED:COMPLETED"  # round 2: no site may train, min_clients is not met
    server_log = "".join(p.read_text(errors="replace") for p in downloaded.rglob("log*.txt"))
    declined = []
    for site in sites:
        (ledger,) = (ws.prod / site / "local/fedgin_privacy").glob(f"{site}-*-gaussian.json")
        record = json.loads(ledger.read_text())
        assert [(r["job"], r["round"], r["privacy_rounds"]) for r in record["rounds"]] == [
            (jobs[0], 1, 1),
            (jobs[1], 1, 2),
        ]
        assert [round(r["epsilon"], 2) for r in record["rounds"]] == [4.73, 7.08] and record["budget_spent"]
        site_log = (ws.prod / site / jobs[1] / "log.txt").read_text(errors="replace")
        assert f"{site}: runtime Python" in site_log and f" in {tmp_path / 'site_venv'}, torch" in site_log
        line = rf"{site}: round 2: privacy budget spent: epsilon 7\.077 after 2 round\(s\) in 2 job"
        if re.search(line, site_log):
            declined.append(site)
    # The first site to decline round 2 ends the job (min_clients): the other may not get to say it.
    assert declined, "no site logged its spent budget"
    for site in declined:
        if re.search(rf"round 2/2 {site}: privacy budget spent \(epsilon 7\.08 over its jobs\)", server_log):
            break
    else:
        raise AssertionError(f"the server did not log why {declined} declined")
    assert port_free(8002)
