"""A provisioned federation for real: kits from poc/project.yml, server and clients started from their
kits (mTLS on loopback), a job submitted with the admin kit."""

import json
import socket
import time

import pytest
from fedgin.jobs import build_job
from fedgin.phantoms import generate_phantom_dataset
from fedgin.poc import PocError
from fedgin.provisioning import (
    DEFAULT_PROJECT,
    admin_session,
    connected_clients,
    install_site_config,
    kill,
    provision,
    shutdown_all,
    start_participant,
)
from helpers import REPO, TINY_TRAINING

PORT = 8102  # poc/project.yml's fed_learn_port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_kits_are_never_written_into_the_repo():
    with pytest.raises(PocError, match="inside the repository"):
        provision(REPO / "kits")


@pytest.mark.poc
def test_provisioned_federation_runs_a_job(tmp_path):
    if not _port_free(PORT):
        pytest.skip(f"port {PORT} (the provisioned server) is taken on this machine")
    kits = provision(tmp_path / "kits", DEFAULT_PROJECT)
    names = {p.name for p in kits.iterdir() if p.is_dir()}
    assert {"server", "site-ct-a", "site-mri-b", "site-ct-c", "admin@fedgin.org", "lead@hospital-a.org"} <= names
    for site in ("site-ct-a", "site-mri-b", "site-ct-c"):
        assert (kits / site / "startup/client.key").is_file()
        # Site logs are not streamed to the server.
        assert json.loads((kits / site / "local/resources.json.default").read_text())["allow_log_streaming"] is False

    data = generate_phantom_dataset("abdomen", tmp_path / "data", seed=5, size=0.5, max_cases=1)
    install_site_config(kits / "site-ct-a", data["site-ct"])
    install_site_config(kits / "site-mri-b", data["site-mri"])
    procs = [start_participant(kits / "server", tmp_path / "server.out")]
    try:
        time.sleep(5)
        procs += [start_participant(kits / s, tmp_path / f"{s}.out") for s in ("site-ct-a", "site-mri-b")]
        job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job", num_rounds=2, min_clients=2,
                        executor_overrides=TINY_TRAINING)  # fmt: skip
        sess = admin_session(kits / "admin@fedgin.org")
        try:
            deadline = time.time() + 60
            while len(connected_clients(sess)) < 2 and time.time() < deadline:
                time.sleep(1)
            job_id = sess.submit_job(str(job))
            _, meta = sess.monitor_job_and_return_job_meta(job_id, timeout=300, poll_interval=2)
            assert meta["status"] == "FINISHED:COMPLETED"
            result = sess.download_job_result(job_id, str(tmp_path / "download"))
        finally:
            sess.close()
        assert (tmp_path / "download" / job_id / "workspace/app_server/FL_global_model.pt").is_file(), result
        server_text = "".join(
            p.read_text(errors="replace") for p in (kits / "server").rglob("*") if p.suffix in (".txt", ".json", ".log")
        )
        assert str(tmp_path / "data") not in server_text and ".nii.gz" not in server_text
    finally:
        try:
            shutdown_all(kits / "admin@fedgin.org")
            time.sleep(3)
        finally:
            for proc in procs:
                kill(proc)
