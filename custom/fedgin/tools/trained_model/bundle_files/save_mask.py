"""Write a label map as NIfTI with its scan's exact shape and header: plain nibabel (fedgin is not needed).

MONAI's ``SaveImage`` drops trailing singleton axes (a one-slice scan of 512 x 512 x 1 gets a
512 x 512 mask) or, told not to squeeze, keeps a channel axis (512 x 512 x 1 x 1); tools that pair
image and mask by shape refuse both. This writes the mask on the scan's own header (affine, qform
and sform codes, voxel sizes), uint8, shape for shape. Used by ``fedgin predict`` and, copied into
an exported bundle as ``scripts/save_mask.py``, by the bundle's ``SaveMaskd``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import MapTransform


def write_mask(mask, scan: str | Path, out: str | Path) -> Path:
    """Save ``mask`` ((1, H, W, D) or (H, W, D) class indices on the scan's grid) beside the scan's header.

    Raises:
        ValueError: naming the scan, when the mask's shape is not the scan's.
    """
    array = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    reference = nib.load(str(scan))
    if tuple(array.shape) != tuple(reference.shape[:3]) or len(reference.shape) > 3:
        raise ValueError(f"{scan}: mask of shape {array.shape} does not fit the scan's shape {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(array.astype(np.uint8), reference.affine, header)
    image.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]))
    image.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(out))
    return out


class SaveMaskd(MapTransform):
    """The bundle's writer: ``<output_dir>/<scan name>_<postfix>.nii.gz`` for each key, via :func:`write_mask`.

    Args:
        keys: the label map key(s); their metadata's ``filename_or_obj`` names the scan.
        output_dir: folder of the masks.
        output_postfix: appended to the scan's name.
    """

    def __init__(self, keys="pred", output_dir: str = "output", output_postfix: str = "seg", allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            scan = Path(str(d[key].meta["filename_or_obj"]))
            stem = scan.name[: -len(".nii.gz")] if scan.name.endswith(".nii.gz") else scan.stem
            write_mask(d[key], scan, self.output_dir / f"{stem}_{self.output_postfix}.nii.gz")
        return d
