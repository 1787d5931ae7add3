"""TotalSegmentator (CT v2 and MRI releases): merge the per-structure masks into one label map per subject.

Downloaded layout (``Totalsegmentator_dataset_v201/`` or the MRI release)::

    meta.csv                          ";"-separated, columns image_id, ..., split (train / val / test)
    s0000/ct.nii.gz                   (mri.nii.gz in the MRI release)
    s0000/segmentations/liver.nii.gz  one binary mask per structure, on the image's grid
    s0000/segmentations/spleen.nii.gz ...

The masks of the task's organs are merged into ``<out>/<site>/labels/<subject>.nii.gz`` (uint8,
the image's affine and header) with TotalSegmentator's own multi-label ids (``total`` /
``total_mr`` class maps), so a subject may instead carry a ready multi-label file
``s0000/segmentations.nii.gz`` (what ``TotalSegmentator --ml`` writes), which is used in place.
Images are never copied. Without meta.csv the split is drawn (seeded).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from fedgin.tools.data.datasets.common import (
    DEFAULT_OPTIONS,
    Case,
    DatasetError,
    Options,
    drop_mismatched,
    make_splits,
    require_dir,
    save_label,
    split_summary,
    task_labels,
    write_site,
)

logger = logging.getLogger(__name__)

NAME = "TotalSegmentator"
IMAGE_FILES = {"CT": "ct.nii.gz", "MR": "mri.nii.gz"}
MASK_DIR = "segmentations"
MULTILABEL_FILE = "segmentations.nii.gz"
# Multi-label ids of TotalSegmentator v2 (class maps "total" for CT, "total_mr" for MRI); v1's differ
# (pancreas was 10 there), so only v2-style multi-label files are accepted as ready label maps.
LABEL_IDS = {
    "CT": {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "pancreas": 7, "heart": 51},
    "MR": {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "pancreas": 7, "heart": 22},
}
# Mask files are named after our organs; the v1 CT release split the heart into chambers (merged here).
HEART_V1_PARTS = (
    "heart_myocardium",
    "heart_atrium_left",
    "heart_ventricle_left",
    "heart_atrium_right",
    "heart_ventricle_right",
)
META_SPLITS = {"train": "training", "val": "validation", "test": "test"}
SUBJECT_RE = re.compile(r"^s\d+$")


def _read_meta(path: Path) -> dict[str, str]:
    """subject id -> our split name, from meta.csv (``;``-separated in the releases, ``,`` accepted)."""
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text else ""
    rows = list(csv.DictReader(text.splitlines(), delimiter=";" if ";" in first else ","))
    if not rows or "image_id" not in rows[0] or "split" not in rows[0]:
        raise DatasetError(f"{path}: expected columns 'image_id' and 'split', found {first!r}")
    splits = {}
    for row in rows:
        split = META_SPLITS.get((row["split"] or "").strip().lower())
        if split is None:
            raise DatasetError(f"{path}: subject {row['image_id']} has split {row['split']!r}; expected train/val/test")
        splits[row["image_id"].strip()] = split
    return splits


def _detect_modality(subjects: list[Path], src: Path) -> str:
    found = {m for m, f in IMAGE_FILES.items() for s in subjects if (s / f).is_file()}
    if len(found) != 1:
        what = "both ct.nii.gz and mri.nii.gz" if found else "neither ct.nii.gz nor mri.nii.gz"
        raise DatasetError(f"{src}: subject folders hold {what}; pass --modality CT or MR")
    return found.pop()


def _mask_paths(subject: Path, organ: str) -> list[Path]:
    masks = subject / MASK_DIR
    if organ == "heart":
        if (masks / "heart.nii.gz").is_file():
            return [masks / "heart.nii.gz"]
        parts = [masks / f"{p}.nii.gz" for p in HEART_V1_PARTS]
        if all(p.is_file() for p in parts):
            return parts
        return [masks / "heart.nii.gz"]
    return [masks / f"{organ}.nii.gz"]


def merge_masks(subject: Path, image_file: str, labels: dict[str, list[int]], out_path: Path) -> Path:
    """Merge a subject's binary masks of ``labels``' organs into one uint8 label map at ``out_path``."""
    reference = nib.load(str(subject / image_file))
    merged = np.zeros(reference.shape[:3], dtype=np.uint8)
    for organ, ids in labels.items():
        for mask_path in _mask_paths(subject, organ):
            if not mask_path.is_file():
                raise DatasetError(f"{mask_path}: mask of {organ} missing (the release has one file per structure)")
            mask = nib.load(str(mask_path))
            if mask.shape[:3] != merged.shape or not np.allclose(mask.affine, reference.affine, atol=1e-3):
                raise DatasetError(f"{mask_path}: not on the grid of {subject / image_file}")
            # Structures do not overlap in TotalSegmentator; if they ever did, the later organ wins.
            merged[np.asarray(mask.dataobj) > 0] = ids[0]
    return save_label(merged, reference, out_path)


def convert(
    src: str | Path,
    out: str | Path,
    modality: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    site_name: str | None = None,
) -> dict[str, Path]:
    """Write a TotalSegmentator site (CT or MRI release).

    Args:
        src: the release folder holding ``s0000/``-style subject folders (and ``meta.csv``).
        out: output folder; the site goes to ``out/<site name>/`` with merged maps in ``labels/``.
        modality: ``CT`` or ``MR``; None detects it from the image file names.
        options: task, split and cap.
        site_name: default ``totalsegmentator-ct`` / ``totalsegmentator-mr``.

    Returns:
        site name -> site config path.
    """
    src, out = Path(src), Path(out)
    require_dir(src, "TotalSegmentator dataset")
    subjects = sorted(p for p in src.iterdir() if p.is_dir() and SUBJECT_RE.match(p.name))
    if not subjects:
        raise DatasetError(f"{src}: no subject folders (s0000, s0001, ...) found")
    modality = modality.upper() if modality else _detect_modality(subjects, src)
    if modality not in IMAGE_FILES:
        raise DatasetError(f"unknown modality {modality!r}; expected CT or MR")
    image_file = IMAGE_FILES[modality]
    labels = task_labels(f"{NAME} {modality}", LABEL_IDS[modality], options)
    meta = _read_meta(src / "meta.csv") if (src / "meta.csv").is_file() else None

    name = site_name or f"totalsegmentator-{modality.lower()}"
    site_dir = out / name
    pools: dict[str, list[Case]] = {}
    for subject in subjects:
        image = subject / image_file
        if not image.is_file():
            logger.warning("%s: no %s, skipped", subject, image_file)
            continue
        if (subject / MASK_DIR).is_dir():
            label = site_dir / "labels" / f"{subject.name}.nii.gz"  # written below, for the chosen cases only
        elif (subject / MULTILABEL_FILE).is_file():
            label = subject / MULTILABEL_FILE
        else:
            raise DatasetError(f"{subject}: neither a {MASK_DIR}/ folder nor a {MULTILABEL_FILE} label map")
        split = "training" if meta is None else meta.get(subject.name)
        if split is None:
            logger.warning("%s is not in meta.csv, skipped", subject)
            continue
        pools.setdefault(split, []).append(Case(subject.name, image, label))
    if "training" not in pools:
        raise DatasetError(f"{src}: no subject with an {image_file} in the training split")

    splits = make_splits(pools, options)
    for cases in splits.values():
        for case in cases:
            if case.label.parent == site_dir / "labels":
                merge_masks(case.image.parent, image_file, labels, case.label)
    splits = {s: drop_mismatched(cases) for s, cases in splits.items()}
    source = "meta.csv splits" if meta else "seeded split"
    return {
        name: write_site(
            site_dir,
            site_name=name,
            modality=modality,
            data_root=site_dir,
            splits=splits,
            labels=labels,
            description=f"{NAME} {modality} ({source}), {options.task}; {split_summary(splits)}",
        )
    }
