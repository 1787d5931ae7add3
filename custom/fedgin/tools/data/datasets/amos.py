"""AMOS22 (CT and MRI): datalists and site configs referencing the NIfTI files in place.

Downloaded layout (``amos22/``)::

    dataset.json                     labels {"1": "spleen", ...}, training/validation/test lists
    imagesTr/amos_0001.nii.gz        labelsTr/amos_0001.nii.gz
    imagesVa/amos_0008.nii.gz        labelsVa/amos_0008.nii.gz
    imagesTs/amos_0002.nii.gz        (labelsTs/ only in releases that publish test labels)

Case ids up to 500 are CT, above 500 MRI; both modalities share the folders, so one call can
make a CT site and an MR site. The labelled Va split becomes validation; test is labelsTs when
present, otherwise drawn (seeded) from the training cases. Unlabelled images are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from fedgin.tools.data.datasets.common import (
    DEFAULT_OPTIONS,
    Case,
    DatasetError,
    Options,
    drop_mismatched,
    make_splits,
    require_dir,
    split_summary,
    task_labels,
    write_site,
)

logger = logging.getLogger(__name__)

NAME = "AMOS22"
# dataset.json's 15 foreground classes; ids are the same for CT and MRI.
LABEL_IDS = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "pancreas": 10,
    "adrenal_gland_right": 11,
    "adrenal_gland_left": 12,
    "duodenum": 13,
    "urinary_bladder": 14,
    "prostate_uterus": 15,
}
# Words dataset.json uses for our organs (it spells "gall bladder"), to catch a relabelled release.
NAME_WORDS = {
    "spleen": ("spleen",),
    "kidney_right": ("right", "kidney"),
    "kidney_left": ("left", "kidney"),
    "gallbladder": ("gall",),
    "liver": ("liver",),
    "pancreas": ("pancreas",),
}
CT_MAX_ID = 500
FOLDERS = {
    "training": ("imagesTr", "labelsTr"),
    "validation": ("imagesVa", "labelsVa"),
    "test": ("imagesTs", "labelsTs"),
}
CASE_RE = re.compile(r"^amos_(\d+)\.nii(\.gz)?$")


def case_modality(case_id: str) -> str:
    """``CT`` for AMOS ids up to 500, ``MR`` above."""
    return "CT" if int(case_id) <= CT_MAX_ID else "MR"


def _check_dataset_json(src: Path) -> None:
    path = src / "dataset.json"
    if not path.is_file():
        return
    try:
        names = json.loads(path.read_text()).get("labels", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise DatasetError(f"{path}: not a valid dataset.json ({e})") from None
    for organ, words in NAME_WORDS.items():
        name = str(names.get(str(LABEL_IDS[organ]), "")).lower()
        if name and not all(w in name for w in words):
            raise DatasetError(
                f"{path}: label {LABEL_IDS[organ]} is {name!r}, expected {organ}; this is not the AMOS22 label set"
            )


def _pairs(src: Path, images_dir: str, labels_dir: str) -> list[Case]:
    images, labels = src / images_dir, src / labels_dir
    if not images.is_dir() or not labels.is_dir():
        return []
    cases = []
    for image in sorted(images.iterdir()):
        m = CASE_RE.match(image.name)
        if not m:
            continue
        label = labels / image.name
        if label.is_file():
            cases.append(Case(m.group(1), image, label))
        else:
            logger.warning("%s has no label %s: skipped", image, label)
    return cases


def convert(
    src: str | Path,
    out: str | Path,
    modality: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    site_name: str | None = None,
) -> dict[str, Path]:
    """Write an AMOS22 CT site and/or MR site.

    Args:
        src: the AMOS22 folder (with ``imagesTr/``, ``labelsTr/``, ...).
        out: output folder; each site goes to ``out/<site name>/``.
        modality: ``CT``, ``MR``, or None for every modality present.
        options: task, split and cap.
        site_name: name of the site (only with one modality); default ``amos-ct`` / ``amos-mr``.

    Returns:
        site name -> site config path.
    """
    src, out = Path(src), Path(out)
    require_dir(src, "AMOS22 dataset")
    require_dir(src / "imagesTr", "AMOS22 imagesTr")
    require_dir(src / "labelsTr", "AMOS22 labelsTr")
    _check_dataset_json(src)
    labels = task_labels(NAME, LABEL_IDS, options)
    pools = {split: _pairs(src, *dirs) for split, dirs in FOLDERS.items()}
    if not pools["training"]:
        raise DatasetError(f"{src / 'imagesTr'}: no amos_XXXX.nii.gz image with a label in labelsTr")
    modalities = [modality.upper()] if modality else ["CT", "MR"]
    if site_name and len(modalities) > 1:
        raise DatasetError("--site-name needs --modality (one call writes a CT and an MR site otherwise)")
    written = {}
    for mod in modalities:
        mod_pools = {s: [c for c in cases if case_modality(c.case_id) == mod] for s, cases in pools.items()}
        mod_pools = {s: cases for s, cases in mod_pools.items() if cases}
        if "training" not in mod_pools:
            if modality:
                raise DatasetError(f"{src / 'imagesTr'}: no labelled {mod} case (CT ids <= {CT_MAX_ID}, MR above)")
            continue
        splits = make_splits(mod_pools, options)
        splits = {s: drop_mismatched(cases) for s, cases in splits.items()}
        name = site_name or f"amos-{mod.lower()}"
        written[name] = write_site(
            out / name,
            site_name=name,
            modality=mod,
            data_root=src,
            splits=splits,
            labels=labels,
            description=f"{NAME} {mod}, {options.task}; {split_summary(splits)}",
        )
    return written
