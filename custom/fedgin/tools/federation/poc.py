"""FLARE POC mode on one machine: real server and client processes on loopback.

Steps (each also a ``python -m fedgin poc`` command): prepare the POC workspace with named sites
and put each site's config into that site's own ``local/fedgin_site.json``; start server and
clients; submit a built job with the admin's startup kit; follow it; download its results; stop.
``run_poc`` does all of them and always stops the processes, also on failure or Ctrl-C.

The POC workspace is never inside the repository, and the FLARE CLI's config is written to a
private HOME inside that workspace, never to the user's own home.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from fedgin.flare.metrics import REPORT_PREFIX
from fedgin.flare.round_log import parse_round
from fedgin.flare.site_files import SITE_CONFIG_NAME
from fedgin.seg.evaluation import evaluate_model
from fedgin.seg.site_config import load_site_config, with_absolute_paths
from fedgin.tools.dice_table import dice_table
from fedgin.tools.federation import admin
from fedgin.tools.federation.cpu_sharing import co_located_env
from fedgin.tools.federation.he import CLIENT_CONTEXT, SERVER_CONTEXT, decrypt_job_model
from fedgin.tools.files import CHECKOUT, checkout_file, write_json
from fedgin.tools.job_folder import job_training_config

ADMIN = "admin@nvidia.com"
# Site-enforced privacy: every site's local/privacy.json makes its default scope filter every
# outgoing train result, whatever the job's own config says.
PRIVACY_POLICY = "poc/privacy.json"  # in the checkout (fedgin.tools.files.checkout_file)
DEFAULT_WORKSPACE = Path(tempfile.gettempdir()) / "fedgin_poc"
FLARE_START_SCRIPTS = ("start.sh", "sub_start.sh")  # a kit's scripts that start and restart a participant
REPO_ROOT = CHECKOUT


class PocError(RuntimeError):
    pass


@dataclass(frozen=True)
class PocWorkspace:
    """Our POC folder: ``poc/`` is FLARE's POC workspace, ``home/`` the CLI's private HOME."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> PocWorkspace:
        root = Path(root or DEFAULT_WORKSPACE).expanduser().resolve()
        if root == REPO_ROOT or REPO_ROOT in root.parents:
            raise PocError(f"the POC workspace {root} is inside the repository {REPO_ROOT}: choose a folder outside it")
        return cls(root)

    @property
    def prod(self) -> Path:
        return self.root / "poc" / "example_project" / "prod_00"

    @property
    def admin_kit(self) -> Path:
        return self.prod / ADMIN

    @property
    def he(self) -> bool:
        """Whether the workspace was prepared with HE contexts (``prepare(..., he=True)``)."""
        return (self.prod / "server" / "startup" / SERVER_CONTEXT).is_file()

    def sites(self) -> list[str]:
        return sorted(p.parent.parent.name for p in self.prod.glob("*/local/" + SITE_CONFIG_NAME))

    def env(self) -> dict:
        env = dict(os.environ)
        env["HOME"] = str(self.root / "home")
        env["NVFLARE_POC_WORKSPACE"] = str(self.root / "poc")
        return env


def nvflare(
    ws: PocWorkspace,
    *args: str,
    timeout: float = 300,
    extra_env: Mapping[str, str] | None = None,
    python: str | Path | None = None,
) -> str:
    """Run the ``nvflare`` CLI against this workspace (with ``python``, default this one); raises
    with its output on failure."""
    (ws.root / "home").mkdir(parents=True, exist_ok=True)
    env = {**ws.env(), **(extra_env or {})}
    cmd = [str(python or sys.executable), "-m", "nvflare.cli", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PocError(f"`nvflare {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def prepare(
    ws: PocWorkspace,
    sites: Mapping[str, str | Path],
    privacy_policy: str | Path | None = PRIVACY_POLICY,
    he: bool = False,
) -> None:
    """A fresh POC workspace with these site names; each site config into that site's ``local/``.

    ``privacy_policy`` (default ``poc/privacy.json``) goes to every participant's
    ``local/privacy.json``; None leaves the sites without one. ``he``: FLARE's HEBuilder also
    writes TenSEAL contexts into the kits (``nvflare poc prepare --he``), for encrypted aggregation.
    """
    for path in sites.values():
        load_site_config(path)  # fail before anything starts, naming the file
    nvflare(ws, "poc", "prepare", "-c", *sites, "--force", *(["--he"] if he else []))
    for name, path in sites.items():
        local = ws.prod / name / "local"
        write_json(local / SITE_CONFIG_NAME, with_absolute_paths(path))
    if privacy_policy is not None:
        if privacy_policy == PRIVACY_POLICY:
            privacy_policy = checkout_file(PRIVACY_POLICY)
        policy = json.loads(Path(privacy_policy).read_text())  # a broken policy must fail here, not inside FLARE
        for name in sites:
            write_json(ws.prod / name / "local" / "privacy.json", policy)
        write_json(ws.prod / "server" / "local" / "privacy.json", server_policy(policy))


def server_policy(policy: dict) -> dict:
    """The server's copy of a sites' privacy policy: the scope names (which the server checks a job's
    scope against) without the filters. FLARE runs a scope's ``task_result_filters`` at the server
    too, on every incoming result: the sites' filter would run a second time there, and on
    ciphertexts (encrypted aggregation) it fails the job."""
    scopes = [{"name": s["name"], "properties": s.get("properties", {})} for s in policy.get("scopes", [])]
    return {**{k: v for k, v in policy.items() if k != "scopes"}, "scopes": scopes}


def start(ws: PocWorkspace, python: str | Path | None = None) -> None:
    """Start the server and the clients (no admin console) and wait until they are ready.

    ``python``: the environment they run in (FLARE starts them with the CLI's Python), e.g. a
    site's own install; default this one."""
    if not ws.prod.is_dir():
        raise PocError(f"no POC workspace at {ws.root}: run prepare first")
    # All POC sites share this machine's cores, as simulated sites do, and take turns on them.
    env = co_located_env(len(ws.sites()), ws.root.resolve() / "cpu_turns.lock")
    nvflare(ws, "poc", "start", "-ex", ADMIN, extra_env=env, python=python)


def _is_flare_process(cmdline: list[str], marker: str) -> bool:
    """A FLARE process of the workspace ``marker``: a participant (``python -m nvflare...``) or the
    kit's start scripts that restart it, never a user's ``tail -f`` on one of its logs."""
    if not any(marker in arg for arg in cmdline):
        return False
    return any("nvflare" in arg for arg in cmdline) or any(arg.endswith(FLARE_START_SCRIPTS) for arg in cmdline)


def processes(ws: PocWorkspace) -> list[int]:
    """PIDs of the FLARE processes running from this POC workspace (see :func:`_is_flare_process`)."""
    marker = str(ws.root / "poc")
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if _is_flare_process(proc.info["cmdline"] or [], marker):
            pids.append(proc.info["pid"])
    return pids


def stop(ws: PocWorkspace, grace_s: float = 30.0) -> None:
    """Stop every POC process of this workspace (safe to call when nothing runs).

    FLARE's ``poc stop`` asks politely; whatever still runs after ``grace_s`` is killed, so no
    orphan keeps the port.
    """
    if ws.prod.is_dir():
        try:
            nvflare(ws, "poc", "stop", timeout=120)
        except PocError:
            pass
    deadline = time.time() + grace_s
    while processes(ws) and time.time() < deadline:
        time.sleep(0.5)
    for pid in processes(ws):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def submit(
    ws: PocWorkspace,
    job_dir: str | Path,
    num_rounds: int | None = None,
    executor_overrides=None,
    he: bool | None = None,
) -> str:
    """Build the job (our code in app/custom) and submit it as the POC admin; returns the job id.

    ``he``: encrypted aggregation; None: when the workspace has HE contexts (:attr:`PocWorkspace.he`).
    """
    he = ws.he if he is None else he
    if he and not ws.he:
        raise PocError(f"the POC workspace {ws.root} has no HE contexts: prepare it with --he")
    min_clients = len(ws.sites()) or None
    return admin.submit(ws.admin_kit, job_dir, num_rounds, min_clients, executor_overrides, he=he)


def status(ws: PocWorkspace, job_id: str) -> dict:
    sess = admin.session(ws.admin_kit)
    try:
        return sess.get_job_meta(job_id)
    finally:
        sess.close()


def follow(ws: PocWorkspace, job_id: str, echo: Callable[[str], None] | None = print, timeout: float = 0) -> dict:
    """Wait for the job to end, echoing status changes and the sites' round lines as the server logs
    them from the sites' metric events (fedgin.flare.metrics.RoundReporter); returns the job's meta."""
    seen: dict[Path, int] = {}
    start_time = time.time()

    def tail_site_logs():
        for log in sorted(ws.prod.glob(f"server/{job_id}/log.txt")):
            lines = log.read_text(errors="replace").splitlines()
            for line in lines[seen.get(log, 0) :]:
                r = parse_round(line) if REPORT_PREFIX in line else None
                if r and echo:
                    echo(
                        f"  [{time.time() - start_time:6.1f} s] round {r['round']}/{r['rounds']} {r['site']}: "
                        f"val Dice {r['val_mean_dice']:.3f}, loss {r['loss']:.4f}"
                    )
            seen[log] = len(lines)

    meta = admin.follow(ws.admin_kit, job_id, echo, timeout, on_poll=tail_site_logs)
    tail_site_logs()  # lines written between the last poll and the end
    return meta


def download(ws: PocWorkspace, job_id: str, out_dir: str | Path) -> Path:
    """Download the job's results; returns the folder holding ``workspace/app_server/``."""
    return admin.download(ws.admin_kit, job_id, out_dir)


def run_poc(
    job_dir: str | Path,
    sites: Mapping[str, str | Path],
    workspace: str | Path | None = None,
    num_rounds: int | None = None,
    executor_overrides: dict | None = None,
    evaluate_split: str | None = "test",
    echo: Callable[[str], None] | None = print,
    timeout_s: float = 3600,
    he: bool = False,
) -> dict:
    """The whole POC flow; always stops the processes. Returns a summary with the results' paths.

    ``he``: encrypted aggregation. The server's final model is then ciphertext
    (``encrypted_global_model``); ``global_model`` is its copy decrypted with the first site's key.
    """
    ws = PocWorkspace.at(workspace)
    say = echo or (lambda _: None)
    say(f"Preparing the POC workspace {ws.root} for {', '.join(sites)}{' with HE contexts' if he else ''} ...")
    prepare(ws, sites, he=he)
    try:
        say("Starting server and clients ...")
        start(ws)
        job_id = submit(ws, job_dir, num_rounds, executor_overrides, he=he)
        say(f"Submitted {Path(job_dir).name} as job {job_id}")
        meta = follow(ws, job_id, echo, timeout_s)
        if meta.get("status") != "FINISHED:COMPLETED":
            raise PocError(f"job {job_id} ended as {meta.get('status')}; logs under {ws.prod}")
        result_dir = download(ws, job_id, ws.root / "results")
    finally:
        say("Stopping the POC system ...")
        stop(ws)
    app = result_dir / "workspace" / "app_server"
    model = app / "FL_global_model.pt"
    summary = {"job_id": job_id, "results": str(result_dir), "global_model": str(model)}
    if he:  # as a site would: the POC machine holds every kit
        site_key = ws.prod / next(iter(sites)) / "startup" / CLIENT_CONTEXT
        summary["encrypted_global_model"] = str(model)
        model = decrypt_job_model(model, site_key, result_dir / "FL_global_model.decrypted.pt", app)
        summary["global_model"] = str(model)
        say(f"Decrypted the global model with {next(iter(sites))}'s key: {model}")
    if evaluate_split:
        config = job_training_config(app)
        dice = {name: evaluate_model(model, path, split=evaluate_split, config=config) for name, path in sites.items()}
        write_json(ws.root / "results" / "dice.json", dice)
        table = dice_table(dice, title=f"Dice of the final global model (POC job {job_id[:8]}, {evaluate_split} split)")
        (ws.root / "results" / "dice.md").write_text(table)
        summary["dice"] = dice
        say("\n" + table)
    return summary
