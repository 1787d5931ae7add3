"""BTCV / Synapse multi-organ CT (MICCAI 2015 Beyond the Cranial Vault): files referenced in place.

Two downloaded layouts are read:

* Synapse ``RawData.zip``: ``RawData/Training/img/img0001.nii.gz`` + ``RawData/Training/label/label0001.nii.gz``
  (``RawData/Testing/img`` has no labels and is ignored). No official split: drawn, seeded.
* MONAI / Decathlon style: ``imagesTr/img0001.nii.gz``, ``labelsTr/label0001.nii.gz`` and
  ``dataset_0.json`` whose ``training`` and ``validation`` lists are kept (its ``test`` list is
  unlabelled); the test split is drawn, seeded, from ``training``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fedgin.tools.data.datasets.common import (
    DEFAULT_OPTIONS,
    Case,
    DatasetError,
    Options,
    drop_mismatched,
    make_splits,
    nifti_stem,
    require_dir,
    split_summary,
    task_labels,
    write_site,
)

NAME = "BTCV"
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
    "portal_splenic_vein": 10,
    "pancreas": 11,
    "adrenal_gland_right": 12,
    "adrenal_gland_left": 13,
}
DATALIST_JSON = "dataset_0.json"
IMAGE_RE = re.compile(r"^img(\d+)\.nii(\.gz)?$")


def _raw_training_dir(src: Path) -> Path | None:
    for candidate in (src / "RawData" / "Training", src / "Training", src):
        if (candidate / "img").is_dir() and (candidate / "label").is_dir():
            return candidate
    return None


def _raw_pools(training: Path) -> dict[str, list[Case]]:
    cases = []
    for image in sorted((training / "img").iterdir()):
        m = IMAGE_RE.match(image.name)
        if not m:
            continue
        label = training / "label" / image.name.replace("img", "label", 1)
        if not label.is_file():
            raise DatasetError(f"{image}: its label {label} is missing")
        cases.append(Case(m.group(1), image, label))
    if not cases:
        raise DatasetError(f"{training / 'img'}: no imgXXXX.nii.gz files")
    return {"training": cases}


def _json_pools(src: Path, path: Path) -> dict[str, list[Case]]:
    try:
        datalist = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    pools = {}
    for split in ("training", "validation"):
        cases = []
        for i, entry in enumerate(datalist.get(split, [])):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DatasetError(f"{path}: {split}[{i}] needs 'image' and 'label'")
            image, label = src / entry["image"], src / entry["label"]
            for p in (image, label):
                if not p.is_file():
                    raise DatasetError(f"{path}: {split}[{i}] file {p} does not exist")
            cases.append(Case(nifti_stem(image), image, label))
        if cases:
            pools[split] = cases
    if "training" not in pools:
        raise DatasetError(f"{path}: the 'training' list is empty")
    return pools


def convert(
    src: str | Path,
    out: str | Path,
    modality: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    site_name: str | None = None,
) -> dict[str, Path]:
    """Write a BTCV CT site.

    Args:
        src: the folder holding ``RawData/`` (or ``Training/``), or the MONAI layout with ``dataset_0.json``.
        out: output folder; the site goes to ``out/<site name>/``.
        modality: only ``CT`` (BTCV is CT).
        options: task, split and cap.
        site_name: default ``btcv-ct``.

    Returns:
        site name -> site config path.
    """
    src, out = Path(src), Path(out)
    require_dir(src, "BTCV dataset")
    if modality and modality.upper() != "CT":
        raise DatasetError(f"BTCV is CT only, got --modality {modality}")
    labels = task_labels(NAME, LABEL_IDS, options)
    training = _raw_training_dir(src)
    if training is not None:
        pools, layout = _raw_pools(training), "RawData"
    elif (src / DATALIST_JSON).is_file():
        pools, layout = _json_pools(src, src / DATALIST_JSON), DATALIST_JSON
    else:
        raise DatasetError(
            f"{src}: expected RawData/Training/img + RawData/Training/label (Synapse download) or {DATALIST_JSON} "
            "with imagesTr/ + labelsTr/ (MONAI layout)"
        )
    splits = make_splits(pools, options)
    splits = {s: drop_mismatched(cases) for s, cases in splits.items()}
    name = site_name or "btcv-ct"
    return {
        name: write_site(
            out / name,
            site_name=name,
            modality="CT",
            data_root=src,
            splits=splits,
            labels=labels,
            description=f"{NAME} CT ({layout}), {options.task}; {split_summary(splits)}",
        )
    }
