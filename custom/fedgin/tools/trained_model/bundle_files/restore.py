"""Post-processing of a fedgin MONAI bundle: plain MONAI, PyTorch and nibabel (fedgin is not needed).

The network scores each axial slice at its input size; this turns those logits into class indices
on the scan's own grid exactly as fedgin does (``fedgin.seg.training.Trainer.predict_image`` and
``fedgin.seg.prediction.Segmenter``): softmax probabilities interpolated bilinearly to the RAS grid
the image had before its resize, the argmax taken, then the label map turned from RAS into the file's own
orientation and given the file's affine.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform


class RestoreGridd(MapTransform):
    """Slice logits (C, S, S, D) at the model's input size -> uint8 label map (1, H, W, D) on the input file's grid.

    Args:
        keys: the prediction key(s).
        image_key: the preprocessed image, whose record of its resize gives the RAS grid's size and
            whose metadata gives the file's affine.
    """

    def __init__(self, keys="pred", image_key: str = "image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def __call__(self, data):
        d = dict(data)
        image = d[self.image_key]
        resize = [op for op in image.applied_operations if op["class"].startswith("Resize")][-1]
        ras_size = tuple(int(s) for s in resize["orig_size"])
        original_affine = np.asarray(image.meta["original_affine"], dtype=np.float64)
        for key in self.key_iterator(d):
            logits = torch.as_tensor(d[key]).float().permute(3, 0, 1, 2)  # (D, C, S, S): one slice per row
            probs = F.interpolate(logits.softmax(1), size=ras_size[:2], mode="bilinear")
            classes = probs.argmax(1).permute(1, 2, 0).to(torch.uint8).cpu().numpy()  # (H, W, D), RAS
            to_file = nib.orientations.ornt_transform(
                nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.io_orientation(original_affine)
            )
            array = np.ascontiguousarray(nib.orientations.apply_orientation(classes, to_file))
            meta = {"filename_or_obj": image.meta["filename_or_obj"], "original_affine": original_affine}
            d[key] = MetaTensor(torch.as_tensor(array)[None], affine=torch.as_tensor(original_affine), meta=meta)
        return d
