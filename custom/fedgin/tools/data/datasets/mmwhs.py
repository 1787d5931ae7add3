"""MM-WHS 2017 (Multi-Modality Whole Heart Segmentation, CT and MRI): files referenced in place.

Downloaded layout::

    ct_train/ct_train_1001_image.nii.gz   ct_train/ct_train_1001_label.nii.gz   (1001-1020)
    mr_train/mr_train_1001_image.nii.gz   mr_train/mr_train_1001_label.nii.gz
    ct_test/, mr_test/                    images only: ignored

Label values: 205 myocardium, 420 left atrium, 500 left ventricle, 550 right atrium, 600 right
ventricle, 820 ascending aorta, 850 pulmonary artery. One MR training label carries stray 421
voxels (a known slip for 420), so 421 counts as left atrium. No official validation/test
labels: the split is drawn, seeded.
"""

from __future__ import annotations

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

NAME = "MM-WHS"
SUBSTRUCTURE_IDS = {
    "lv_blood": [500],
    "rv_blood": [600],
    "la_blood": [420, 421],
    "ra_blood": [550],
    "myocardium": [205],
    "ascending_aorta": [820],
    "pulmonary_artery": [850],
}
LABEL_IDS = {**SUBSTRUCTURE_IDS, "heart": sorted(i for ids in SUBSTRUCTURE_IDS.values() for i in ids)}
FOLDERS = {"CT": "ct_train", "MR": "mr_train"}


def _cases(folder: Path, prefix: str) -> list[Case]:
    pattern = re.compile(rf"^{prefix}_(\d+)_image\.nii(\.gz)?$")
    cases = []
    for image in sorted(folder.iterdir()):
        m = pattern.match(image.name)
        if not m:
            continue
        label = folder / image.name.replace("_image.", "_label.")
        if not label.is_file():
            raise DatasetError(f"{image}: its label {label.name} is missing in {folder}")
        cases.append(Case(m.group(1), image, label))
    return cases


def convert(
    src: str | Path,
    out: str | Path,
    modality: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    site_name: str | None = None,
) -> dict[str, Path]:
    """Write an MM-WHS CT site and/or MR site (heart task only).

    Args:
        src: the folder holding ``ct_train/`` and/or ``mr_train/``.
        out: output folder; each site goes to ``out/<site name>/``.
        modality: ``CT``, ``MR``, or None for each training folder present.
        options: ``task="heart"``; ``classes`` ``whole`` (one heart class merging the 7 values) or
            ``substructures`` (7 classes).
        site_name: name of the site (only with one modality); default ``mmwhs-ct`` / ``mmwhs-mr``.

    Returns:
        site name -> site config path.
    """
    src, out = Path(src), Path(out)
    require_dir(src, "MM-WHS dataset")
    labels = task_labels(NAME, LABEL_IDS, options)
    if modality:
        mod = modality.upper()
        if mod not in FOLDERS:
            raise DatasetError(f"unknown modality {modality!r}; expected CT or MR")
        modalities = [mod]
        require_dir(src / FOLDERS[mod], f"MM-WHS {mod} training ({FOLDERS[mod]})")
    else:
        modalities = [m for m, folder in FOLDERS.items() if (src / folder).is_dir()]
        if not modalities:
            raise DatasetError(f"{src}: expected a ct_train/ or mr_train/ folder (MM-WHS layout)")
    if site_name and len(modalities) > 1:
        raise DatasetError("--site-name needs --modality (one call writes a CT and an MR site otherwise)")
    written = {}
    for mod in modalities:
        folder = src / FOLDERS[mod]
        cases = _cases(folder, FOLDERS[mod])
        if not cases:
            raise DatasetError(f"{folder}: no {FOLDERS[mod]}_XXXX_image.nii.gz files")
        splits = make_splits({"training": cases}, options)
        splits = {s: drop_mismatched(c) for s, c in splits.items()}
        name = site_name or f"mmwhs-{mod.lower()}"
        written[name] = write_site(
            out / name,
            site_name=name,
            modality=mod,
            data_root=src,
            splits=splits,
            labels=labels,
            description=f"{NAME} {mod}, heart ({options.classes}); {split_summary(splits)}",
        )
    return written
