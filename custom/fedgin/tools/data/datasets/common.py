"""Shared pieces of the dataset converters: errors, options, seeded splits, label maps, writing a site.

Every converter turns a public dataset in its downloaded layout into, per site,
``<out>/<site>/datalist.json`` (Decathlon style) and ``<out>/<site>/site_config.json`` (see
:mod:`fedgin.seg.site_config`). Images stay where they are unless their format must change.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np

from fedgin.seg.site_config import SPLITS, load_site_config
from fedgin.tools.files import write_json

logger = logging.getLogger(__name__)

ABDOMEN_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas", "gallbladder")
HEART_SUBSTRUCTURES = (
    "lv_blood",
    "rv_blood",
    "la_blood",
    "ra_blood",
    "myocardium",
    "ascending_aorta",
    "pulmonary_artery",
)
TASKS = ("abdomen", "heart")
CLASS_MODES = ("whole", "substructures")
# The training pipeline rejects image/label pairs whose affines differ by more than this (site_data).
AFFINE_TOLERANCE = 1e-3

T = TypeVar("T")


class DatasetError(ValueError):
    """The dataset's layout is not what the converter expects; the message names the folder or file."""


@dataclass(frozen=True)
class Options:
    """Choices shared by all converters.

    Attributes:
        task: ``abdomen`` (liver, spleen, kidneys, pancreas, gallbladder) or ``heart``.
        classes: for the heart task, ``whole`` (one heart class) or ``substructures`` (MM-WHS only).
        val: validation share of the labelled cases when the dataset has no validation split of its
            own: a fraction (< 1) or a number of cases (>= 1).
        test: the same for the test split.
        seed: seed of the split draw and of the ``max_cases`` choice.
        max_cases: at most this many cases per split (None: all).
    """

    task: str = "abdomen"
    classes: str = "whole"
    val: float = 0.1
    test: float = 0.2
    seed: int = 0
    max_cases: int | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise DatasetError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.classes not in CLASS_MODES:
            raise DatasetError(f"unknown classes {self.classes!r}; expected one of {CLASS_MODES}")
        if self.val < 0 or self.test < 0:
            raise DatasetError("--val and --test must be >= 0")
        if self.max_cases is not None and self.max_cases < 1:
            raise DatasetError("--max-cases must be >= 1")


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class Case:
    """One labelled case: absolute image and label paths."""

    case_id: str
    image: Path
    label: Path


def natural_key(text: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (file names in these datasets are not zero-padded)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a DatasetError saying what was expected there."""
    if not path.is_dir():
        raise DatasetError(f"{path}: expected the {what} folder here, but it does not exist")
    return path


def nifti_stem(path: Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _count(value: float, n: int) -> int:
    if value >= 1:
        return int(value)
    count = round(value * n)
    # A non-zero fraction of a small dataset still gets one case, as long as training keeps some.
    return max(count, 1) if value > 0 and n >= 3 else count


def make_splits(pools: Mapping[str, Sequence[T]], options: Options) -> dict[str, list[T]]:
    """Training/validation/test lists from the dataset's own labelled splits, drawing the missing ones.

    Splits the dataset provides (keys of ``pools``) are kept as they are; a missing validation or
    test split is drawn, seeded, from the training pool. ``options.max_cases`` then keeps at most
    that many cases per split (a seeded choice, so a smaller cap gives a subset of a larger one).

    Args:
        pools: split name -> items with a ``case_id`` attribute; ``"training"`` is required.
        options: split fractions/counts, seed and cap.

    Returns:
        Every split name of :data:`fedgin.seg.site_config.SPLITS` -> items sorted by case id.
    """
    rng = np.random.default_rng(options.seed)
    training = sorted(pools.get("training", []), key=lambda c: natural_key(c.case_id))
    order = [training[i] for i in rng.permutation(len(training))]
    splits: dict[str, list[T]] = {}
    n = len(order)
    for split, share in (("test", options.test), ("validation", options.val)):
        if split in pools:
            splits[split] = sorted(pools[split], key=lambda c: natural_key(c.case_id))
            continue
        k = min(_count(share, n), len(order))
        splits[split], order = order[:k], order[k:]
    splits["training"] = order
    if not splits["training"]:
        raise DatasetError(
            f"no training cases left: {n} labelled cases, {len(splits['validation'])} for validation and "
            f"{len(splits['test'])} for test; lower --val/--test"
        )
    if options.max_cases is not None:
        for split in SPLITS:
            # one permutation per split whatever the cap, so a smaller cap keeps a subset of a larger one
            keep = sorted(rng.permutation(len(splits[split]))[: options.max_cases])
            splits[split] = [splits[split][i] for i in keep]
    return {s: sorted(splits[s], key=lambda c: natural_key(c.case_id)) for s in SPLITS}


def task_labels(dataset: str, ids: Mapping[str, int | Sequence[int]], options: Options) -> dict[str, list[int]]:
    """The site config's ``labels`` for the chosen task: the organs this dataset has, never invented ones.

    Args:
        dataset: dataset name for error messages.
        ids: our organ / structure name -> the dataset's label id(s); ``heart`` for whole heart.
        options: task and class mode.
    """
    as_list = {k: [v] if isinstance(v, int) else list(v) for k, v in ids.items()}
    if options.task == "abdomen":
        names = ABDOMEN_ORGANS
    elif options.classes == "whole":
        names = ("heart",)
    else:
        names = HEART_SUBSTRUCTURES
    labels = {name: as_list[name] for name in names if name in as_list}
    if not labels:
        what = options.task if options.task == "abdomen" else f"heart ({options.classes})"
        raise DatasetError(f"{dataset} has no {what} labels; it has: {', '.join(sorted(as_list))}")
    return labels


def check_pair(image: Path, label: Path) -> str | None:
    """Why ``image`` and ``label`` cannot be trained on together (grids differ), or None; reads headers only."""
    try:
        img, lab = nib.load(str(image)), nib.load(str(label))
    except Exception as e:  # nibabel raises several types for damaged files
        return f"cannot read header ({e})"
    if img.shape[:3] != lab.shape[:3]:
        return f"image shape {img.shape} and label shape {lab.shape} differ"
    if not np.allclose(img.affine, lab.affine, atol=AFFINE_TOLERANCE):
        return "image and label affines differ"
    return None


def drop_mismatched(cases: Sequence[Case]) -> list[Case]:
    """``cases`` without the pairs the pipeline would reject; each dropped pair is logged with the reason."""
    kept = []
    for case in cases:
        problem = check_pair(case.image, case.label)
        if problem is None:
            kept.append(case)
        else:
            logger.warning("skipping %s: %s (%s, %s)", case.case_id, problem, case.image, case.label)
    return kept


def save_label(array: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """Write a uint8 label map on ``reference``'s grid (its affine and header, without intensity scaling)."""
    if array.shape != reference.shape[:3]:
        raise DatasetError(f"{path}: label shape {array.shape} differs from the image shape {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(array.astype(np.uint8), reference.affine, header)
    image.header.set_slope_inter(1, 0)  # the image's HU scaling must not apply to label ids
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _absolute(path: Path) -> Path:
    # absolute but not resolved: a symlinked case stays inside the data_root it was linked into
    return Path(os.path.normpath(Path(path).absolute()))


def _entry_path(path: Path, data_root: Path) -> str:
    path = _absolute(path)
    return path.relative_to(data_root).as_posix() if path.is_relative_to(data_root) else str(path)


def write_site(
    site_dir: Path,
    *,
    site_name: str,
    modality: str,
    data_root: Path,
    splits: Mapping[str, Sequence[Case]],
    labels: Mapping[str, Sequence[int]],
    description: str,
) -> Path:
    """Write ``datalist.json`` and ``site_config.json`` into ``site_dir`` and check that the config loads.

    Paths inside ``data_root`` are written relative to it, others absolute; ``data_root`` itself is
    absolute, so the config can be copied into a site's FLARE ``local/`` folder as it is.

    Returns:
        The site config's path.
    """
    site_dir = _absolute(site_dir)
    data_root = _absolute(data_root)
    site_dir.mkdir(parents=True, exist_ok=True)
    datalist = {
        split: [
            {"image": _entry_path(c.image, data_root), "label": _entry_path(c.label, data_root)}
            for c in splits.get(split, [])
        ]
        for split in SPLITS
    }
    datalist_path = site_dir / "datalist.json"
    write_json(datalist_path, datalist, indent=1)  # long lists: one entry per line pair
    config = {
        "site_name": site_name,
        "modality": modality,
        "data_root": str(data_root),
        "datalist": _entry_path(datalist_path, data_root),
        "labels": {k: v[0] if len(v) == 1 else list(v) for k, v in labels.items()},
        "description": description,
    }
    config_path = site_dir / "site_config.json"
    write_json(config_path, config)
    load_site_config(config_path).cases("training")  # fails now, naming the file, rather than at training time
    return config_path


def split_summary(splits: Mapping[str, Sequence]) -> str:
    """``"12 training, 2 validation, 4 test"``."""
    return ", ".join(f"{len(splits.get(s, []))} {s}" for s in SPLITS)
