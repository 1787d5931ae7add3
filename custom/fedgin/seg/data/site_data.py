"""A site's preprocessed data, loaded once and kept in memory for every round.

Pipeline per volume (MONAI transforms, nibabel underneath): load NIfTI → channel first →
reorient to RAS (the axial axis is then the last one) → modality normalization to [0, 1] →
site label ids to class indices → onto the model's grid (:mod:`fedgin.seg.data.geometry`: resized
to the job's spatial size, or resampled to its pixel spacing and cropped to the body).

Training uses 2D axial slices (or whole resized volumes in 3D). Evaluation keeps each label on its
original grid so Dice is measured at the data's own resolution, not at the training size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, Orientationd

from fedgin.seg.data.geometry import ModelGrid, slices_with_context
from fedgin.seg.data.labels import MapLabelsd, class_lookup
from fedgin.seg.data.normalization import normalization_for
from fedgin.seg.data.sampling import organ_presence
from fedgin.seg.site_config import SiteConfig

logger = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "RAS"


class DataError(ValueError):
    """A case cannot be used; the message names the file and the problem."""


@dataclass
class TrainSamples:
    """Training samples as stacked tensors: images (N, C, *spatial) float32 (C = 1, or a slice with its
    neighbours: 2.5D), labels (N, 1, *spatial) uint8.

    ``labelled`` (N, num_classes) bool says which classes each sample's label map annotates (a site
    with partial labels lacks some organs); None means all of them. ``patients`` (N,) int64 says
    which volume (patient) each sample was cut from (DP-SGD's unit of privacy); None: unknown.
    ``extents`` (N, 2) int64: the in-plane size (h, w) of each slice's content, from the top-left
    corner, when slices of different sizes share one padded array (the spacing scheme); None: the
    whole array.
    """

    images: torch.Tensor
    labels: torch.Tensor
    labelled: torch.Tensor | None = None
    patients: torch.Tensor | None = None
    extents: torch.Tensor | None = None
    _presence: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def organ_presence(self, num_classes: int) -> torch.Tensor:
        """(N, num_classes - 1) bool, which organs each sample's label holds (computed once)."""
        if self._presence is None or self._presence.shape != (len(self), num_classes - 1):
            self._presence = organ_presence(self.labels, num_classes)
        return self._presence

    def labelled_mask(self, num_classes: int) -> torch.Tensor:
        """``labelled`` with the default (every class annotated) filled in."""
        if self.labelled is not None:
            return self.labelled
        return torch.ones(len(self), num_classes, dtype=torch.bool)

    def content_extents(self) -> torch.Tensor:
        """``extents`` with the default (the whole array) filled in."""
        if self.extents is not None:
            return self.extents
        return torch.tensor(self.images.shape[2:4]).expand(len(self), 2)

    def windows(self, idx: torch.Tensor, size: Sequence[int], generator: torch.Generator):
        """Images and labels of samples ``idx``, each cut to a ``size`` window at a random place
        inside its content (drawn from ``generator``); the whole samples when they have that size."""
        x, y = self.images[idx], self.labels[idx]
        size = tuple(int(s) for s in size)
        if x.ndim != 4 or tuple(x.shape[2:]) == size:
            return x, y
        room = (self.content_extents()[idx] - torch.tensor(size)).clamp(min=0)  # (B, 2) free offsets
        offsets = (torch.rand(len(idx), 2, generator=generator) * (room + 1)).floor().long().minimum(room)
        (h, w), rows = size, offsets.tolist()
        return (
            torch.stack([x[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(rows)]),
            torch.stack([y[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(rows)]),
        )

    @staticmethod
    def concat(parts: Sequence[TrainSamples], num_classes: int) -> TrainSamples:
        """Pool the samples of several sites, keeping each sample's labelled classes (and patients,
        numbered on across the sites, when every part knows them). Slices of different sizes are
        padded to the largest (bottom and right; ``extents`` keep each one's content)."""
        patients = None
        if parts and all(p.patients is not None for p in parts):
            offsets = np.cumsum([0] + [int(p.patients.max()) + 1 if len(p) else 0 for p in parts[:-1]])
            patients = torch.cat([p.patients + int(o) for p, o in zip(parts, offsets, strict=True)])
        shapes = {tuple(p.images.shape[2:]) for p in parts}
        extents = None
        if len(shapes) > 1 or any(p.extents is not None for p in parts):
            extents = torch.cat([p.content_extents() for p in parts])
        return TrainSamples(
            pad_to_largest([p.images for p in parts]),
            pad_to_largest([p.labels for p in parts]),
            torch.cat([p.labelled_mask(num_classes) for p in parts]),
            patients,
            extents,
        )


def pad_to_largest(arrays: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate (N, C, *spatial) arrays along N, zero-padding each at the end of every spatial
    axis to the largest size."""
    largest = [max(a.shape[d] for a in arrays) for d in range(2, arrays[0].ndim)]
    padded = []
    for a in arrays:
        pad = []
        for d in reversed(range(2, a.ndim)):
            pad += [0, largest[d - 2] - a.shape[d]]
        padded.append(torch.nn.functional.pad(a, pad) if any(pad) else a)
    return torch.cat(padded)


@dataclass
class EvalVolume:
    """One evaluation volume: image on the model's grid, label on the volume's original (RAS) grid.

    ``grid`` is set for the spacing scheme: the image is then a MONAI ``MetaTensor`` (1, h, w, D)
    that remembers its resampling and crop, which the grid inverts to score on the label's grid.
    """

    image: torch.Tensor  # (1, S, S, D) for 2D jobs, (1, S, S, S) for 3D jobs; (1, h, w, D) resampled
    label: torch.Tensor  # (1, H, W, D) class indices
    grid: ModelGrid | None = None


@dataclass
class SiteData:
    modality: str
    organs: list[str]
    present_organs: list[str]
    train: TrainSamples | None
    validation: list[EvalVolume]
    test: list[EvalVolume]
    # Organs its validation and test volumes are scored on: present_organs, and with the site
    # config's eval_labels also those it never trains on (organ transfer).
    scored_organs: list[str] = field(default_factory=list)


def _finite_check(d: dict) -> dict:
    image = d["image"]
    if not torch.isfinite(torch.as_tensor(image)).all():
        raise DataError("image contains NaN or Inf voxels")
    return d


def _dimension_problem(array, what: str) -> str | None:
    # After EnsureChannelFirst: a 3D volume is (1, H, W, D); a 2D image is (1, H, W); a 4D
    # NIfTI (H, W, D, T) is (T, H, W, D).
    shape = tuple(array.shape)
    if len(shape) == 4 and shape[0] == 1:
        return None
    if len(shape) == 3 and shape[0] == 1:
        return f"{what} is 2D (shape {shape[1:]}); a 3D volume is expected"
    if len(shape) == 4:
        return f"{what} is 4D ({shape[0]} volumes of {shape[1:]}); a single 3D volume is expected"
    return f"{what} has {len(shape) - 1 if shape[0] == 1 else len(shape)} dimensions (array shape {shape}); 3D expected"


def _shape_check(d: dict) -> dict:
    image, label = d["image"], d.get("label")
    for array, what in ((image, "image"), (label, "label")):
        problem = None if array is None else _dimension_problem(array, what)
        if problem:
            raise DataError(problem)
    if label is not None and tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise DataError(f"image shape {tuple(image.shape[1:])} and label shape {tuple(label.shape[1:])} differ")
    if label is not None and hasattr(image, "affine") and hasattr(label, "affine"):
        if not np.allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-3):
            raise DataError("image and label affines differ (they are not on the same grid)")
    return d


def _nifti_loader(keys: list[str]) -> LoadImaged:
    # LoadImaged also builds MONAI's DICOM readers; with pydicom installed (the CHAOS converter needs
    # it) and no NVIDIA nvImageCodec, they warn on every construction. We only read NIfTI here.
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImaged(keys, reader="NibabelReader", image_only=True)
    finally:
        plugin_log.setLevel(level)


def _loading_steps(keys: list[str]) -> list[Callable]:
    """Load NIfTI, channel first, check shapes and values, reorient to RAS."""
    return [
        _nifti_loader(keys),
        EnsureChannelFirstd(keys),
        _shape_check,
        EnsureTyped("image", dtype=torch.float32, track_meta=True),
        _finite_check,
        Orientationd(keys, axcodes=CANONICAL_ORIENTATION, labels=None),
    ]


def volume_transforms(site: SiteConfig, organs: Sequence[str]) -> Compose:
    """Deterministic per-volume preprocessing of an image and its label, up to (not including) resizing."""
    return Compose(
        [
            *_loading_steps(["image", "label"]),
            normalization_for(site.modality, site.normalization).transform("image"),
            MapLabelsd("label", class_lookup(organs, site.labels)),
        ]
    )


def image_transforms(modality: str, normalization: dict | None = None) -> Compose:
    """The same preprocessing for an image alone (prediction on new scans), up to resizing."""
    return Compose([*_loading_steps(["image"]), normalization_for(modality, normalization).transform("image")])


def unreadable_file(path: str) -> str | None:
    """Why nibabel cannot read ``path`` as NIfTI (corrupt, truncated, not NIfTI), or None if it can."""
    try:
        np.asarray(nib.load(path).dataobj)  # the header alone does not show a truncated volume
    except Exception as e:
        return f"{path}: not a readable NIfTI file, corrupt or truncated? ({type(e).__name__}: {e})"
    return None


def load_case(case: dict, transform: Compose) -> dict:
    """Run the volume pipeline on one datalist entry; errors name the files."""
    try:
        return transform(dict(case))
    except Exception as e:  # MONAI wraps errors in RuntimeError chains: find our own message
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, DataError):
            cause = cause.__cause__
        if not isinstance(cause, DataError):
            # MONAI reports a file it cannot read as "cannot find a suitable reader ... install
            # the reader libraries": ask nibabel which file is broken and why (on failure only).
            for key in ("image", "label"):
                problem = unreadable_file(case[key]) if key in case else None
                if problem:
                    raise DataError(problem) from e
        files = ", ".join(str(case[k]) for k in ("image", "label") if k in case)
        raise DataError(f"{files}: {cause}") from e


def _check_listed_ids_occur(site: SiteConfig, organs: Sequence[str], cases: list[dict], unlabelled: list[str]):
    """Label ids the site does not list are background by design (real label maps hold 100+
    structures); but training labels holding NONE of the listed ids mean the ids are wrong
    (e.g. another dataset's numbering), and training would learn background only."""
    ids = sorted({i for o in organs for i in site.labels.get(o, ())})
    for path in unlabelled:
        logger.warning("%s: holds none of the label ids %s of the site config; background only", path, ids)
    if cases and len(unlabelled) == len(cases):
        found = np.unique(np.asarray(nib.load(unlabelled[0]).dataobj)).astype(int).tolist()
        raise DataError(
            f"{site.path}: 'labels' ids {ids} occur in none of the training labels; {unlabelled[0]} holds "
            f"ids {found[:20]}: check the ids in 'labels'"
        )


def _training_samples(d: dict, spatial_dims: int, context_slices: int, keep_background: Callable):
    """Image and label samples of one volume on the training grid: its organ slices and a seeded
    share of organ-free ones (2D, with their neighbours as channels for 2.5D), or the volume (3D)."""
    img, lab = d["image"].as_tensor(), d["label"].as_tensor()
    if spatial_dims != 2:
        return img[None], lab[None]
    lab = lab.permute(3, 0, 1, 2)  # (D, 1, S, S)
    has_organ = lab.flatten(1).amax(1) > 0
    keep = has_organ | keep_background(len(has_organ))
    return slices_with_context(img, context_slices, at=keep), lab[keep]  # (kept, C, S, S)


def _eval_volume(d: dict, grid: ModelGrid, to_model_grid) -> EvalVolume:
    """A held-out volume: its label on its own grid, its image on the model's grid."""
    label = d["label"].as_tensor().to(torch.uint8)
    image = to_model_grid({"image": d["image"]})["image"]
    if grid.resamples:  # keeps its resampling and crop, to be inverted
        return EvalVolume(image=image, label=label, grid=grid)
    return EvalVolume(image=image.as_tensor().float(), label=label)


def load_site_data(
    site: SiteConfig,
    organs: Sequence[str],
    spatial_size: Sequence[int],
    spatial_dims: int = 2,
    splits: Sequence[str] = ("training", "validation"),
    background_slice_fraction: float = 0.1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    pixel_spacing: Sequence[float] | None = None,
    context_slices: int = 0,
) -> SiteData:
    """Load and preprocess the given splits of a site once.

    Args:
        site: the validated site config.
        organs: the job's organ names (class i is organs[i - 1]).
        spatial_size: the job's input size (2 values for 2D, 3 for 3D).
        spatial_dims: 2 trains on axial slices, 3 on whole resized volumes.
        splits: which datalist splits to load.
        background_slice_fraction: share of organ-free slices kept for 2D training (seeded).
        seed: seed of the background-slice draw.
        progress: called with a short message per loaded volume (no file names: may be logged).
        pixel_spacing: in-plane spacing (mm) to resample to (2D; :mod:`fedgin.seg.data.geometry`),
            or None to resize every slice to ``spatial_size``.
        context_slices: 2D training samples carry this many neighbouring slices on either side as
            extra channels (2.5D; :func:`fedgin.seg.data.geometry.slices_with_context`).
    """
    if not any(o in site.labels for o in organs):
        raise DataError(f"{site.path}: 'labels' names none of the job's organs {list(organs)}")
    transform = volume_transforms(site, organs)
    scoring = site.scoring_config()
    scored_transform = transform if scoring is site else volume_transforms(scoring, organs)
    grid = ModelGrid(spatial_size, spatial_dims, pixel_spacing)
    to_training_grid, to_model_grid = grid.training_transform(), grid.image_transform()
    rng = np.random.default_rng(seed)

    def keep_background(n: int) -> torch.Tensor:  # which of n organ-free slices to keep (seeded)
        return torch.as_tensor(rng.random(n) < background_slice_fraction)

    train, validation, test = None, [], []
    unlabelled = []  # training label files holding none of the site's ids for the job's organs
    for split in splits:
        cases = site.cases(split)
        if split == "training" and not cases:
            raise DataError(f"{site.datalist}: the 'training' list is empty")
        images, labels, patients = [], [], []
        for i, case in enumerate(cases):
            if "label" not in case:
                raise DataError(f"{site.datalist}: {split}[{i}] has no 'label'")
            d = load_case(case, transform if split == "training" else scored_transform)
            if split == "training":
                if not bool((d["label"] > 0).any()):
                    unlabelled.append(case["label"])
                img, lab = _training_samples(to_training_grid(d), spatial_dims, context_slices, keep_background)
                images.append(img.float())
                labels.append(lab.to(torch.uint8))
                patients.append(torch.full((len(img),), i, dtype=torch.int64))
            else:
                (validation if split == "validation" else test).append(_eval_volume(d, grid, to_model_grid))
            if progress:
                progress(f"{split} {i + 1}/{len(cases)}")
        if split == "training":
            _check_listed_ids_occur(site, organs, cases, unlabelled)
            extents = None
            if grid.resamples:  # slices of each volume's own size, padded to the site's largest
                extents = torch.cat([torch.tensor(i.shape[2:4]).expand(len(i), 2) for i in images])
            train = TrainSamples(
                pad_to_largest(images), pad_to_largest(labels), patients=torch.cat(patients), extents=extents
            )
    present = [o for o in organs if o in site.labels]
    if train is not None:
        labelled = torch.tensor([True] + [o in present for o in organs])
        train.labelled = labelled.expand(len(train), -1).clone()
    scored = [o for o in organs if o in scoring.labels]
    return SiteData(site.modality, list(organs), present, train, validation, test, scored)
