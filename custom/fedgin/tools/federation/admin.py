"""What a FLARE admin does with fedgin jobs, through the FLARE API and an admin startup kit.

Works the same against POC and provisioned (mTLS) systems: the kit folder's name is the admin's
name. The admin never sees site data: the Dice table here is FLARE's cross-site validation, the
sites' own aggregate scores of the global models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from fedgin.tools.federation.jobs import build_job


class AdminError(RuntimeError):
    pass


def session(admin_kit: str | Path, timeout: float = 30.0):
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    admin_kit = Path(admin_kit)
    if not (admin_kit / "startup").is_dir():
        raise AdminError(f"{admin_kit} is not an admin startup kit (no startup/ folder)")
    return new_secure_session(admin_kit.name, str(admin_kit), timeout=timeout)


def stage(
    admin_kit, job_dir, num_rounds=None, min_clients=None, executor_overrides=None, he=False, installed_code=False
) -> str:
    """Build ``job_dir`` into the kit's ``transfer/`` folder, where the admin console's
    ``submit_job NAME`` (and the FLARE API, given a bare name) looks for it; returns NAME.
    ``he``: encrypted aggregation (the kits need HE contexts, see fedgin.tools.federation.he).
    ``installed_code``: without our code in ``app/custom``, for sites that run an installed fedgin."""
    name = Path(job_dir).resolve().name
    out = Path(admin_kit) / "transfer" / name
    build_job(job_dir, out, num_rounds, min_clients, executor_overrides, he=he, installed_code=installed_code)
    return name


def submit(
    admin_kit, job_dir, num_rounds=None, min_clients=None, executor_overrides=None, he=False, installed_code=False
) -> str:
    """Stage the job (our code in app/custom unless ``installed_code``) and submit it by name, as the
    console does; returns the job id."""
    name = stage(admin_kit, job_dir, num_rounds, min_clients, executor_overrides, he, installed_code)
    sess = session(admin_kit)
    try:
        return sess.submit_job(name)
    finally:
        sess.close()


def list_jobs(admin_kit) -> list[dict]:
    sess = session(admin_kit)
    try:
        return sess.list_jobs()
    finally:
        sess.close()


def abort(admin_kit, job_id: str) -> None:
    sess = session(admin_kit)
    try:
        sess.abort_job(job_id)
    finally:
        sess.close()


def follow(
    admin_kit,
    job_id: str,
    echo: Callable[[str], None] | None = print,
    timeout: float = 0,
    on_poll: Callable[[], None] | None = None,
) -> dict:
    """Wait for the job to end, echoing its status changes; returns the job's meta."""
    from nvflare.fuel.flare_api.api_spec import MonitorReturnCode

    last, start = [None], time.time()

    def poll(sess, job_id, job_meta, *args):
        state = job_meta.get("status")
        if echo and state != last[0]:
            echo(f"  [{time.time() - start:6.1f} s] job {job_id[:8]}: {state}")
        last[0] = state
        if on_poll:
            on_poll()
        return True

    sess = session(admin_kit)
    try:
        rc, meta = sess.monitor_job_and_return_job_meta(job_id, timeout=timeout, poll_interval=1.0, cb=poll)
    finally:
        sess.close()
    if rc == MonitorReturnCode.TIMEOUT:
        raise AdminError(f"job {job_id} did not finish within {timeout} s")
    return meta


def download(admin_kit, job_id: str, out_dir) -> Path:
    """Download a job's results; returns ``out_dir/<job_id>`` (with ``workspace/app_server/``)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sess = session(admin_kit)
    try:
        return Path(sess.download_job_result(job_id, str(out_dir)))
    finally:
        sess.close()


def deploy_refusals(meta: dict) -> dict[str, str]:
    """Participants that did not take a job, each with FLARE's reason (the job meta's deploy detail:
    e.g. ``{"site-ct-c": "BYOC not permitted"}``, a site that runs no code sent with jobs)."""
    refused = {}
    for entry in meta.get("job_deploy_detail", []):
        name, _, reason = str(entry).partition(": ")
        if reason and reason != "OK" and " " not in name and name != "invalid_clients":
            refused[name] = reason.removeprefix("NVFLARE_ERROR: ")
    return refused


def deploy_notes(meta: dict) -> list[str]:
    """The deploy detail's lines about the job as a whole (``num_ok_sites 1 < required_min_sites 2``,
    ``failed to deploy to required client ...``, ``invalid_clients: ...``)."""
    notes = []
    for entry in meta.get("job_deploy_detail", []):
        name, _, reason = str(entry).partition(": ")
        if not reason or " " in name or name == "invalid_clients":
            notes.append(str(entry))
    return notes


def cross_site_table(result_dir: str | Path) -> str:
    """Markdown: each site's validation mean Dice of each global model (FLARE's cross-site results)."""
    path = Path(result_dir) / "workspace" / "cross_site_val" / "cross_val_results.json"
    if not path.is_file():
        raise AdminError(f"no cross-site results in {result_dir}")
    results = json.loads(path.read_text())
    models = sorted({m for per_site in results.values() for m in per_site})
    rows = ["| site (validation split) | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for site, per_model in sorted(results.items()):
        cells = [f"{per_model[m]['val_mean_dice']:.3f}" if m in per_model else "—" for m in models]
        rows.append(f"| {site} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def run_job(
    admin_kit,
    job_dir,
    out_dir,
    num_rounds=None,
    min_clients=None,
    executor_overrides=None,
    echo: Callable[[str], None] | None = print,
    timeout: float = 0,
    he: bool = False,
    installed_code: bool = False,
) -> dict:
    """Submit, follow, download and tabulate a job: the admin's one command."""
    out_dir = Path(out_dir)
    job_id = submit(admin_kit, job_dir, num_rounds, min_clients, executor_overrides, he, installed_code)
    if echo:
        echo(f"Submitted {Path(job_dir).name} as job {job_id}")
    meta = follow(admin_kit, job_id, echo, timeout)
    refused = deploy_refusals(meta)
    if echo:
        for name, reason in refused.items():
            echo(f"  {name} did not take the job: {reason}")
    if meta.get("status") != "FINISHED:COMPLETED":
        why = "; ".join(deploy_notes(meta) + [f"{n}: {r}" for n, r in refused.items()])
        raise AdminError(f"job {job_id} ended as {meta.get('status')}" + (f" ({why})" if why else ""))
    result = download(admin_kit, job_id, out_dir / "results")
    table = cross_site_table(result)
    (result / "cross_site_dice.md").write_text(table)
    if echo:
        echo("\nMean Dice of the global models on each site's validation split:\n" + table)
        if he:
            echo("The global model is encrypted: a site decrypts it with `python -m fedgin decrypt-model`.")
    return {"job_id": job_id, "result": str(result), "table": table, "refused": refused}
