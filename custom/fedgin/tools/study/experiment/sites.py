"""Site configs of one grid setting: the sites' training lists cut to an MRI:CT ratio, optional
partial labels; evaluation always on every site's full test split with all its labels.

Nothing is copied: a setting's site config points at the original data with a new datalist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgin.seg.site_config import load_site_config
from fedgin.tools.files import write_json
from fedgin.tools.study.experiment.grid import setting_ratio

DATA_SEED = 0  # which cases a ratio keeps; fixed across training seeds so only training varies


@dataclass
class SettingSites:
    """Site configs of one setting."""

    train: dict[str, Path]  # site name -> config used for training (ratio-cut, maybe partial labels)
    evaluate: dict[str, Path]  # site name -> original config (full test split, all labels)
    modality: dict[str, str]  # site name -> "CT" / "MR"
    n_train: dict[str, int]  # training cases per training site

    def by_modality(self, modality: str) -> list[str]:
        return [name for name, m in self.modality.items() if m == modality]


def _case_counts(counts: Mapping[str, int], modality: Mapping[str, str], k: int | None) -> dict[str, int]:
    """Training cases kept per site so that MRI:CT is 1:k overall (CT is cut when MRI is short)."""
    ct = sum(n for s, n in counts.items() if modality[s] == "CT")
    mr = sum(n for s, n in counts.items() if modality[s] == "MR")
    if k is None:
        return {s: (n if modality[s] == "CT" else 0) for s, n in counts.items()}
    target_mr = ct / k
    mr_fraction = min(1.0, target_mr / mr) if mr else 0.0
    ct_fraction = min(1.0, mr * k / ct) if ct else 0.0
    kept = {}
    for site, n in counts.items():
        fraction = ct_fraction if modality[site] == "CT" else mr_fraction
        kept[site] = max(1, math.floor(n * fraction + 1e-9)) if n else 0
    return kept


def prepare_setting(
    setting: str,
    base_sites: Mapping[str, str | Path],
    out_dir: str | Path,
    partial_organs: tuple[str, ...] = (),
) -> SettingSites:
    """Write the training site configs of ``setting`` under ``out_dir``.

    Args:
        setting: a setting name from :class:`fedgin.tools.study.experiment.grid.ExperimentConfig`.
        base_sites: site name -> site config with all the site's data and labels.
        out_dir: where the setting's datalists and configs go.
        partial_organs: organs removed from the MRI sites' labels when ``setting`` is a partial one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = {name: load_site_config(path) for name, path in base_sites.items()}
    modality = {name: cfg.modality for name, cfg in configs.items()}
    if not any(m == "CT" for m in modality.values()) or not any(m == "MR" for m in modality.values()):
        raise ValueError(f"the grid needs at least one CT and one MR site; got {modality}")
    counts = {name: len(cfg.cases("training")) for name, cfg in configs.items()}
    kept = _case_counts(counts, modality, setting_ratio(setting))
    partial = setting.startswith("partial")
    train = {}
    for name, cfg in configs.items():
        if kept[name] == 0:
            continue
        datalist = json.loads(cfg.datalist.read_text())
        order = np.random.default_rng(DATA_SEED).permutation(len(datalist["training"]))
        datalist["training"] = [datalist["training"][i] for i in sorted(order[: kept[name]])]
        raw = json.loads(Path(cfg.path).read_text())
        raw["data_root"] = str(cfg.data_root)
        raw["datalist"] = str((out / f"{name}_datalist.json").resolve())
        if partial and cfg.modality == "MR":
            raw["labels"] = {o: ids for o, ids in raw["labels"].items() if o not in partial_organs}
        write_json(out / f"{name}_datalist.json", datalist)
        write_json(out / f"{name}.json", raw)
        train[name] = out / f"{name}.json"
    return SettingSites(
        train=train,
        evaluate={name: Path(p) for name, p in base_sites.items()},
        modality=modality,
        n_train={name: kept[name] for name in train},
    )
