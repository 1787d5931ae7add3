"""GIN + IPA: interventional pseudo-correlation augmentation on top of GIN, with its consistency loss.

Implements IPA of Ouyang et al., `Causality-inspired single-source domain generalization for medical
image segmentation <https://arxiv.org/abs/2111.12525>`_, IEEE TMI 2022 (official code:
github.com/cheng-01037/Causality-Medical-Image-Domain-Generalization). Two independent GIN views
of the same image are blended through a smooth random mask, so that the appearance of an organ and
of its surroundings change independently (breaking spurious correlations between them). The network
is then asked to predict the same segmentation for all views (a KL consistency loss).

How this follows the official code (``models/exp_trainer.py``, ``biasfield_interpolate_cchen/``):

* mask: the ``AdvBias`` "bias field" with ``init_mode='gaussian'``: control points ~ N(0, 1) on a
  coarse grid, normalised to unit L2 norm per sample, interpolated with a B-spline of order 2
  (``interpolation_order=2``; the kernel is an iterated box filter applied by a strided transposed
  convolution), exponentiated (``space='log'``), then min-max rescaled to [0, 1] per sample. The
  official grid spacing is 24 px at half resolution (48 px, a quarter of their 192 px images); we
  interpolate directly at full resolution with ``grid_spacing`` px (default 32, a quarter of 128).
  The official ``epsilon=0.3`` rescales the field to [0.7, 1.3] *before* the final min-max rescale
  to [0, 1], so it has no effect on the blend mask; it is therefore not a parameter here.
* blending: with GIN views x1, x2 and mask M, the two IPA views are ``M*x1 + (1-M)*x2`` and the
  complementary ``(1-M)*x1 + M*x2``; the official trainer adds a third, plain GIN view x3 (our
  ``n_views=3``) and stacks views along the batch dim.
* loss: ``torch.nn.KLDivLoss()`` (reduction 'mean': over all elements, classes included) between
  each view's log-softmax and the mean of the views' softmax predictions (not detached), weight
  ``lambda_consist = 10`` (after Xu et al., RandConv). The segmentation loss there is on the first
  view only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedgin.seg.transforms.gin import gin_batch
from fedgin.seg.transforms.randconv import _check_batch

__all__ = ["gin_ipa_batch", "ipa_blend", "ipa_blend_mask", "ipa_consistency_loss"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "voxelmean")


def _spacing_per_dim(grid_spacing: int | Sequence[int], spatial_ndim: int) -> tuple[int, ...]:
    spacing = (grid_spacing,) * spatial_ndim if isinstance(grid_spacing, int) else tuple(grid_spacing)
    if len(spacing) != spatial_ndim or not all(isinstance(s, int) and s >= 1 for s in spacing):
        raise ValueError(
            f"grid_spacing must be a positive integer or {spatial_ndim} positive integers, got {grid_spacing!r}."
        )
    return spacing


def _check_spline_order(order: int) -> None:
    if not isinstance(order, int) or order < 0:
        raise ValueError(f"spline_order must be a non-negative integer, got {order!r}.")


def _bspline_kernel_1d(spacing: int, order: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Discrete B-spline of ``order`` for control points ``spacing`` apart: a box convolved ``order`` times.

    Shifted copies ``spacing`` apart sum to one (partition of unity), so the interpolated field is a
    smooth weighted average of the control points. Length ``(order + 1) * (spacing - 1) + 1``.
    """
    box = torch.ones(1, 1, spacing, dtype=dtype, device=device)
    kernel = box
    for _ in range(order):
        kernel = F.conv1d(kernel, box / spacing, padding=spacing - 1)
    return kernel.flatten()


def ipa_blend_mask(
    batch: int,
    spatial_shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    grid_spacing: int | Sequence[int] = 32,
    spline_order: int = 2,
) -> torch.Tensor:
    """Draw one smooth random blend mask per sample, shape (batch, 1, *spatial_shape), values in [0, 1].

    Control points ~ N(0, 1) on a grid ``grid_spacing`` px apart (with ``spline_order + 1`` extra
    points so the whole image lies where the spline is fully supported), unit L2 norm per sample,
    separable B-spline interpolation (strided transposed 1D convolutions, one per axis), ``exp``,
    and min-max rescaling to [0, 1] per sample (each mask reaches 0 and 1, unless it is flat).

    Args:
        batch: number of masks.
        spatial_shape: (H, W) or (H, W, D).
        generator: source of the random control points; ``None`` uses torch's default RNG.
        device: device of the returned masks (default: the generator's, else CPU).
        dtype: floating dtype of the returned masks.
        grid_spacing: control point spacing in pixels, one int or one per spatial dim.
        spline_order: B-spline order (0: piecewise constant, 1: linear, 2: quadratic as in the
            official code, 3: cubic).
    """
    spatial = tuple(int(n) for n in spatial_shape)
    if len(spatial) not in (2, 3) or min(spatial) < 1:
        raise ValueError(f"spatial_shape must be (H, W) or (H, W, D), got {tuple(spatial_shape)!r}.")
    spacing = _spacing_per_dim(grid_spacing, len(spatial))
    _check_spline_order(spline_order)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else gen_device
    work = torch.float64 if dtype == torch.float64 else torch.float32
    grid = tuple(math.ceil(n / s) + spline_order + 1 for n, s in zip(spatial, spacing, strict=True))
    points = torch.randn((batch, *grid), generator=generator, device=gen_device, dtype=torch.float32)
    field = points.to(device=device, dtype=work)
    # Unit L2 norm per sample as in the official AdvBias: keeps exp() mild whatever the grid size.
    field = field / torch.linalg.vector_norm(field.reshape(batch, -1), dim=1).clamp_min(1e-12).view(
        -1, *[1] * len(grid)
    )
    for axis, (n, s) in enumerate(zip(spatial, spacing, strict=True)):
        kernel = _bspline_kernel_1d(s, spline_order, work, device)
        moved = field.movedim(axis + 1, -1)
        rows = moved.reshape(-1, 1, moved.shape[-1])
        smooth = F.conv_transpose1d(rows, kernel.view(1, 1, -1), stride=s)
        # The fully supported part is centred in the output: crop the image's extent from its middle.
        start = (smooth.shape[-1] - n) // 2
        smooth = smooth[..., start : start + n].reshape(*moved.shape[:-1], n)
        field = smooth.movedim(-1, axis + 1)
    field = field.exp().unsqueeze(1)
    flat = field.reshape(batch, -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    shape = (batch, 1) + (1,) * len(spatial)
    span = (hi - lo).clamp_min(1e-12).view(shape)
    return ((field - lo.view(shape)) / span).clamp(0.0, 1.0).to(dtype)


def ipa_blend(x1: torch.Tensor, x2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spatially varying blend ``mask * x1 + (1 - mask) * x2`` (mask broadcast over channels)."""
    return mask * x1 + (1.0 - mask) * x2


@torch.no_grad()
def gin_ipa_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    n_views: int = 2,
    grid_spacing: int | Sequence[int] = 32,
    spline_order: int = 2,
    n_layers: int = 4,
    interm_channels: int = 2,
    kernel_sizes: Sequence[int] = (1, 3),
    alpha_range: Sequence[float] = (0.0, 1.0),
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GIN + IPA views of a batch, stacked along the batch dim.

    Draws ``max(n_views, 2)`` independent GIN views ``x1, x2, x3, ...`` of every sample
    (:py:func:`fedgin.seg.transforms.gin.gin_batch`, one grouped call) and one smooth mask ``M`` per
    sample (:py:func:`ipa_blend_mask`), then returns, in this order:

    * view 0: ``M * x1 + (1 - M) * x2``;
    * view 1: ``(1 - M) * x1 + M * x2`` (the complementary blend);
    * views 2...: the plain GIN views ``x3, ...`` (``n_views=3`` is the official GIN-IPA setup).

    View ``v`` of sample ``b`` is row ``v * B + b``, so labels follow with
    ``y.repeat(n_views, 1, ...)`` and logits split with ``logits.chunk(n_views)`` for
    :py:func:`ipa_consistency_loss`.

    Args:
        x: float tensor of shape (B, C, H, W) or (B, C, H, W, D), on any device.
        generator: source of every random draw (GIN networks first, then masks); ``None`` uses
            torch's default RNG. It may live on another device than ``x``.
        n_views: number of views returned, at least 1.
        grid_spacing: control point spacing of the mask in pixels, one int or one per spatial dim.
        spline_order: B-spline order of the mask (2 as in the official code).
        n_layers, interm_channels, kernel_sizes, alpha_range, eps: GIN options, see
            :py:func:`fedgin.seg.transforms.gin.gin_batch`.

    Returns:
        ``(views, masks)``: views of shape (n_views * B, C, *spatial) with the dtype and device of
        ``x`` (a plain tensor, also for a MetaTensor input), masks of shape (B, 1, *spatial) in [0, 1].

    Raises:
        ValueError: for a non-tensor or non-float input, a rank other than 4 or 5, or invalid options.
    """
    _check_batch(x, "gin_ipa_batch")
    if not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}.")
    spacing = _spacing_per_dim(grid_spacing, x.ndim - 2)
    _check_spline_order(spline_order)
    xt = x.as_subclass(torch.Tensor)
    batch = xt.shape[0]
    n_gin = max(n_views, 2)
    # Every copy gets its own random network inside gin_batch: n_gin independent views, one call.
    gins = gin_batch(
        xt.repeat((n_gin,) + (1,) * (xt.ndim - 1)),
        generator=generator,
        n_layers=n_layers,
        interm_channels=interm_channels,
        kernel_sizes=kernel_sizes,
        alpha_range=alpha_range,
        eps=eps,
    )
    work = torch.float32 if xt.dtype in _LOW_PRECISION else xt.dtype
    gins = gins.to(work)
    masks = ipa_blend_mask(batch, xt.shape[2:], generator, xt.device, work, spacing, spline_order)
    x1, x2 = gins[:batch], gins[batch : 2 * batch]
    views = [ipa_blend(x1, x2, masks), ipa_blend(x2, x1, masks)][:n_views]
    views += [gins[2 * batch : n_views * batch]] if n_views > 2 else []
    return torch.cat(views).to(xt.dtype), masks.to(xt.dtype)


def ipa_consistency_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    *more_logits: torch.Tensor,
    reduction: str = "mean",
    detach_target: bool = False,
) -> torch.Tensor:
    """KL consistency between the predictions of augmented views of the same images (GIN-IPA).

    As in the official code: with ``p_v = softmax(logits_v)`` over dim 1 and ``p = mean_v p_v``,
    the loss is ``mean_v KL(p || p_v)``, i.e. ``torch.nn.KLDivLoss()(log_softmax(logits_v), p)``
    averaged over views. The official weight is ``lambda_consist = 10`` with ``reduction="mean"``.

    Args:
        logits_a, logits_b, *more_logits: raw network outputs of the views, each (B, K, *spatial)
            with the same shape (e.g. ``*model(views).chunk(n_views)``). Computed in float32.
        reduction: "mean" (official, ``KLDivLoss`` default): mean over batch, classes and voxels;
            "voxelmean": the per-voxel KL (summed over classes) averaged over batch and voxels,
            i.e. K times "mean".
        detach_target: stop the gradient through the mean prediction ``p`` (the official code
            does not).

    Returns:
        Scalar loss, 0 when all views predict the same distribution, > 0 otherwise.

    Raises:
        ValueError: for fewer than two views, views of different shapes, fewer than 2 dims, or an
            unknown reduction.
    """
    logits = (logits_a, logits_b, *more_logits)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if not all(isinstance(t, torch.Tensor) for t in logits):
        raise ValueError("ipa_consistency_loss expects torch.Tensor logits.")
    if len({tuple(t.shape) for t in logits}) != 1 or logits_a.ndim < 2:
        raise ValueError(
            f"ipa_consistency_loss expects views of one shape (B, K, ...), got {[tuple(t.shape) for t in logits]}."
        )
    log_probs = [F.log_softmax(t.float(), dim=1) for t in logits]
    target = torch.stack([lp.exp() for lp in log_probs]).mean(dim=0)
    if detach_target:
        target = target.detach()
    # kl_div(input=log q, target=p) = p * (log p - log q), with 0 * log 0 = 0.
    kl = torch.stack([F.kl_div(lp, target, reduction="none") for lp in log_probs]).mean(dim=0)
    return kl.mean() if reduction == "mean" else kl.sum(dim=1).mean()
