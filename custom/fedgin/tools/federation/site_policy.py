"""A participant's own rules, written into its startup kit's ``local/`` folder, where FLARE reads them.

Three FLARE files, each starting from the ``.default`` (or ``.sample``) provisioning wrote:

- ``authorization.json``: the rights of each admin role *at this site*. FLARE checks the ``byoc``
  right of a job's submitter when the job arrives with code (``app/custom``): :func:`refuse_byoc`
  takes it from every role, so this site runs no code that came with a job. Read when the
  participant starts: restart it after a change.
- ``resources.json``: ``class_allow_list``, the only classes a job *without* custom code may name.
  :func:`allow_installed_fedgin` adds fedgin's (and the model persistor the server needs), for jobs
  built with ``installed_code`` against a ``pip install``-ed fedgin. Re-read for every job.
- ``privacy.json``: privacy scopes. The default scope's filters run on every result a job sends,
  whatever the job says; a job naming a scope the site lacks is refused
  (:func:`require_privacy_scope`). The server gets the scope names only (see
  :func:`fedgin.tools.federation.poc.server_policy`). Read when the participant starts.
- ``log_config.json``: :func:`log_tls_failures` makes the server's log say why a TLS handshake
  failed (a client certificate our root CA did not sign), which FLARE 2.9 does not log otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedgin.tools.federation.poc import server_policy
from fedgin.tools.files import write_json

# The classes of fedgin's jobs that FLARE's built-in allow list lacks (``jobs/*/app/config``).
FEDGIN_CLASSES = ("fedgin.flare.", "fedgin.seg.")
SERVER_EXTRA_CLASSES = ("nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor",)


def all_rights() -> tuple[str, ...]:
    """Every right FLARE's authorizer checks: command categories, commands checked by their own name,
    ``byoc`` and ``server-predeployed-flwr`` (for spelling out a role given "any" or "none")."""
    from nvflare.apis.fl_constant import AdminCommandNames
    from nvflare.security.security import COMMAND_CATEGORIES

    commands = {v for k, v in vars(AdminCommandNames).items() if not k.startswith("_") and isinstance(v, str)}
    categorized = set(COMMAND_CATEGORIES)
    rights = (commands - categorized) | set(COMMAND_CATEGORIES.values()) | {"byoc", "server-predeployed-flwr"}
    return tuple(sorted(rights))


class SitePolicyError(ValueError):
    pass


def is_server_kit(kit: str | Path) -> bool:
    return (Path(kit) / "startup" / "fed_server.json").is_file()


def _local(kit: str | Path, name: str) -> tuple[Path, dict]:
    """``local/NAME`` of ``kit`` and its content: the file itself if the site has one, else FLARE's default."""
    local = Path(kit) / "local"
    if not local.is_dir():
        raise SitePolicyError(f"{kit} is not a startup kit (no local/ folder)")
    target = local / name
    source = target if target.is_file() else local / f"{name}.default"
    if not source.is_file():
        raise SitePolicyError(f"{source} not found: provisioning writes it into every kit")
    try:
        return target, json.loads(source.read_text())
    except json.JSONDecodeError as e:
        raise SitePolicyError(f"{source} is not valid JSON: {e}") from e


def refuse_byoc(kit: str | Path) -> Path:
    """``local/authorization.json`` with the ``byoc`` right taken from every role; returns its path."""
    target, policy = _local(kit, "authorization.json")
    permissions = policy.get("permissions")
    if not isinstance(permissions, dict):
        raise SitePolicyError(f"{target}: no 'permissions' object")
    for role, rights in permissions.items():
        if isinstance(rights, str):  # "any" / "none" for all rights: spell them out
            rights = dict.fromkeys(all_rights(), rights)
        permissions[role] = {**rights, "byoc": "none"}
    write_json(target, policy)
    return target


def allow_installed_fedgin(kit: str | Path) -> Path:
    """``local/resources.json`` whose ``class_allow_list`` also holds fedgin's classes; returns its path."""
    target, resources = _local(kit, "resources.json")
    allowed = resources.get("class_allow_list")
    if not isinstance(allowed, list):
        raise SitePolicyError(f"{target}: no 'class_allow_list' list (FLARE 2.9 kits have one)")
    extra = FEDGIN_CLASSES + (SERVER_EXTRA_CLASSES if is_server_kit(kit) else ())
    resources["class_allow_list"] = allowed + [c for c in extra if c not in allowed]
    resources.setdefault("format_version", 2)
    write_json(target, resources)
    return target


def require_privacy_scope(kit: str | Path, policy_file: str | Path) -> Path:
    """``local/privacy.json`` from ``policy_file`` (e.g. ``poc/privacy.json``); the server's kit gets
    the scope names only. Returns its path."""
    try:
        policy = json.loads(Path(policy_file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SitePolicyError(f"{policy_file}: cannot read a privacy policy: {e}") from e
    scopes = policy.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all("name" in s for s in scopes):
        raise SitePolicyError(f"{policy_file}: 'scopes' must be a non-empty list of named scopes")
    if policy.get("default_scope") not in {s["name"] for s in scopes}:
        raise SitePolicyError(f"{policy_file}: 'default_scope' must name one of its scopes")
    if not (Path(kit) / "local").is_dir():
        raise SitePolicyError(f"{kit} is not a startup kit (no local/ folder)")
    target = Path(kit) / "local" / "privacy.json"
    write_json(target, server_policy(policy) if is_server_kit(kit) else policy)
    return target


def keep_server_storage(kit: str | Path, folder: str | Path) -> Path:
    """The server's job store and snapshots in ``folder`` (FLARE's defaults: ``/tmp/nvflare/...``,
    shared by everything on the machine and wiped at reboot); returns ``local/resources.json``."""
    if not is_server_kit(kit):
        raise SitePolicyError(f"{kit} is not the server's kit (no startup/fed_server.json)")
    target, resources = _local(kit, "resources.json")
    folder = Path(folder).expanduser().resolve()
    (job_manager,) = [c for c in resources.get("components", []) if c.get("id") == "job_manager"] or [None]
    snapshot = resources.get("snapshot_persistor", {}).get("args", {}).get("storage", {}).get("args")
    if job_manager is None or snapshot is None:
        raise SitePolicyError(f"{target}: no job_manager component or snapshot_persistor storage to move")
    job_manager.setdefault("args", {})["uri_root"] = str(folder / "jobs-storage")
    snapshot["root_dir"] = str(folder / "snapshot-storage")
    write_json(target, resources)
    return target


# Python's asyncio reports a failed TLS handshake only in debug mode, at DEBUG level on its own logger.
ASYNCIO_DEBUG_ENV = {"PYTHONASYNCIODEBUG": "1"}


def log_tls_failures(kit: str | Path) -> Path:
    """``local/log_config.json`` that keeps asyncio's DEBUG records (``SSL handshake failed on
    verifying the certificate``, with the reason); start the participant with
    ``PYTHONASYNCIODEBUG=1`` (:data:`ASYNCIO_DEBUG_ENV`) so that asyncio writes them. Returns the path."""
    target, config = _local(kit, "log_config.json")
    loggers = config.get("loggers")
    if not isinstance(loggers, dict):
        raise SitePolicyError(f"{target}: no 'loggers' object")
    loggers["asyncio"] = {"level": "DEBUG"}
    write_json(target, config)
    return target
