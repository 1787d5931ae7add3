"""A provisioned federation for real: kits from poc/project.yml, server and clients started from their
kits (mTLS on loopback), a job submitted with the admin kit."""

import json
import socket
import time
from pathlib import Path

import pytest
import tenseal as ts
from fedgin.flare.metrics import TB_FOLDER
from fedgin.tools import admin
from fedgin.tools.admin import session
from fedgin.tools.cli import main
from fedgin.tools.he import CLIENT_CONTEXT, SERVER_CONTEXT, read_context
from fedgin.tools.phantoms import generate_phantom_dataset
from fedgin.tools.poc import PocError
from fedgin.tools.progress import read_tb_scalars
from fedgin.tools.provisioning import (
    DEFAULT_PROJECT,
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


def test_provisioning_with_he_gives_every_site_the_same_signed_secret_key_and_the_server_none(tmp_path):
    kits = provision(tmp_path / "kits", DEFAULT_PROJECT, he=True)
    sites = ("site-ct-a", "site-mri-b", "site-ct-c")
    for kit in ("server", *sites):
        name = SERVER_CONTEXT if kit == "server" else CLIENT_CONTEXT
        assert name in json.loads((kits / kit / "startup/signature.json").read_text())  # FLARE checks it
    assert not list((kits / "admin@fedgin.org").rglob("*.tenseal"))
    server = read_context(kits / "server/startup" / SERVER_CONTEXT)
    assert not server.has_secret_key()
    vector = ts.ckks_vector(read_context(kits / "site-ct-a/startup" / CLIENT_CONTEXT), [0.25, -1.5])
    for site in sites:  # one key for all sites: any site decrypts what another encrypted
        decrypted = vector.decrypt(read_context(kits / site / "startup" / CLIENT_CONTEXT).secret_key())
        assert decrypted == pytest.approx([0.25, -1.5], abs=1e-6)


@pytest.mark.poc
def test_provisioned_federation_runs_a_job(tmp_path, capsys):
    if not _port_free(PORT):
        pytest.skip(f"port {PORT} (the provisioned server) is taken on this machine")
    kits = provision(tmp_path / "kits", DEFAULT_PROJECT)
    names = {p.name for p in kits.iterdir() if p.is_dir()}
    assert {"server", "site-ct-a", "site-mri-b", "site-ct-c", "admin@fedgin.org", "lead@hospital-a.org"} <= names
    for site in ("site-ct-a", "site-mri-b", "site-ct-c"):
        assert (kits / site / "startup/client.key").is_file()
        # Site logs are not streamed to the server.
        resources = json.loads((kits / site / "local/resources.json.default").read_text())
        assert resources["allow_log_streaming"] is False
        # The job's resource_spec is checked by the site's GPU resource manager (provisioning's
        # default; no GPU on this machine): the jobs ask for none, so the federation below runs.
        (manager,) = [c for c in resources["components"] if c["id"] == "resource_manager"]
        assert manager["path"].endswith("GPUResourceManager") and manager["args"]["num_of_gpus"] == 0

    data = generate_phantom_dataset("abdomen", tmp_path / "data", seed=5, size=0.5, max_cases=1)
    install_site_config(kits / "site-ct-a", data["site-ct"])
    install_site_config(kits / "site-mri-b", data["site-mri"])
    procs = [start_participant(kits / "server", tmp_path / "server.out")]
    try:
        time.sleep(5)
        procs += [start_participant(kits / s, tmp_path / f"{s}.out") for s in ("site-ct-a", "site-mri-b")]
        admin_kit = kits / "admin@fedgin.org"
        sess = session(admin_kit)
        try:
            deadline = time.time() + 60
            while len(connected_clients(sess)) < 2 and time.time() < deadline:
                time.sleep(1)
        finally:
            sess.close()
        # The admin's one command: build, submit, follow, download, cross-site Dice table.
        lines = []
        run = admin.run_job(
            admin_kit,
            REPO / "jobs/fedgin_abdomen",
            tmp_path / "admin",
            num_rounds=2,
            min_clients=2,
            executor_overrides=TINY_TRAINING,
            echo=lines.append,
            timeout=300,
        )
        assert any("FINISHED:COMPLETED" in line for line in lines), lines
        assert (Path(run["result"]) / "workspace/app_server/FL_global_model.pt").is_file()
        assert "site-ct-a" in run["table"] and "SRV_FL_global_model.pt" in run["table"]
        # The sites' per-round figures came to the server as metric events; the download holds them.
        scalars = read_tb_scalars(Path(run["result"]) / "workspace" / TB_FOLDER)
        assert set(scalars) == {"site-ct-a", "site-mri-b"}
        assert all(set(tags["val_dice/mean"]) == {1, 2} and "train/loss" in tags for tags in scalars.values())
        assert run["job_id"] in {j["job_id"] for j in admin.list_jobs(admin_kit)}
        assert main(["admin", "list", "--admin-kit", str(admin_kit)]) == 0
        assert run["job_id"] in capsys.readouterr().out
        # Submitted as the admin console does: a built job in the kit's transfer folder, by name.
        assert (admin_kit / "transfer/fedgin_abdomen/app/custom/fedgin/flare/executor.py").is_file()
        # abort_job: a long job is stopped on request.
        long_job = admin.submit(
            admin_kit, REPO / "jobs/fedgin_abdomen", num_rounds=1000, min_clients=2, executor_overrides=TINY_TRAINING
        )
        time.sleep(5)
        admin.abort(admin_kit, long_job)
        assert admin.follow(admin_kit, long_job, echo=None, timeout=120)["status"].startswith("FINISHED:ABORTED")
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
