"""A federation in containers: FLARE's own DockerBuilder in the provisioning, its compose file made fedgin's.

FLARE's ``nvflare.lighter.impl.docker.DockerBuilder`` writes ``compose.yaml`` beside the kits (one
service per participant, its kit mounted at ``/workspace``) and a generic image recipe
(``nvflare_compose/``: nvflare plus whatever ``requirements.txt`` the provisioning folder holds).
fedgin's image is built from the repository's ``Dockerfile`` instead (the runtime only, by
``poc/site_install.sh``), so :func:`fedgin_compose` rewrites that file:

- every service runs ``image`` (no build step; FLARE's generic recipe is removed);
- a site's ``local/`` (its site config, privacy policy, resources) is mounted read-only: nothing in
  the container, a job's code included, can change them; the privacy ledger's folder inside it stays
  writable, since the privacy budget spent must outlive the container;
- the site's data folder is mounted read-only at :data:`CONTAINER_DATA` from the variable
  ``FEDGIN_DATA_<SITE>`` (compose refuses to start a site whose variable is unset);
- each site kit also gets its own ``compose.yaml`` and ``.env`` (a hospital receives only its kit),
  with the paths taken from the kit's folder and the data from ``FEDGIN_DATA``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fedgin.flare.privacy.ledger import LEDGER_DIR
from fedgin.seg.site_config import load_site_config

DOCKER_BUILDER_PATH = "nvflare.lighter.impl.docker.DockerBuilder"
WORKSPACE = "/workspace"  # where FLARE's compose template mounts a kit
CONTAINER_DATA = "/data"  # where a site's data folder is mounted (its site config's data_root)
COMPOSE_FILE = "compose.yaml"
GPU_REQUEST = {
    "resources": {"reservations": {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}
}


def data_variable(site: str) -> str:
    """The compose variable naming a site's data folder on its host: ``site-ct-a`` → ``FEDGIN_DATA_SITE_CT_A``."""
    return "FEDGIN_DATA_" + re.sub(r"[^A-Za-z0-9]", "_", site).upper()


def _site_volumes(kit: str, data_var: str) -> list[str]:
    return [
        f"{kit}:{WORKSPACE}",
        f"{kit}/local:{WORKSPACE}/local:ro",
        f"{kit}/local/{LEDGER_DIR}:{WORKSPACE}/local/{LEDGER_DIR}",
        f"${{{data_var}:?set {data_var} to this site's data folder}}:{CONTAINER_DATA}:ro",
    ]


def _fedgin_service(service: dict, image: str, gpus: bool) -> dict:
    service = {k: v for k, v in service.items() if k != "build"}
    service["image"] = image
    # The image runs as an unprivileged user; it must own the kit (FEDGIN_UID/GID: the kit's owner).
    service["user"] = "${FEDGIN_UID:-1000}:${FEDGIN_GID:-1000}"
    if "ports" in service:  # FLARE 2.9 serves admin and clients on one port, and lists it twice
        service["ports"] = list(dict.fromkeys(service["ports"]))
    if gpus:
        service["deploy"] = GPU_REQUEST
    return service


def fedgin_compose(prod: str | Path, image: str, gpus: bool = False) -> Path:
    """Rewrite the DockerBuilder's ``compose.yaml`` in ``prod`` (the folder of the kits) for fedgin's
    ``image``, and give every site kit its own; returns the top-level compose file.

    ``gpus``: each service asks for the host's GPUs (the NVIDIA Container Toolkit), for a CUDA image.
    """
    import yaml

    prod = Path(prod)
    compose_file = prod / COMPOSE_FILE
    if not compose_file.is_file():
        raise FileNotFoundError(f"{compose_file}: no compose file (was FLARE's DockerBuilder in the project?)")
    compose = yaml.safe_load(compose_file.read_text())
    services, sites = {}, []
    for name, service in compose["services"].items():
        service = _fedgin_service(service, image, gpus)
        if "client_train" in " ".join(map(str, service.get("command", []))):
            service["volumes"] = _site_volumes(f"./{name}", data_variable(name))
            _site_kit_compose(prod / name, compose, service, name)
            sites.append(name)
        services[name] = service
    compose["services"] = services
    compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))
    shutil.rmtree(prod / "nvflare_compose", ignore_errors=True)
    env = (prod / ".env").read_text() if (prod / ".env").is_file() else ""
    env = re.sub(r"^IMAGE_NAME=.*\n?", "", env, flags=re.M)
    lines = [f"{data_variable(n)}=" for n in sites] + ["FEDGIN_UID=1000", "FEDGIN_GID=1000"]
    (prod / ".env").write_text(
        env + "# each site's data folder on this host (mounted read-only):\n" + "\n".join(lines) + "\n"
    )
    return compose_file


def _site_kit_compose(kit: Path, compose: dict, service: dict, name: str) -> None:
    """The site's own ``compose.yaml`` and ``.env``, run from inside its kit (``docker compose up``)."""
    import yaml

    (kit / "local" / LEDGER_DIR).mkdir(parents=True, exist_ok=True)  # the mount point inside read-only local/
    own = {**service, "volumes": _site_volumes(".", "FEDGIN_DATA")}
    kit_compose = {k: v for k, v in compose.items() if k not in ("services", "volumes")}
    kit_compose["services"] = {name: own}
    (kit / COMPOSE_FILE).write_text(yaml.safe_dump(kit_compose, sort_keys=False))
    (kit / ".env").write_text(
        f"WORKSPACE={WORKSPACE}\nPYTHON_EXECUTABLE=/usr/local/bin/python3\n"
        "# this site's data folder on this host, mounted read-only at /data (`site-config --container` sets it):\n"
        "FEDGIN_DATA=\nFEDGIN_UID=1000\nFEDGIN_GID=1000\n"
    )


def container_site_config(site_config: str | Path) -> tuple[dict, Path]:
    """A site config as the container reads it, and the data folder on this host to mount there:
    data_root at :data:`CONTAINER_DATA`, the datalist inside it, every datalist path relative (a host
    path means nothing in the container)."""
    cfg = load_site_config(site_config)
    try:
        inside = cfg.datalist.resolve().relative_to(cfg.data_root)
    except ValueError:
        raise ValueError(
            f"{site_config}: the datalist {cfg.datalist} is outside data_root {cfg.data_root}: "
            "a container sees only data_root"
        ) from None
    for split, entries in json.loads(cfg.datalist.read_text()).items():
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            for key, value in entry.items() if isinstance(entry, dict) else []:
                if isinstance(value, str) and Path(value).is_absolute():
                    raise ValueError(
                        f"{cfg.datalist}: {split}[{i}] {key} is an absolute path ({value}): "
                        "a container needs paths relative to data_root"
                    )
    raw = json.loads(Path(site_config).read_text())
    return {**raw, "data_root": CONTAINER_DATA, "datalist": str(inside)}, cfg.data_root


def set_kit_data(kit: str | Path, data_root: Path) -> Path:
    """Name the site's data folder in its kit's ``.env`` (``FEDGIN_DATA``); returns the ``.env``."""
    env_file = Path(kit) / ".env"
    if not env_file.is_file():
        raise FileNotFoundError(f"{env_file}: not a container kit (provision with --docker-image)")
    text = env_file.read_text()
    line = f"FEDGIN_DATA={data_root}"
    text = re.sub(r"^FEDGIN_DATA=.*$", line, text, flags=re.M) if "FEDGIN_DATA=" in text else text + line + "\n"
    env_file.write_text(text)
    return env_file
