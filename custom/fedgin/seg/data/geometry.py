"""From a volume's own grid to the grid the model sees, and back.

Two schemes, chosen by the job's ``pixel_spacing``:

- **resize** (``pixel_spacing`` None): every slice is resized to ``spatial_size`` whatever its field of
  view and spacing; predictions (probabilities) are interpolated back to the volume's grid.
- **spacing** (``pixel_spacing`` [x, y] in mm, 2D jobs; RAS order: right-left, then posterior-anterior,
  not DICOM's row/column order): as MONAI's and nnU-Net's pipelines do,
  each volume is resampled in-plane to that spacing (MONAI ``Spacingd``, through-plane spacing
  kept) and cropped in-plane to the body (``CropForegroundd``), so an organ has the same size in
  pixels in every scan; training takes random ``spatial_size`` windows of those slices
  (:meth:`fedgin.seg.data.site_data.TrainSamples.windows`), prediction covers the whole slice with a
  sliding window (MONAI ``SlidingWindowInferer``), and the probabilities go back to the volume's
  own grid by inverting the crop and the resampling (as MONAI's ``Invertd`` in the model zoo's
  ``inference.json`` does).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CropForegroundd, Resized, Spacingd, SpatialPadd

# Normalized intensity above which a voxel counts as body: the CT window and the MR percentile
# scaling both put air at about 0, fat and soft tissue well above this.
BODY_THRESHOLD = 0.05
# Pixels kept around the body box, so a sliding window sees the skin line with some context.
BODY_MARGIN = 4


def body_in_plane(image):
    """``CropForegroundd``'s selector: a pixel is foreground if the body covers it in any slice, so
    the crop is in-plane only and the same for every slice of a volume (the axial axis is last). A
    scan with no body at all is kept whole."""
    mask = image > BODY_THRESHOLD
    if not mask.any():  # nothing above the threshold (a blank scan): keep the whole slice
        mask = mask | True
    if isinstance(mask, torch.Tensor):
        return mask.any(-1, keepdim=True).expand(mask.shape)
    return np.broadcast_to(mask.any(-1, keepdims=True), mask.shape)


class ModelGrid:
    """How a job's volumes reach the model's input grid, and how predictions come back.

    Args:
        spatial_size: the model's input size (2 values for 2D, 3 for 3D); with ``pixel_spacing``,
            the size of the training windows and of the sliding window.
        spatial_dims: 2 (axial slices) or 3 (whole volumes).
        pixel_spacing: in-plane spacing in mm to resample to, [x, y] in RAS order (2D only), or
            None to resize.

    Raises:
        ValueError: for a spacing that is not two positive numbers, or a spacing with a 3D job.
    """

    def __init__(
        self, spatial_size: Sequence[int], spatial_dims: int = 2, pixel_spacing: Sequence[float] | None = None
    ):
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.spatial_dims = spatial_dims
        self.pixel_spacing = None if pixel_spacing is None else tuple(float(s) for s in pixel_spacing)
        if self.pixel_spacing is not None:
            if spatial_dims != 2:
                raise ValueError("pixel_spacing is for 2D jobs (axial slices); 3D jobs resize whole volumes")
            if len(self.pixel_spacing) != 2 or min(self.pixel_spacing) <= 0:
                raise ValueError(f"pixel_spacing must be two positive numbers (mm), got {list(pixel_spacing)}")
        # One instance: MONAI inverts a transform only with the object that applied it.
        if self.pixel_spacing is None:
            self._image_transform = Compose([Resized("image", spatial_size=self._resize_size(), mode="area")])
        else:
            self._image_transform = Compose(self._physical(["image"]))

    @classmethod
    def of(cls, config) -> ModelGrid:
        """The grid of a :class:`fedgin.seg.config.TrainConfig`."""
        return cls(config.spatial_size, config.model.spatial_dims, config.pixel_spacing)

    @property
    def resamples(self) -> bool:
        return self.pixel_spacing is not None

    def _resize_size(self) -> tuple[int, ...]:
        return (*self.spatial_size, -1) if self.spatial_dims == 2 else self.spatial_size

    def image_transform(self) -> Compose:
        """An image (RAS, normalized) onto the model's grid: resized, or resampled and body-cropped
        (invertible: :meth:`classes_on_volume_grid` maps predictions back). Always the same object."""
        return self._image_transform

    def training_transform(self) -> Compose:
        """Image and label onto the training grid. Resize: image "area", label "nearest-exact" (it
        samples block centres like "area"; "nearest" would shift labels by ~1/3 pixel). Spacing:
        resampled (bilinear / nearest), body-cropped, padded to at least one training window."""
        if not self.resamples:
            size = self._resize_size()
            return Compose(
                [
                    Resized("image", spatial_size=size, mode="area"),
                    Resized("label", spatial_size=size, mode="nearest-exact"),
                ]
            )
        keys = ["image", "label"]
        return Compose([*self._physical(keys), SpatialPadd(keys, spatial_size=(*self.spatial_size, -1))])

    def _physical(self, keys: list[str]) -> list:
        modes = ["bilinear" if k == "image" else "nearest" for k in keys]
        return [
            # -1 keeps the slice spacing; float32 halves MONAI's sampling grid (its default is float64).
            Spacingd(keys, pixdim=(*self.pixel_spacing, -1), mode=modes, dtype=torch.float32),
            CropForegroundd(
                keys, "image", select_fn=body_in_plane, margin=(BODY_MARGIN, BODY_MARGIN, 0), allow_smaller=True
            ),
        ]

    def classes_on_volume_grid(self, probabilities: torch.Tensor, image, out_size: Sequence[int]) -> torch.Tensor:
        """Class indices (*out_size, uint8) on the volume's own grid from class probabilities
        (C, h, w, D) of ``image``, the output of :meth:`image_transform` (spacing scheme): the crop
        and resampling are inverted one class at a time (MONAI's ``Compose.inverse``, as ``Invertd``
        does: bilinear, float32), keeping the running maximum and its class, so the full-size maps in
        memory are the one being inverted (and MONAI's sampling grid) plus that maximum."""
        if not self.resamples:
            raise ValueError("classes_on_volume_grid inverts the spacing scheme; the resize scheme interpolates")
        out_size = tuple(int(s) for s in out_size)
        best, classes = None, torch.zeros(out_size, dtype=torch.uint8)
        for c in range(probabilities.shape[0]):
            # Each class map carries the image's record of transforms (a copy: inverting pops it).
            pred = MetaTensor(
                probabilities[c : c + 1],
                meta=dict(image.meta),  # holds the affine
                applied_operations=copy.deepcopy(image.applied_operations),
            )
            p = torch.as_tensor(self._image_transform.inverse({"image": pred})["image"])[0]
            if tuple(p.shape) != out_size:
                raise ValueError(f"inverted prediction has shape {tuple(p.shape)}, the volume {out_size}")
            if best is None:
                best = p.float()
                continue
            better = p > best
            classes[better] = c
            torch.maximum(best, p, out=best)
            del p, better
        return classes


def slices_with_context(volume: torch.Tensor, context: int, at: torch.Tensor | None = None) -> torch.Tensor:
    """The axial slices of ``volume`` (1, H, W, D) as model inputs (D, 1 + 2·context, H, W): each
    slice with its ``context`` neighbours on either side as extra channels (2.5D), in order, the
    volume's first and last slice repeated past its ends. ``context`` 0: (D, 1, H, W). ``at``: only
    the slices at these positions (a bool mask or indices), built without the others."""
    if volume.ndim != 4 or volume.shape[0] != 1:
        raise ValueError(f"expected a volume of shape (1, H, W, D), got {tuple(volume.shape)}")
    slices = volume[0].permute(2, 0, 1)  # (D, H, W)
    depth = slices.shape[0]
    centres = torch.arange(depth) if at is None else torch.arange(depth)[at]
    index = (centres[:, None] + torch.arange(-context, context + 1)[None]).clamp(0, depth - 1)
    return slices[index]  # (len(centres), 1 + 2·context, H, W)
