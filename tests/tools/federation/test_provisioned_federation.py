"""Who may do what on a real provisioned federation (loopback, mTLS), one system shared by the tests here.

Kits from ``poc/project.yml`` (with HE contexts), the server and three hospitals started from their
kits, each site with its own rules in its kit's ``local/`` (``fedgin.tools.federation.site_policy``):

- ``site-ct-a``, ``site-mri-b``: ``poc/privacy.json`` (their filter on every job they run) and
  fedgin's installed classes allowed;
- ``site-ct-c``: refuses code that comes with a job (no role has the ``byoc`` right there) and runs
  installed fedgin's classes instead; no privacy policy of its own.

The server's privacy.json knows the project's scope names (``fedgin``, ``unfiltered``), its job
store is in this test's folder. The tests run in file order, one job at a time; each states which
role does what and reads FLARE's own answer back.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from fedgin.flare.metrics import TB_FOLDER
from fedgin.tools.cli import main
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation import admin
from fedgin.tools.federation.admin import deploy_refusals, session
from fedgin.tools.federation.he import encrypted_layers
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.federation.poc import PRIVACY_POLICY
from fedgin.tools.federation.progress import read_tb_scalars
from fedgin.tools.federation.provisioning import (
    DEFAULT_PROJECT,
    connected_clients,
    install_site_config,
    kill,
    provision,
    shutdown_all,
    start_participant,
)
from fedgin.tools.federation.site_policy import (
    ASYNCIO_DEBUG_ENV,
    allow_installed_fedgin,
    keep_server_storage,
    log_tls_failures,
    refuse_byoc,
    require_privacy_scope,
)
from fedgin.tools.files import checkout_file, write_json
from fedgin.tools.job_folder import CLIENT_CONFIG
from helpers import REPO, TINY_TRAINING, port_free
from nvflare.fuel.flare_api.api_spec import AuthorizationError, NoConnection

pytestmark = pytest.mark.poc

PORT = 8102  # poc/project.yml's fed_learn_port
ADMIN, MEMBER_A = "admin@fedgin.org", "member@hospital-a.org"
LEAD_A, LEAD_B = "lead@hospital-a.org", "lead@hospital-b.org"
SITES = ("site-ct-a", "site-mri-b", "site-ct-c")
JOB = REPO / "jobs/fedgin_abdomen"


@dataclass
class Federation:
    kits: Path
    root: Path
    data: dict  # phantom site name -> site config
    server_out: Path
    procs: list = field(default_factory=list)
    finished: dict = field(default_factory=dict)  # what earlier tests left for later ones

    def kit(self, name: str) -> Path:
        return self.kits / name

    def server_files(self) -> list[Path]:
        """Every file the server side keeps: its kit and workspace, its job store and snapshots."""
        return [p for p in (self.kit("server"), self.root / "server_storage") for p in p.rglob("*") if p.is_file()]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def _connected(admin_kit: Path) -> set[str]:
    sess = session(admin_kit)
    try:
        return set(connected_clients(sess))
    finally:
        sess.close()


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    if not port_free(PORT):
        pytest.skip(f"port {PORT} (the provisioned server) is taken on this machine")
    root = tmp_path_factory.mktemp("provisioned")
    kits = provision(root / "kits", DEFAULT_PROJECT, he=True)
    data = generate_phantom_dataset("abdomen", root / "data", seed=5, size=0.5, max_cases=1)
    site_data = {"site-ct-a": data["site-ct"], "site-mri-b": data["site-mri"], "site-ct-c": data["site-ct"]}
    privacy = checkout_file(PRIVACY_POLICY)
    project_scopes = json.loads(privacy.read_text())
    project_scopes["scopes"].append({"name": "unfiltered", "properties": {}})
    write_json(root / "project_privacy.json", project_scopes)
    for site, config in site_data.items():
        install_site_config(kits / site, config)
        allow_installed_fedgin(kits / site)
    for site in ("site-ct-a", "site-mri-b"):
        require_privacy_scope(kits / site, privacy)
    refuse_byoc(kits / "site-ct-c")
    require_privacy_scope(kits / "server", root / "project_privacy.json")
    allow_installed_fedgin(kits / "server")
    keep_server_storage(kits / "server", root / "server_storage")
    log_tls_failures(kits / "server")

    fed = Federation(kits, root, data, root / "server.out")
    fed.procs.append(start_participant(kits / "server", fed.server_out, env=ASYNCIO_DEBUG_ENV))
    try:
        _wait_for(lambda: not port_free(PORT), 60, "the server to listen")
        fed.procs += [start_participant(kits / s, root / f"{s}.out") for s in SITES]
        _wait_for(lambda: _connected(kits / ADMIN) >= set(SITES), 90, "three connected sites")
        yield fed
    finally:
        try:
            shutdown_all(kits / ADMIN)
            time.sleep(3)
        finally:
            for proc in fed.procs:
                kill(proc)


def _job_log(fed: Federation, site: str, job_id: str) -> str:
    return (fed.kit(site) / job_id / "log.txt").read_text(errors="replace")


def test_project_admin_runs_a_job_that_byoc_refusing_sites_sit_out_and_sites_filter(federation, tmp_path, capsys):
    fed, admin_kit = federation, federation.kit(ADMIN)
    # A job that "forgets" its privacy filter: site-ct-a's and site-mri-b's own scope filters anyway.
    job = build_job(JOB, tmp_path / "unfiltered_job" / "fedgin_abdomen", privacy={"kind": "none"})
    lines = []
    run = admin.run_job(
        admin_kit, job, tmp_path / "admin", num_rounds=2, min_clients=2,
        executor_overrides=TINY_TRAINING, echo=lines.append, timeout=300,
    )  # fmt: skip
    job_id = run["job_id"]
    fed.finished["admin_job"] = job_id
    assert any("FINISHED:COMPLETED" in line for line in lines), lines
    result = Path(run["result"])
    fed.finished.setdefault("downloads", []).append(result)
    names = {str(p.relative_to(result)) for p in result.rglob("*") if p.is_file()}
    assert {"workspace/app_server/FL_global_model.pt", "workspace/cross_site_val/cross_val_results.json"} <= names
    assert (result / "workspace/app_server/FL_global_model.pt").is_file()

    # site-ct-c refused the job's code (FLARE's answer, in the job's meta, which the admin is shown); the others ran it.
    assert run["refused"] == {"site-ct-c": "BYOC not permitted"}
    assert "  site-ct-c did not take the job: BYOC not permitted" in lines
    assert not (fed.kit("site-ct-c") / job_id).exists()
    assert "site-ct-a" in run["table"] and "site-ct-c" not in run["table"]
    for site in ("site-ct-a", "site-mri-b"):
        assert len(re.findall(r"PercentilePrivacy.*Max abs delta_w", _job_log(fed, site, job_id))) == 2, site

    # The sites' per-round figures reached the server as metric events; the download holds them.
    scalars = read_tb_scalars(result / "workspace" / TB_FOLDER)
    assert set(scalars) == {"site-ct-a", "site-mri-b"}
    assert all(set(tags["val_dice/mean"]) == {1, 2} and "train/loss" in tags for tags in scalars.values())
    assert main(["admin", "list", "--admin-kit", str(admin_kit)]) == 0
    assert job_id in capsys.readouterr().out
    # Submitted as the admin console does: a built job in the kit's transfer folder, by name.
    assert (admin_kit / "transfer/fedgin_abdomen/app/custom/fedgin/flare/executor.py").is_file()


def test_who_may_submit_manage_and_download(federation, tmp_path):
    fed = federation
    for who in (LEAD_A, MEMBER_A):  # each stages the job in their own kit's transfer folder
        admin.stage(fed.kit(who), JOB, num_rounds=1000, min_clients=2, executor_overrides=TINY_TRAINING)
    lead_a, lead_b, member = (session(fed.kit(w)) for w in (LEAD_A, LEAD_B, MEMBER_A))
    try:
        # A lead submits fedgin's BYOC job (leads have the byoc right) and manages it; another
        # organisation's lead may see it but not abort, clone or download it.
        long_job = lead_a.submit_job("fedgin_abdomen")
        queued = lead_a.submit_job("fedgin_abdomen")
        admin_job = fed.finished.get("admin_job", long_job)
        refusals = [  # (FLARE's command that is refused, the attempt)
            ("submit_job", lambda: member.submit_job("fedgin_abdomen")),
            ("download_job", lambda: member.download_job_result(admin_job, str(tmp_path / "m"))),
            ("abort_job", lambda: lead_b.abort_job(long_job)),
            ("clone_job", lambda: lead_b.clone_job(long_job)),
            ("download_job", lambda: lead_b.download_job_result(admin_job, str(tmp_path / "b"))),
        ]
        for command, attempt in refusals:
            with pytest.raises(AuthorizationError) as refused:
                attempt()
            assert f"is not authorized for '{command}'" in str(refused.value), refused.value
        ids = {j["job_id"] for j in member.list_jobs()}  # a member may look
        assert {long_job, queued} <= ids
        # The lead's job with code runs (at the sites that take code), then each is aborted.
        _wait_for(lambda: lead_a.get_job_meta(long_job).get("status") == "RUNNING", 120, "the lead's job to run")
        assert deploy_refusals(lead_a.get_job_meta(long_job)) == {"site-ct-c": "BYOC not permitted"}
        lead_a.abort_job(queued)
        # The project admin may abort anyone's job.
        admin.abort(fed.kit(ADMIN), long_job)
        for job_id in (queued, long_job):
            meta = admin.follow(fed.kit(LEAD_A), job_id, echo=None, timeout=120)
            assert meta["status"].startswith("FINISHED:ABORTED"), meta
        downloaded = Path(lead_a.download_job_result(queued, str(tmp_path / "a")))  # their own job
        assert (downloaded / "meta.json").is_file()
        # The project admin may download anyone's job.
        assert (admin.download(fed.kit(ADMIN), long_job, tmp_path / "admin") / "meta.json").is_file()
        fed.finished.setdefault("downloads", []).extend([downloaded, tmp_path / "admin" / long_job])
    finally:
        for sess in (lead_a, lead_b, member):
            sess.close()


def test_a_byoc_refusing_site_runs_the_job_built_for_installed_fedgin(federation):
    fed = federation
    job_id = admin.submit(
        fed.kit(ADMIN), JOB, num_rounds=1, min_clients=3, executor_overrides=TINY_TRAINING, installed_code=True
    )
    assert not (fed.kit(ADMIN) / "transfer" / JOB.name / "app" / "custom").exists()
    meta = admin.follow(fed.kit(ADMIN), job_id, echo=None, timeout=240)
    assert meta["status"] == "FINISHED:COMPLETED", meta
    assert meta.get("job_deploy_detail") and not deploy_refusals(meta), meta
    assert "[fedgin] round 1/1" in _job_log(fed, "site-ct-c", job_id)


def test_a_site_refuses_a_job_that_asks_for_a_scope_it_does_not_have(federation, tmp_path):
    fed = federation
    job = build_job(JOB, tmp_path / JOB.name, num_rounds=1, min_clients=2, executor_overrides=TINY_TRAINING)
    meta = json.loads((job / "meta.json").read_text())
    write_json(job / "meta.json", {**meta, "scope": "unfiltered"})  # a scope the project has, these sites do not
    sess = session(fed.kit(ADMIN))
    try:
        job_id = sess.submit_job(str(job))
    finally:
        sess.close()
    meta = admin.follow(fed.kit(ADMIN), job_id, echo=None, timeout=120)
    assert meta["status"] != "FINISHED:COMPLETED", meta
    refused = deploy_refusals(meta)
    for site in ("site-ct-a", "site-mri-b"):
        assert refused[site] == "privacy scope 'unfiltered' is not allowed", refused


def _log_says(path: Path, pattern: str, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and re.search(pattern, path.read_text(errors="replace")):
            return True
        time.sleep(1)
    return False


def _tls_refusal(startup: Path, root_ca: Path) -> Exception | bytes:
    """How the server turns away a TLS client presenting ``startup``'s certificate and trusting
    ``root_ca``: the exception it gets, or the server's first bytes (b"": it closed the connection)."""
    context = ssl.create_default_context(cafile=str(root_ca))
    context.check_hostname = False
    context.load_cert_chain(str(startup / "client.crt"), str(startup / "client.key"))
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n")
            return tls.recv(100)
    except OSError as e:  # ssl.SSLError is one; so is a timeout, which the caller rejects
        return e


def test_kits_of_another_ca_or_with_another_sites_certificate_cannot_connect(federation, tmp_path):
    fed = federation
    other = provision(tmp_path / "other", DEFAULT_PROJECT)  # same project and names, another root CA
    intruders = {name: tmp_path / name for name in ("other_ca", "signed", "impostor")}
    shutil.copytree(other / "site-mri-b", intruders["other_ca"])
    # site-ct-c's own kit, carrying site-ct-a's certificate and key (signed by our CA, naming site-ct-a):
    # as provisioned (HE kits have their startup/ signed) and with the kit's signature removed.
    for name in ("signed", "impostor"):
        for folder in ("startup", "local"):
            shutil.copytree(fed.kit("site-ct-c") / folder, intruders[name] / folder)
        for file in ("client.crt", "client.key"):
            shutil.copy(fed.kit("site-ct-a") / "startup" / file, intruders[name] / "startup" / file)
    (intruders["impostor"] / "startup/signature.json").unlink()
    procs = [start_participant(kit, tmp_path / f"{name}.out") for name, kit in intruders.items()]
    try:
        # The server says why it turns the impostor away; the foreign kit says why it cannot connect.
        server_log = fed.kit("server") / "log.txt"
        impostor = r"authenticated as 'site-ct-a' but claimed endpoint 'site-ct-c' requires identity 'site-ct-c'"
        assert _log_says(server_log, impostor, 60), "no rejection of the impostor in the server's log"
        assert _log_says(intruders["other_ca"] / "log.txt", r"CERTIFICATE_VERIFY_FAILED", 60)
        # A TLS client with the foreign certificate that trusts our (public) root CA: the server ends
        # the handshake and (asyncio's debug records kept) says why.
        refusal = _tls_refusal(other / "site-mri-b/startup", fed.kit("site-mri-b") / "startup/rootCA.pem")
        # Closed without an answer (TLS 1.3: after the client's side of the handshake) or an alert; not a timeout.
        assert refusal == b"" or isinstance(refusal, ssl.SSLError | ConnectionResetError), refusal
        tls = r"SSL handshake failed on verifying the certificate[\s\S]*?CERTIFICATE_VERIFY_FAILED"
        assert _log_says(server_log, tls, 30), "no failed TLS handshake in the server's log"
        assert _log_says(tmp_path / "signed.out", r"not secure content\.\s+client\.crt", 30)  # FLARE's kit check
        time.sleep(5)
        for kit in intruders.values():
            text = (kit / "log.txt").read_text(errors="replace") if (kit / "log.txt").is_file() else ""
            assert "Successfully registered client" not in text, kit
        # An admin kit of the other provisioning opens no session either.
        with pytest.raises(NoConnection):
            session(other / ADMIN, timeout=5.0).close()
        # The federation runs on: the same three sites, and the next job (below) completes.
        assert _connected(fed.kit(ADMIN)) == set(SITES)
    finally:
        for proc in procs:
            kill(proc)


def _signature(update: dict) -> bytes:
    """64 bytes that only this update holds: 16 consecutive nonzero float32 values of its largest layer."""
    values = max(update.values(), key=np.size).ravel().astype(np.float32)
    for i in range(values.size - 16):
        if np.all(values[i : i + 16] != 0):
            return values[i : i + 16].tobytes()
    raise AssertionError("no 16 consecutive nonzero values in the update")


def test_encrypted_aggregation_on_provisioned_kits_equals_plain_fedavg(federation, tmp_path):
    """Kits provisioned with FLARE's HEBuilder, a job built with ``he=True``: each round's global model,
    as both sites decrypted it, is step-weighted FedAvg of the (site-filtered) plain updates they
    encrypted; the server side never holds a plain update."""
    fed = federation
    sites = ("site-ct-a", "site-mri-b")  # site-ct-c refuses the job's code (and the capture filter with it)
    job = build_job(REPO / "jobs/fedavg_abdomen", tmp_path / "recording" / "fedavg_abdomen")
    client = json.loads((job / CLIENT_CONFIG).read_text())
    save = "fedgin.tools.testing.capture.SaveWeights"
    client["task_data_filters"] = [{"tasks": ["train"], "filters": [{"path": save, "args": {"tag": "got"}}]}]
    client["task_result_filters"][0]["filters"].append({"path": save, "args": {"tag": "sent"}})
    write_json(job / CLIENT_CONFIG, client)
    run = admin.run_job(
        fed.kit(ADMIN), job, tmp_path / "admin", num_rounds=2, min_clients=2,
        executor_overrides=TINY_TRAINING, echo=None, timeout=300, he=True,
    )  # fmt: skip
    result, job_id = Path(run["result"]), run["job_id"]
    fed.finished.setdefault("downloads", []).append(result)

    def saved(site, name):  # (weights, steps)
        with np.load(fed.kit(site) / job_id / "weights" / f"{name}.npz") as f:
            return {k: f[k] for k in f.files if k != "__steps__"}, int(f["__steps__"])

    got = [saved("site-ct-a", f"got_train_{r}")[0] for r in (0, 1)]
    final_path = result / "workspace/app_server/FL_global_model.pt"
    assert encrypted_layers(final_path) == sorted(got[0])  # the server's final model: ciphertexts
    decrypted = tmp_path / "decrypted.pt"
    context = fed.kit("site-ct-a") / "startup/client_context.tenseal"
    staged = fed.kit(ADMIN) / "transfer" / job.name  # the job as submitted: its model's shapes
    args = ["--model", str(final_path), "--context", str(context), "--out", str(decrypted), "--job", str(staged)]
    assert main(["decrypt-model", *args]) == 0
    got.append({k: v.numpy() for k, v in torch.load(decrypted, weights_only=True)["model"].items()})
    for r in (0, 1):
        sent = {site: saved(site, f"sent_train_{r}") for site in sites}
        total = sum(steps for _, steps in sent.values())
        for k, value in got[r + 1].items():
            fedavg = got[r][k].ravel() + sum(steps * update[k].ravel() for update, steps in sent.values()) / total
            np.testing.assert_allclose(value.ravel(), fedavg, atol=1e-4, rtol=0)
        other = saved("site-mri-b", f"got_train_{r}")[0]
        assert all(np.array_equal(other[k], got[r][k]) for k in got[r])
    cross = json.loads((result / "workspace/cross_site_val/cross_val_results.json").read_text())
    assert all(0 <= cross[site]["SRV_FL_global_model.pt"]["val_mean_dice"] <= 1 for site in sites)
    signatures = [_signature(saved(site, f"sent_train_{r}")[0]) for site in sites for r in (0, 1)]
    for path in fed.server_files() + [p for p in result.rglob("*") if p.is_file()]:
        content = path.read_bytes()
        assert not any(sig in content for sig in signatures), path


def _contents(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, or each member's of a zip (FLARE keeps jobs in its store zipped)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return [(f"{path}!{name}", z.read(name)) for name in z.namelist()]
    return [(str(path), path.read_bytes())]


def test_what_the_server_side_keeps_names_no_site_file_path_or_case(federation):
    """Last: after every job above, the downloads and everything on the server's disk (kit, workspace,
    job store, snapshots) hold no data path, file name, case id or site kit path (the operator's
    guide lists what is there)."""
    fed = federation
    secrets = {str(fed.root / "data")} | {str(fed.kit(site)) for site in SITES}
    for config in fed.data.values():
        site = json.loads(Path(config).read_text())
        datalist = json.loads((Path(config).parent / site["datalist"]).read_text())
        for cases in datalist.values():
            for case in cases:
                for path in (case["image"], case["label"]):
                    secrets |= {path, Path(path).name.split(".")[0]}  # imagesTr/ct_000.nii.gz, ct_000
    files = fed.server_files()
    for result in fed.finished.get("downloads", []):
        files += [p for p in result.rglob("*") if p.is_file()]
    assert not fed.finished.get("downloads") or any("jobs-storage" in str(p) for p in files)  # jobs ran: stored
    for name, content in [c for path in files for c in _contents(path)]:
        text = content.decode("latin-1")
        found = [s for s in secrets if s in text or s in name]
        assert not found, f"{name} holds {found}"
