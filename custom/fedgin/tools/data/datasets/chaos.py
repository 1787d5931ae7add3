"""CHAOS (ISBI 2019, healthy abdominal organs; MRI T1-DUAL / T2-SPIR and CT): DICOM + PNG to NIfTI.

Downloaded layout (``CHAOS_Train_Sets/Train_Sets/``)::

    MR/<id>/T2SPIR/DICOM_anon/IMG-0002-00001.dcm ...     MR/<id>/T2SPIR/Ground/IMG-0002-00001.png ...
    MR/<id>/T1DUAL/DICOM_anon/InPhase/*.dcm, OutPhase/*.dcm   MR/<id>/T1DUAL/Ground/*.png (shared by both)
    CT/<id>/DICOM_anon/i0000,0000b.dcm ...               CT/<id>/Ground/liver_GT_000.png ...

Masks are 8-bit gray PNGs, one per DICOM slice. The data description gives the value ranges
liver 63 (55-70), right kidney 126 (110-135), left kidney 189 (175-200), spleen 252 (240-255)
for MR; CT masks are liver only. The organisers' evaluation code pairs slices by file name order
("the orientation of the slices is determined by order of image names NOT by position tags"),
so the i-th PNG belongs to the i-th DICOM by name; the pairs are then stacked in the order of
their position along the slice normal so that the NIfTI affine is a true voxel->world map.

Each series is written as ``imagesTr/<site>_<id>.nii.gz`` + ``labelsTr/<site>_<id>.nii.gz`` (label
ids 1 liver, 2 right kidney, 3 left kidney, 4 spleen). Test sets have no masks and are ignored.
No DICOM tag other than geometry and intensity scaling is read into the outputs or messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from fedgin.tools.data.datasets.common import (
    DEFAULT_OPTIONS,
    Case,
    DatasetError,
    Options,
    make_splits,
    natural_key,
    require_dir,
    split_summary,
    task_labels,
    write_site,
)

logger = logging.getLogger(__name__)

NAME = "CHAOS"
LABEL_IDS = {"liver": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4}
# Gray-value ranges of the MR masks (CHAOS data description), inclusive.
MR_RANGES = {1: (55, 70), 2: (110, 135), 3: (175, 200), 4: (240, 255)}
# CT masks mark the liver only; any value from the liver range up is liver.
CT_LIVER_MIN = 55
SEQUENCES = {
    "t2spir": ("T2SPIR/DICOM_anon", "T2SPIR/Ground"),
    "t1dual_in": ("T1DUAL/DICOM_anon/InPhase", "T1DUAL/Ground"),
    "t1dual_out": ("T1DUAL/DICOM_anon/OutPhase", "T1DUAL/Ground"),
    "ct": ("DICOM_anon", "Ground"),
}


@dataclass
class Series:
    """One patient's series to convert: DICOM folder, mask folder, output case id."""

    case_id: str
    dicom_dir: Path
    ground_dir: Path


def _train_sets(src: Path) -> Path:
    for candidate in (src / "Train_Sets", src / "CHAOS_Train_Sets" / "Train_Sets", src):
        if (candidate / "MR").is_dir() or (candidate / "CT").is_dir():
            return candidate
    raise DatasetError(f"{src}: expected Train_Sets/MR or Train_Sets/CT (CHAOS_Train_Sets layout)")


def _float_list(ds, keyword: str, path: Path, n: int) -> np.ndarray:
    value = getattr(ds, keyword, None)
    if value is None or len(value) != n:
        raise DatasetError(f"{path}: DICOM tag {keyword} missing or malformed")
    return np.array([float(v) for v in value])


def read_dicom_series(files: list[Path]) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Pixel data (HU-scaled where the file says so), the LPS affine and the stacking order of ``files``.

    Args:
        files: the series' DICOM files.

    Returns:
        (slices in file order as (rows, cols) float arrays, 4x4 RAS affine for the slices stacked in
        ``order``, ``order``: file indices sorted by position along the slice normal).
    """
    try:
        import pydicom  # only CHAOS needs it
    except ImportError:
        raise DatasetError("reading CHAOS DICOM needs pydicom: pip install pydicom") from None

    positions, slices, orientation, spacing, shape = [], [], None, None, None
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as e:  # pydicom raises many types; the message must name the file, not the patient
            raise DatasetError(f"{path}: cannot read DICOM pixel data ({type(e).__name__})") from None
        iop = _float_list(ds, "ImageOrientationPatient", path, 6)
        ps = _float_list(ds, "PixelSpacing", path, 2)
        if orientation is None:
            orientation, spacing, shape = iop, ps, pixels.shape
        elif not np.allclose(iop, orientation, atol=1e-4) or not np.allclose(ps, spacing) or pixels.shape != shape:
            raise DatasetError(f"{path}: orientation, pixel spacing or size differs from the rest of the series")
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append(pixels * slope + intercept)
        positions.append(_float_list(ds, "ImagePositionPatient", path, 3))
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    order = sorted(range(len(files)), key=lambda i: float(positions[i] @ normal))
    first = positions[order[0]]
    if len(files) > 1:
        step = (positions[order[-1]] - first) / (len(files) - 1)
        gaps = np.diff([positions[i] @ normal for i in order])
        if np.any(gaps < 1e-3) or not np.allclose(gaps, gaps.mean(), rtol=0.05, atol=0.01):
            raise DatasetError(f"{files[0].parent}: slices are duplicated or unevenly spaced along the normal")
    else:
        step = normal * float(spacing[0])
    affine = np.eye(4)
    # NIfTI axis 0 runs along a DICOM row (column index), axis 1 down the rows: PixelSpacing is (row, column).
    affine[:3, 0] = row_dir * spacing[1]
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = first
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # DICOM is LPS, NIfTI RAS
    return slices, affine, order


def png_to_ids(gray: np.ndarray, ct: bool) -> np.ndarray:
    """CHAOS mask gray values -> our label ids (1 liver, 2 right kidney, 3 left kidney, 4 spleen)."""
    if ct:
        return (gray >= CT_LIVER_MIN).astype(np.uint8)
    ids = np.zeros(gray.shape, dtype=np.uint8)
    for label_id, (low, high) in MR_RANGES.items():
        ids[(gray >= low) & (gray <= high)] = label_id
    return ids


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img)
    return array[..., 0] if array.ndim == 3 else array  # some tools save gray masks as RGB


def convert_series(series: Series, image_path: Path, label_path: Path, ct: bool) -> None:
    """Write one DICOM series and its PNG masks as an image and a label NIfTI on the same grid."""
    dicoms = sorted(series.dicom_dir.glob("*.dcm"), key=lambda p: natural_key(p.name))
    pngs = sorted(series.ground_dir.glob("*.png"), key=lambda p: natural_key(p.name))
    if not dicoms:
        raise DatasetError(f"{series.dicom_dir}: no .dcm files")
    if len(pngs) != len(dicoms):
        raise DatasetError(
            f"{series.ground_dir}: {len(pngs)} PNG masks for {len(dicoms)} DICOM slices in {series.dicom_dir}"
        )
    slices, affine, order = read_dicom_series(dicoms)
    masks = []
    for png, pixels in zip(pngs, slices, strict=True):
        gray = _read_png(png)
        if gray.shape != pixels.shape:
            raise DatasetError(f"{png}: mask size {gray.shape} differs from its DICOM slice {pixels.shape}")
        masks.append(png_to_ids(gray, ct))
    # (rows, cols) slices -> NIfTI (cols, rows, slices)
    volume = np.stack([slices[i].T for i in order], axis=-1)
    label = np.stack([masks[i].T for i in order], axis=-1)
    integral = np.allclose(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767
    for path, array in ((image_path, volume.astype(np.int16 if integral else np.float32)), (label_path, label)):
        img = nib.Nifti1Image(array, affine)
        img.header.set_xyzt_units("mm")
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(path))


def convert(
    src: str | Path,
    out: str | Path,
    modality: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    site_name: str | None = None,
    sequence: str = "t2spir",
) -> dict[str, Path]:
    """Convert the CHAOS training set's MR (one sequence) or CT series into a NIfTI site.

    Args:
        src: ``CHAOS_Train_Sets`` (or its ``Train_Sets`` folder).
        out: output folder; the site goes to ``out/<site name>/`` with ``imagesTr/`` and ``labelsTr/``.
        modality: ``MR`` (default) or ``CT``.
        options: task, split and cap.
        site_name: default ``chaos-mr-<sequence>`` / ``chaos-ct``.
        sequence: MR sequence ``t2spir``, ``t1dual_in`` or ``t1dual_out`` (ignored for CT).

    Returns:
        site name -> site config path.
    """
    src, out = Path(src), Path(out)
    require_dir(src, "CHAOS dataset")
    mod = (modality or "MR").upper()
    if mod not in ("CT", "MR"):
        raise DatasetError(f"unknown modality {modality!r}; expected CT or MR")
    sequence = "ct" if mod == "CT" else sequence.lower()
    if sequence not in SEQUENCES:
        raise DatasetError(f"unknown CHAOS MR sequence {sequence!r}; expected t2spir, t1dual_in or t1dual_out")
    ids = {"liver": 1} if mod == "CT" else LABEL_IDS
    labels = task_labels(f"{NAME} {mod}", ids, options)
    root = require_dir(_train_sets(src) / mod, f"CHAOS {mod}")
    dicom_rel, ground_rel = SEQUENCES[sequence]
    series = []
    for patient in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        dicom_dir, ground_dir = patient / dicom_rel, patient / ground_rel
        if not dicom_dir.is_dir() or not ground_dir.is_dir():
            raise DatasetError(f"{patient}: expected {dicom_rel}/ and {ground_rel}/ (CHAOS layout)")
        series.append(Series(patient.name, dicom_dir, ground_dir))
    if not series:
        raise DatasetError(f"{root}: no patient folders")

    name = site_name or ("chaos-ct" if mod == "CT" else f"chaos-mr-{sequence.replace('_', '-')}")
    site_dir = out / name
    chosen = make_splits({"training": series}, options)
    splits: dict[str, list[Case]] = {}
    for split, items in chosen.items():
        splits[split] = []
        for s in items:
            case_id = f"{name}_{s.case_id}"
            image, label = site_dir / "imagesTr" / f"{case_id}.nii.gz", site_dir / "labelsTr" / f"{case_id}.nii.gz"
            convert_series(s, image, label, ct=mod == "CT")
            splits[split].append(Case(s.case_id, image, label))
    what = "CT" if mod == "CT" else f"MR {sequence}"
    return {
        name: write_site(
            site_dir,
            site_name=name,
            modality=mod,
            data_root=site_dir,
            splits=splits,
            labels=labels,
            description=f"{NAME} {what} converted from DICOM + PNG, {options.task}; {split_summary(splits)}",
        )
    }
