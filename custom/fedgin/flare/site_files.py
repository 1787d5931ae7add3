"""Where a site keeps its own files in its FLARE workspace (never sent anywhere)."""

from __future__ import annotations

from pathlib import Path

from fedgin.seg.site_config import SiteConfigError

SITE_CONFIG_NAME = "fedgin_site.json"
SIMULATOR_SITE_CONFIG_DIR = "fedgin_sites"  # all simulated sites share one local/ folder


def find_site_config(local_dir: str | Path, site_name: str) -> Path:
    """The site config in a site's ``local/`` folder.

    ``local/fedgin_sites/<site>.json`` is used first (the simulator gives every site the same
    ``local/``), then ``local/fedgin_site.json`` (a real site's own folder).
    """
    local_dir = Path(local_dir)
    candidates = [local_dir / SIMULATOR_SITE_CONFIG_DIR / f"{site_name}.json", local_dir / SITE_CONFIG_NAME]
    for path in candidates:
        if path.is_file():
            return path
    raise SiteConfigError(f"site {site_name}: no site config found; put it at {candidates[1]} (or {candidates[0]})")
