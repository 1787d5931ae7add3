"""``python -m fedgin predict``: label maps of new scans from a trained global model.

Inputs: one NIfTI file, a folder of them, a Decathlon datalist (its ``test`` entries, or a named
split) or a site config (its datalist; the modality comes from it). Outputs in ``--out``: one
``<name>_seg.nii.gz`` per input on the input's own grid and header (shape for shape), ``labels.json``
(label value -> organ), ``predictions.json`` (the model used and each file's organ volumes in mL)
and, with ``--preview``, ``<name>_preview.png`` (a few axial slices with the mask overlaid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from fedgin.seg.config import TrainConfig
from fedgin.seg.evaluation import load_weights
from fedgin.seg.prediction import Segmenter, organ_volumes_ml
from fedgin.seg.site_config import load_site_config, normalize_modality
from fedgin.tools.files import write_json
from fedgin.tools.trained_model.bundle_files.save_mask import write_mask

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MASK_SUFFIX = "_seg"


@dataclass
class Inputs:
    """The scans to segment and how to normalize them."""

    images: list[Path]
    modality: str
    normalization: dict = field(default_factory=dict)


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_inputs(path: str | Path, modality: str | None = None, split: str = "test") -> Inputs:
    """The images under ``path`` (a NIfTI file, a folder, a Decathlon datalist or a site config).

    Raises:
        ValueError: naming the path, when it holds no image, is not one of these, or no modality
            is known (``--modality`` is needed except for a site config).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    normalization: dict = {}
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if _is_nifti(p))
        if not images:
            raise ValueError(f"{path}: no NIfTI files (.nii, .nii.gz) in this folder")
    elif _is_nifti(path):
        images = [path]
    elif path.suffix == ".json":
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and "modality" in raw and "datalist" in raw:  # a site config
            site = load_site_config(path)
            modality = modality or site.modality
            normalization = dict(site.normalization or {})
            images = [Path(case["image"]) for case in site.cases(split)]
        else:
            images = _datalist_images(path, split)
        if not images:
            raise ValueError(f"{path}: its {split!r} list is empty")
    else:
        raise ValueError(f"{path}: not a NIfTI file (.nii, .nii.gz), a folder, a datalist or a site config")
    if modality is None:
        raise ValueError(
            f"{path}: give --modality CT or MR (the intensity normalization depends on it: a fixed HU window "
            "for CT, each scan's own percentiles for MR)"
        )
    _check_unique_names(images)
    return Inputs(images, normalize_modality(modality), normalization)


def _datalist_images(path: Path, split: str) -> list[Path]:
    try:
        entries = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split, base_dir=path.parent)
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path}: no {split!r} list in this datalist ({e})") from None
    return [Path(e["image"]) for e in entries]


def _check_unique_names(images: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for image in images:
        stem = _stem(image)
        if stem in seen:
            raise ValueError(f"{seen[stem]} and {image} would both be written as {stem}{MASK_SUFFIX}.nii.gz")
        seen[stem] = image


def model_kind(model_path: str | Path) -> str:
    """Which of FLARE's global models a file is: "best" (best on the sites' validation) or "final"."""
    return "best" if Path(model_path).name.startswith("best_") else "final"


def predict(
    model_path: str | Path,
    config: TrainConfig,
    inputs: Inputs,
    out_dir: str | Path,
    preview: bool = False,
    device: str | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """Segment every input; returns what ``predictions.json`` holds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        segmenter = Segmenter(config, load_weights(model_path), device=device, source=str(model_path))
    except ValueError as e:  # the model of another job, or of other training options
        raise ValueError(f"{model_path} does not fit this job's model (organs {config.organs}): {e}") from None
    labels = {str(value): name for value, name in segmenter.label_names.items()}
    write_json(out_dir / "labels.json", labels)
    files = []
    for i, image in enumerate(inputs.images):
        start = time.time()
        mask = segmenter.segment(image, inputs.modality, inputs.normalization)
        volumes = organ_volumes_ml(mask, segmenter.label_names)
        written = write_mask(mask, image, out_dir / f"{_stem(image)}{MASK_SUFFIX}.nii.gz")
        files.append({"image": str(image), "mask": str(written), "organ_volumes_ml": volumes})
        if preview:
            save_preview(image, mask, segmenter.label_names, out_dir / f"{_stem(image)}_preview.png")
        if echo:
            echo(f"[{i + 1}/{len(inputs.images)}] {image.name} -> {written.name} ({time.time() - start:.1f} s)")
    result = {
        "model": str(model_path),
        "model_kind": model_kind(model_path),
        "modality": inputs.modality,
        "labels": labels,
        "files": files,
    }
    write_json(out_dir / "predictions.json", result)
    return result


def volume_table(result: dict) -> str:
    """Organ volumes (mL) per file, as a Markdown table."""
    organs = [name for value, name in result["labels"].items() if value != "0"]
    lines = ["| file | " + " | ".join(organs) + " |", "|---|" + "---|" * len(organs)]
    for entry in result["files"]:
        volumes = entry["organ_volumes_ml"]
        lines.append(f"| {Path(entry['mask']).name} | " + " | ".join(f"{volumes[o]:.1f}" for o in organs) + " |")
    return "\n".join(lines) + "\n"


def save_preview(image_path: Path, mask, label_names: dict[int, str], out: Path, n_slices: int = 4) -> Path:
    """A PNG of ``n_slices`` axial slices across the mask's extent, with the mask overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import nibabel as nib

    image = np.asarray(nib.as_closest_canonical(nib.load(str(image_path))).dataobj, dtype=np.float32)
    labels = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(mask.numpy()[0], np.asarray(mask.affine))).dataobj)
    foreground = (labels > 0).sum(axis=(0, 1))
    # Slices spread over the masked range (the whole volume when the mask is empty).
    masked = np.flatnonzero(foreground) if foreground.any() else np.arange(labels.shape[2])
    order = np.unique(masked[np.linspace(0, len(masked) - 1, n_slices + 2).round().astype(int)[1:-1]])
    lo, hi = np.percentile(image, (0.5, 99.5))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(order), figsize=(3 * len(order), 3.4))
    for ax, z in zip(np.atleast_1d(axes), sorted(order), strict=True):
        # Radiological view: anterior up, the patient's right on the image's left.
        ax.imshow(_radiological(image[:, :, z]), cmap="gray", vmin=lo, vmax=hi)
        overlay = np.ma.masked_equal(_radiological(labels[:, :, z]), 0)
        ax.imshow(overlay % 10, cmap=cmap, vmin=0, vmax=9, alpha=0.45, interpolation="nearest")
        ax.set_title(f"slice {z}", fontsize=9)
        ax.axis("off")
    handles = [matplotlib.patches.Patch(color=cmap(v % 10), label=n) for v, n in label_names.items() if v > 0]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{image_path.name} (radiological view: patient's right on the left)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _radiological(axial: np.ndarray) -> np.ndarray:
    """An axial slice of a RAS array for display: rows anterior to posterior, columns right to left."""
    return np.fliplr(np.rot90(axial))
