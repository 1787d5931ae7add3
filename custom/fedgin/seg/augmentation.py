"""Intensity augmentation families applied to a training batch on its device, chosen by name.

- ``none``: plain intensities;
- ``gin``: GIN, random shallow non-linear conv nets (Ouyang et al., IEEE TMI 2022), the FedGIN default;
- ``randconv``: one random linear conv layer per sample (Xu et al., ICLR 2021);
- ``amplitude``: low-frequency amplitude spectrum mixed with another sample's of the same batch,
  phase kept (FDA / FedDG style; nothing crosses sites);
- ``gin_ipa``: GIN + interventional pseudo-correlation augmentation: two GIN views blended through
  a smooth random mask, trained with a consistency loss between the views (Ouyang et al. 2022).

Each family's options come from the job's ``augmentation_options`` and go to its batch function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedgin.seg.transforms import amplitude_mix_batch, gin_batch, rand_conv_batch

AUGMENTATIONS = ("none", "gin", "randconv", "amplitude", "gin_ipa")
# Families that turn one batch into several views trained together (with a consistency loss).
MULTI_VIEW = ("gin_ipa",)
_SINGLE_VIEW = {"gin": gin_batch, "randconv": rand_conv_batch, "amplitude": amplitude_mix_batch}


def check_augmentation(kind: str, options: Mapping) -> None:
    """Raise a ValueError naming the family or option that is not known."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
    if kind == "none" and options:
        raise ValueError(f"augmentation 'none' takes no options, got {sorted(options)}")
    if kind in ("none",):
        return
    import inspect

    from fedgin.seg.transforms.ipa import gin_ipa_batch

    fn = gin_ipa_batch if kind == "gin_ipa" else _SINGLE_VIEW[kind]
    known = set(inspect.signature(fn).parameters) - {"x", "generator"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for augmentation {kind!r}; known: {sorted(known)}")


def augment(kind: str, x: torch.Tensor, generator: torch.Generator, options: Mapping) -> torch.Tensor:
    """One augmented view of ``x`` (B, C, *spatial) for a single-view family."""
    if kind == "none":
        return x
    return _SINGLE_VIEW[kind](x, generator=generator, **options)


def augment_views(kind: str, x: torch.Tensor, generator: torch.Generator, options: Mapping) -> torch.Tensor:
    """Views of ``x`` stacked along the batch dim (view v of sample b is row v·B + b)."""
    from fedgin.seg.transforms.ipa import gin_ipa_batch

    if kind != "gin_ipa":
        raise ValueError(f"augmentation {kind!r} gives a single view")
    views, _ = gin_ipa_batch(x, generator=generator, **options)
    return views
