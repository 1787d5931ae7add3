"""Provisioned deployments: startup kits from ``poc/project.yml`` and the steps a site operator runs.

``nvflare provision`` writes one kit per participant (mTLS certificates, start scripts, ``local/``).
A site operator puts the site config into the kit's ``local/fedgin_site.json`` and starts the client
with ``startup/start.sh``; the project admin submits built jobs with the admin kit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fedgin.flare.site_files import SITE_CONFIG_NAME
from fedgin.seg.site_config import with_absolute_paths
from fedgin.tools.federation.admin import session
from fedgin.tools.federation.containers import DOCKER_BUILDER_PATH, container_site_config, fedgin_compose, set_kit_data
from fedgin.tools.federation.poc import REPO_ROOT, PocError
from fedgin.tools.files import checkout_file, write_json

DEFAULT_PROJECT = "poc/project.yml"  # in the checkout (fedgin.tools.files.checkout_file)
HE_BUILDER_PATH = "nvflare.lighter.impl.he.HEBuilder"
SIGNATURE_BUILDER_PATH = "nvflare.lighter.impl.signature.SignatureBuilder"


def _outside_repo(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    if path == REPO_ROOT or REPO_ROOT in path.parents:
        raise PocError(f"{path} is inside the repository: startup kits hold private keys, write them elsewhere")
    return path


def provision(
    out_dir: str | Path,
    project: str | Path = DEFAULT_PROJECT,
    he: bool = False,
    docker_image: str | None = None,
    docker_gpus: bool = False,
) -> Path:
    """Startup kits for every participant of ``project``; returns the folder holding one kit each.

    ``he``: also FLARE's HEBuilder (TenSEAL CKKS contexts in every kit's ``startup/``, signed with
    the rest), for jobs built with encrypted aggregation; see :func:`with_builder`.
    ``docker_image``: also FLARE's DockerBuilder, its compose file then made to run every participant
    from this image (built from the repository's ``Dockerfile``), each site kit with its own
    compose file; ``docker_gpus``: the services ask for the host's GPUs. See
    :mod:`fedgin.tools.federation.containers`.
    """
    out_dir = _outside_repo(out_dir)
    if project == DEFAULT_PROJECT:
        project = checkout_file(DEFAULT_PROJECT)
    if he:
        project = with_builder(project, out_dir / f"{Path(project).stem}_he.yml", HE_BUILDER_PATH)
    if docker_image:
        project = with_builder(project, out_dir / f"{Path(project).stem}_docker.yml", DOCKER_BUILDER_PATH)
    home = out_dir / ".home"  # the nvflare CLI writes its config under HOME
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    cmd = [sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project), "-w", str(out_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise PocError(f"nvflare provision failed:\n{proc.stdout}\n{proc.stderr}")
    kits = sorted(out_dir.glob("*/prod_*"))
    if not kits:
        raise PocError(f"nvflare provision wrote no kits under {out_dir}")
    if docker_image:
        fedgin_compose(kits[-1], docker_image, gpus=docker_gpus)
    return kits[-1]


def with_builder(project: str | Path, out_file: str | Path, builder_path: str) -> Path:
    """A copy of ``project`` with one of FLARE's builders before the SignatureBuilder (so what it
    writes is signed, as ``nvflare poc prepare --he`` does for the HE contexts); unchanged if it has
    that builder already. Returns ``out_file``."""
    import yaml

    config = yaml.safe_load(Path(project).read_text())
    builders = config.setdefault("builders", [])
    if not any(b.get("path") == builder_path for b in builders):
        paths = [b.get("path") for b in builders]
        at = paths.index(SIGNATURE_BUILDER_PATH) if SIGNATURE_BUILDER_PATH in paths else len(builders)
        builders.insert(at, {"path": builder_path, "args": {}})
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return out_file


def install_site_config(kit: str | Path, site_config: str | Path, container: bool = False) -> Path:
    """Put a site config (paths made absolute) where the site's Executor reads it: ``local/``.

    ``container``: the kit runs in fedgin's image (``provision --docker-image``): the config points
    at the data as the container mounts it (``/data``) and the kit's ``.env`` names the data folder
    on this host, which compose mounts there read-only.
    """
    target = Path(kit) / "local" / SITE_CONFIG_NAME
    if container:
        config, data_root = container_site_config(site_config)
        set_kit_data(kit, data_root)
    else:
        config = with_absolute_paths(site_config)
    write_json(target, config)
    return target


def start_participant(kit: str | Path, log_file: str | Path, env: dict | None = None) -> subprocess.Popen:
    """Run a kit's ``startup/start.sh`` (server or client) with this Python on PATH (and ``env`` added)."""
    kit = Path(kit)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **(env or {}), "PATH": path}
    with open(log_file, "w") as log:
        return subprocess.Popen(
            ["bash", str(kit / "startup" / "start.sh")],
            cwd=kit,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def connected_clients(sess) -> list[str]:
    """Names of the clients connected to the server (FLARE raises while there are none)."""
    from nvflare.fuel.flare_api.api_spec import NoClientsAvailable

    try:
        return [c["client_name"] for c in sess.check_status("client").get("client_status", [])]
    except NoClientsAvailable:
        return []


def shutdown_all(admin_kit: str | Path) -> None:
    """Stop server and clients through the admin kit (the project admin's right)."""
    sess = session(admin_kit, timeout=20.0)
    try:
        sess.shutdown("all")
    finally:
        sess.close()


def kill(proc: subprocess.Popen) -> None:
    """Last resort after shutdown: end a participant's whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
