"""``python -m fedgin export``: a trained global model as a MONAI bundle that runs without fedgin.

Layout (MONAI's bundle format, as the model zoo's ``spleen_ct_segmentation``)::

    OUT/configs/metadata.json    what the model segments, for which modality, how it was trained
    OUT/configs/inference.json   MONAI transforms, MONAI's UNet, SliceInferer, SupervisedEvaluator
    OUT/models/model.pt          the network's state dict
    OUT/scripts/restore.py       the one step MONAI has no transform for (logits -> the scan's grid)
    OUT/scripts/save_mask.py     masks with their scan's exact shape and header (nibabel)
    OUT/docs/README.md           how to run it

Run with ``python -m monai.bundle run --config_file OUT/configs/inference.json --bundle_root OUT
--input_dir SCANS --output_dir MASKS``. Its preprocessing is fedgin's own (RAS, the modality's
normalization, resize), written as MONAI transforms, so the masks equal ``predict``'s (tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fedgin.seg.config import TrainConfig
from fedgin.seg.data.geometry import BODY_MARGIN, BODY_THRESHOLD
from fedgin.seg.data.normalization import CTNormalization, normalization_for
from fedgin.seg.evaluation import load_weights
from fedgin.seg.prediction import Segmenter
from fedgin.seg.site_config import normalize_modality
from fedgin.tools.files import write_json

BUNDLE_VERSION = "0.1.0"
RESTORE_SCRIPT = Path(__file__).resolve().parent / "bundle_files" / "restore.py"
SAVE_MASK_SCRIPT = Path(__file__).resolve().parent / "bundle_files" / "save_mask.py"


def network_def(config: TrainConfig) -> dict:
    """MONAI's ``UNet`` with the arguments of fedgin's ``SegmentationUNet`` (same state dict keys)."""
    m = config.model
    return {
        "_target_": "UNet",
        "spatial_dims": m.spatial_dims,
        "in_channels": 1,
        "out_channels": config.num_classes,
        "channels": list(m.channels),
        "strides": list(m.strides),
        "num_res_units": m.num_res_units,
        "norm": ["INSTANCE", {"affine": True}] if m.affine_norm else "INSTANCE",
        "dropout": m.dropout,
    }


def intensity_transform(modality: str, normalization: dict | None = None) -> dict:
    """The modality's normalization (fedgin.seg.data.normalization) as a MONAI transform config."""
    scheme = normalization_for(modality, normalization)
    if isinstance(scheme, CTNormalization):
        lo, hi = scheme.window
        return {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": lo,
            "a_max": hi,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    lo, hi = scheme.percentiles
    return {
        "_target_": "ScaleIntensityRangePercentilesd",
        "keys": "image",
        "lower": lo,
        "upper": hi,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }


def model_grid_transforms(config: TrainConfig) -> list[dict]:
    """fedgin's way onto the model's grid (:class:`fedgin.seg.data.geometry.ModelGrid`) as MONAI
    transform configs: the in-plane resize, or the resampling to ``pixel_spacing`` and the body crop."""
    if config.pixel_spacing is None:
        size = [int(s) for s in config.spatial_size]
        return [{"_target_": "Resized", "keys": "image", "spatial_size": [*size, -1], "mode": "area"}]
    return [
        {
            "_target_": "Spacingd",
            "keys": "image",
            "pixdim": [*config.pixel_spacing, -1],
            "mode": "bilinear",
            "dtype": "$torch.float32",
        },
        {
            "_target_": "CropForegroundd",
            "keys": "image",
            "source_key": "image",
            # fedgin.seg.data.geometry.body_in_plane: body in any slice, the same crop for every slice;
            # a blank scan is kept whole.
            "select_fn": f"$lambda x: ((x > {BODY_THRESHOLD}) | ~(x > {BODY_THRESHOLD}).any())"
            ".any(-1, keepdim=True).expand(x.shape)",
            "margin": [BODY_MARGIN, BODY_MARGIN, 0],
            "allow_smaller": True,
        },
    ]


def _restore_and_inferer(config: TrainConfig) -> tuple[list[dict], dict]:
    """The bundle's inferer and the post-processing steps before saving, for the job's grid."""
    size = [int(s) for s in config.spatial_size]
    if config.pixel_spacing is None:
        restore = [{"_target_": "scripts.restore.RestoreGridd", "keys": "pred", "image_key": "image"}]
        # One window per axial slice (roi = the whole resized slice), as fedgin scores slices.
        inferer = {
            "_target_": "SliceInferer",
            "roi_size": size,
            "spatial_dim": 2,
            "sw_batch_size": config.eval_batch_size,
        }
    else:
        # MONAI's own inversion (as the model zoo's bundles): softmax, back through the body crop,
        # the resampling and the reorientation to the file's grid, argmax.
        restore = [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]
        # A sliding window over each axial slice, Gaussian-weighted overlaps, as fedgin predicts.
        inferer = {
            "_target_": "SliceInferer",
            "roi_size": size,
            "spatial_dim": 2,
            "sw_batch_size": config.eval_batch_size,
            "overlap": config.sliding_window_overlap,
            "mode": "gaussian",
        }
    return restore, inferer


def inference_config(config: TrainConfig, modality: str, normalization: dict | None = None) -> dict:
    """``configs/inference.json``."""
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": True},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": None},
        intensity_transform(modality, normalization),
        *model_grid_transforms(config),
    ]
    # Not MONAI's SaveImaged: it drops a one-slice scan's singleton axis (scripts/save_mask.py).
    save = {
        "_target_": "scripts.save_mask.SaveMaskd",
        "keys": "pred",
        "output_dir": "@output_dir",
        "output_postfix": "seg",
    }
    restore, inferer = _restore_and_inferer(config)
    postprocessing = [*restore, save]
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/output'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(config),
        "network": "$@network_def.to(@device)",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(os.path.join(@input_dir, '*.nii*')))]",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": "$torch.cuda.is_available()",
        },
        "run": ["$@evaluator.run()"],
    }


def _description(config: TrainConfig, modality: str) -> str:
    return (
        f"A 2D U-Net trained with federated learning (NVIDIA FLARE, FedAvg) and GIN augmentation by fedgin; "
        f"for {modality} scans. "
        + (
            f"Each axial slice is scored at {config.spatial_size[0]} x {config.spatial_size[1]}"
            if config.pixel_spacing is None
            else f"Each axial slice is resampled to {config.pixel_spacing[0]} x {config.pixel_spacing[1]} mm, "
            f"cropped to the body and scored with a {config.spatial_size[0]} x {config.spatial_size[1]} "
            "sliding window"
        )
        + "; the mask is returned on the input's own grid."
    )


def metadata(
    config: TrainConfig,
    modality: str,
    trained_on: list[str],
    job_name: str,
    rounds: int | None,
    model_kind: str,
) -> dict:
    """``configs/metadata.json``: MONAI's bundle metadata plus fedgin's record of the training (no site
    names or paths: only the modalities the sites trained on)."""
    import monai
    import nibabel
    import numpy

    channel_def = {"0": "background", **{str(i + 1): organ for i, organ in enumerate(config.organs)}}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by fedgin from FLARE job {job_name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__},
        "task": f"{modality} segmentation of {', '.join(config.organs)}",
        "description": _description(config, modality),
        "authors": "fedgin",
        "copyright": "see the fedgin repository",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality == "CT" else "magnitude",
                    "modality": modality,
                    "num_channels": 1,
                    "spatial_shape": ["*", "*", "*"],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 1,
                    "spatial_shape": ["*", "*", "*"],
                    "dtype": "uint8",
                    "value_range": [0, config.num_classes - 1],
                    "is_patch_data": False,
                    "channel_def": channel_def,
                }
            },
        },
        "fedgin": {
            "modality": modality,
            "organs": channel_def,
            "trained_on_modalities": sorted(trained_on),
            "flare_job": job_name,
            "rounds": rounds,
            "model": model_kind,
            "preprocessing": {
                "orientation": "RAS",
                "normalization": intensity_transform(modality),
                "slice_size": list(config.spatial_size),
                "pixel_spacing_mm": None if config.pixel_spacing is None else list(config.pixel_spacing),
            },
            "training": {k: v for k, v in config.to_dict().items() if k != "organs"},
        },
    }


def export_bundle(
    model_path: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    modality: str,
    trained_on: list[str],
    job_name: str,
    rounds: int | None = None,
    model_kind: str = "final",
    normalization: dict | None = None,
) -> Path:
    """Write the bundle; returns its folder.

    Raises:
        ValueError: a model that does not fit the job, a 3D or 2.5D job, or one whose sites keep their own
            norm weights (``local_norm``: the global model alone is no site's model).
    """
    modality = normalize_modality(modality)
    if config.model.spatial_dims != 2:
        raise ValueError("the bundle export handles 2D jobs (slice inference); this job is 3D")
    if config.context_slices:
        raise ValueError(
            "context_slices (2.5D) jobs are not exported: MONAI's SliceInferer feeds the network one slice at a time"
        )
    if config.local_norm:
        raise ValueError("local_norm jobs have no single model: export a site's model (global + its norm weights)")
    weights = load_weights(model_path)
    try:
        Segmenter(config, weights, device="cpu", source=str(model_path))  # the same check predict makes
    except ValueError as e:
        raise ValueError(f"{model_path} does not fit this job's model (organs {config.organs}): {e}") from None
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    (out / "scripts").mkdir()
    (out / "docs").mkdir()
    torch.save({k: torch.as_tensor(v) for k, v in weights.items()}, out / "models" / "model.pt")
    shutil.copy2(RESTORE_SCRIPT, out / "scripts" / "restore.py")
    shutil.copy2(SAVE_MASK_SCRIPT, out / "scripts" / "save_mask.py")
    (out / "scripts" / "__init__.py").write_text("")
    write_json(out / "configs" / "inference.json", inference_config(config, modality, normalization))
    write_json(out / "configs" / "metadata.json", metadata(config, modality, trained_on, job_name, rounds, model_kind))
    (out / "docs" / "README.md").write_text(_readme(config, modality))
    return out


def _readme(config: TrainConfig, modality: str) -> str:
    labels = json.dumps({"0": "background", **{str(i + 1): o for i, o in enumerate(config.organs)}})
    return f"""# fedgin {modality} segmentation bundle

Segments {", ".join(config.organs)} on {modality} scans (NIfTI). Needs MONAI, PyTorch and nibabel, not fedgin.

```bash
python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
    --input_dir /path/to/scans --output_dir /path/to/masks
```

Every `*.nii` / `*.nii.gz` in `input_dir` gets `<name>_seg.nii.gz` in `output_dir`, on the scan's own
grid (shape, affine, orientation), label values {labels}. A GPU is used (with mixed precision)
when there is one. `configs/metadata.json` records the training (modalities, FLARE job, rounds).
"""
