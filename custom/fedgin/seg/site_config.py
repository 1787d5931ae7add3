"""A site's data configuration: where its data lives and what its label ids mean.

The site config stays with the site (in the site's FLARE ``local/`` folder), never inside a job,
so data paths never leave the hospital. Schema (JSON)::

    {
      "site_name": "site-ct",              # optional, informative
      "modality": "CT",                    # "CT" or "MR" (case-insensitive; "MRI" accepted)
      "data_root": "/data/ct",             # absolute, or relative to this file's folder
      "datalist": "datalist.json",         # relative to data_root (or absolute)
      "labels": {"liver": 6, "spleen": 1}, # organ name -> label id (or list of ids to merge)
      "normalization": {"window": [-125, 275]},  # optional, see fedgin.seg.data.normalization
      "eval_labels": {"liver": 6, "spleen": 1, "pancreas": 11}  # optional, see below
    }

``eval_labels`` (optional) are the labels the site's validation and test volumes carry when they
label more organs than its training volumes: an MRI site that annotates no pancreas for training
but has a few test scans with it scores the pancreas it learns through the CT sites (organ
transfer). It names every organ of ``labels``; training reads ``labels`` only.

The datalist is Decathlon style: ``{"training": [{"image": ..., "label": ...}], "validation":
[...], "test": [...]}`` with paths relative to ``data_root``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

REQUIRED_KEYS = ("modality", "data_root", "datalist", "labels")
OPTIONAL_KEYS = ("site_name", "normalization", "description", "share_local_model", "eval_labels")
# The one table of modality names: what users may write -> fedgin's name (case-insensitive).
MODALITY_ALIASES = {"CT": "CT", "MR": "MR", "MRI": "MR"}
SPLITS = ("training", "validation", "test")


def normalize_modality(name: str) -> str:
    """``"ct"``, ``"MR"``, ``"MRI"`` ... -> ``"CT"`` or ``"MR"``.

    Raises:
        ValueError: for any other name.
    """
    modality = MODALITY_ALIASES.get(str(name).upper())
    if modality is None:
        raise ValueError(f"unknown modality {name!r}; expected 'CT' or 'MR'")
    return modality


class SiteConfigError(ValueError):
    """A site config or its datalist is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class SiteConfig:
    """A validated site config with absolute paths."""

    path: Path
    modality: str
    data_root: Path
    datalist: Path
    labels: dict[str, tuple[int, ...]]
    site_name: str | None = None
    normalization: dict = field(default_factory=dict)
    share_local_model: bool = False  # the site, not the job, decides whether its local model may leave
    eval_labels: dict[str, tuple[int, ...]] | None = None  # labels of its validation/test volumes, if more

    def scoring_config(self) -> SiteConfig:
        """This site as its validation and test volumes are labelled (``eval_labels``, else ``labels``)."""
        return self if self.eval_labels is None else replace(self, labels=self.eval_labels)

    def missing_organs(self, organs: list[str]) -> list[str]:
        return [o for o in organs if o not in self.labels]

    def cases(self, split: str) -> list[dict[str, str]]:
        """The datalist entries of ``split`` with absolute paths; checks the files exist."""
        if split not in SPLITS:
            raise SiteConfigError(f"{self.path}: unknown split {split!r}; expected one of {SPLITS}")
        try:
            datalist = json.loads(self.datalist.read_text())
        except FileNotFoundError:
            raise SiteConfigError(f"{self.path}: datalist {self.datalist} does not exist") from None
        except json.JSONDecodeError as e:
            raise SiteConfigError(f"{self.datalist}: not valid JSON ({e})") from None
        if not isinstance(datalist, dict):
            raise SiteConfigError(f"{self.datalist}: expected a JSON object with keys {SPLITS}")
        entries = datalist.get(split, [])
        if not isinstance(entries, list):
            raise SiteConfigError(f"{self.datalist}: '{split}' must be a list of {{image, label}}")
        cases = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry:
                raise SiteConfigError(f"{self.datalist}: {split}[{i}] has no 'image' key")
            case = {}
            for key in ("image", "label"):
                if key not in entry:
                    continue
                p = Path(entry[key])
                p = p if p.is_absolute() else self.data_root / p
                if not p.is_file():
                    raise SiteConfigError(f"{self.datalist}: {split}[{i}] {key} file {p} does not exist")
                case[key] = str(p)
            cases.append(case)
        return cases


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def parse_site_config(raw: dict, path: Path) -> SiteConfig:
    """Validate a site config dict read from ``path`` (used to resolve relative paths)."""
    path = Path(path).resolve()
    if not isinstance(raw, dict):
        raise SiteConfigError(f"{path}: a site config must be a JSON object")
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise SiteConfigError(
            f"{path}: unknown key(s) {unknown}; allowed keys are {list(REQUIRED_KEYS + OPTIONAL_KEYS)}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise SiteConfigError(f"{path}: missing required key(s) {missing}")
    try:
        modality = normalize_modality(raw["modality"])
    except ValueError as e:
        raise SiteConfigError(f"{path}: {e}") from None
    parsed_labels = _parse_labels(raw["labels"], "labels", path)
    eval_labels = None
    if raw.get("eval_labels") is not None:
        eval_labels = _parse_labels(raw["eval_labels"], "eval_labels", path)
        lacking = [o for o in parsed_labels if o not in eval_labels]
        if lacking:
            raise SiteConfigError(f"{path}: 'eval_labels' must name every organ of 'labels'; it lacks {lacking}")
    normalization = raw.get("normalization", {}) or {}
    if not isinstance(normalization, dict):
        raise SiteConfigError(f"{path}: 'normalization' must be an object")
    share = raw.get("share_local_model", False)
    if not isinstance(share, bool):
        raise SiteConfigError(f"{path}: 'share_local_model' must be true or false")
    data_root = _resolve(path.parent, str(raw["data_root"])).resolve()
    if not data_root.is_dir():
        raise SiteConfigError(f"{path}: data_root {data_root} is not a folder")
    return SiteConfig(
        path=path,
        modality=modality,
        data_root=data_root,
        datalist=_resolve(data_root, str(raw["datalist"])),
        labels=parsed_labels,
        site_name=raw.get("site_name"),
        normalization=dict(normalization),
        share_local_model=share,
        eval_labels=eval_labels,
    )


def _parse_labels(labels, key: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Organ name -> label ids of a ``labels``-style entry; errors name the file and the key."""
    if not isinstance(labels, dict) or not labels:
        raise SiteConfigError(f"{path}: '{key}' must map organ names to label ids, e.g. {{\"liver\": 6}}")
    parsed = {}
    for organ, ids in labels.items():
        ids = ids if isinstance(ids, list) else [ids]
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise SiteConfigError(f"{path}: {key}[{organ!r}] must be a positive integer id or a list of them")
        parsed[organ] = tuple(ids)
    return parsed


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate a site config JSON file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SiteConfigError(f"site config {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SiteConfigError(f"{path}: not valid JSON ({e})") from None
    return parse_site_config(raw, path)


def with_absolute_paths(path: str | Path) -> dict:
    """The config at ``path`` as a dict whose data_root and datalist are absolute.

    Used when a config is installed into a site's ``local/`` folder, away from its data.
    """
    cfg = load_site_config(path)
    raw = json.loads(Path(path).read_text())
    raw["data_root"] = str(cfg.data_root)
    raw["datalist"] = str(cfg.datalist)
    return raw
