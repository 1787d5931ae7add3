"""Synthetic CT / MRI phantoms with a real cross-modality gap.

The same kind of random anatomy (defined in world RAS+ millimetres) is
rendered as contrast-enhanced CT (Hounsfield units, RAS grid) or as MRI
(T2-weighted abdomen / bSSFP heart, non-monotonic w.r.t. CT, bias field,
Rician noise, other resolution, LPS grid), with site-specific label ids.

Main entry points:

* :func:`generate_phantom_dataset` — write a multi-site NIfTI data set with
  Decathlon-style datalists and ``site_config.json`` files.
* :func:`make_case` — one case in memory: ``(image, label, affine)``.
"""

from .anatomy import ORGAN_TISSUES, ORGANS, TASKS, Anatomy, Tissue, sample_anatomy, tissue_to_label
from .case import DEFAULT_GRID, LABEL_IDS, make_affine, make_case
from .dataset import (
    PhantomSiteSpec,
    case_rng,
    default_site_specs,
    generate_phantom_dataset,
    save_nifti,
    scale_site_specs,
)
from .render import CT_HU, MR_BSSFP, MR_T2, render, render_ct, render_mr, tissue_table

__all__ = [
    "ORGANS",
    "ORGAN_TISSUES",
    "TASKS",
    "LABEL_IDS",
    "DEFAULT_GRID",
    "Tissue",
    "Anatomy",
    "sample_anatomy",
    "tissue_to_label",
    "make_affine",
    "make_case",
    "PhantomSiteSpec",
    "default_site_specs",
    "scale_site_specs",
    "case_rng",
    "save_nifti",
    "generate_phantom_dataset",
    "CT_HU",
    "MR_T2",
    "MR_BSSFP",
    "tissue_table",
    "render",
    "render_ct",
    "render_mr",
]
