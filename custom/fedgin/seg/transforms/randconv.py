"""RandConv: random linear convolution augmentation.

Implements the random convolution layer of Xu et al., `Robust and Generalizable Visual
Representation Learning via Random Convolutions <https://arxiv.org/abs/2007.07841>`_, ICLR 2021.
Each sample is filtered by its own freshly drawn linear convolution (no bias, no nonlinearity):
local texture and contrast change, while large shapes (and hence the labels) stay put. Unlike GIN
(:py:mod:`fedgin.seg.transforms.gin`) the map is linear, so it cannot bend the intensity curve.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import MAX_SEED, TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["RandConv", "RandConvd", "rand_conv_batch"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_rand_conv_args(kernel_sizes: Sequence[int], alpha_range: Sequence[float], eps: float) -> None:
    """Validate RandConv hyper-parameters, raising ``ValueError`` with a clear message."""
    ks = tuple(kernel_sizes) if isinstance(kernel_sizes, Sequence) else ()
    # Odd sizes only: padding k // 2 keeps the spatial shape only for odd k.
    if not ks or not all(isinstance(k, int) and k > 0 and k % 2 == 1 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(
            f"kernel_sizes must be a non-empty sequence of distinct positive odd integers, got {kernel_sizes!r}."
        )
    if len(alpha_range) != 2 or not 0.0 <= alpha_range[0] <= alpha_range[1] <= 1.0:
        raise ValueError(f"alpha_range must be (low, high) with 0 <= low <= high <= 1, got {alpha_range!r}.")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}.")


def _check_batch(x: object, name: str) -> None:
    """Shared input check of the batch functions: a float tensor of shape (B, C, H, W[, D])."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} expects a floating point torch.Tensor, got {getattr(x, 'dtype', type(x))}.")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} expects (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")


def _rescale_like(y: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max rescale every (sample, channel) of ``y`` onto the intensity range of ``ref``.

    A flat ``y`` (range below ``eps``) maps to the minimum of ``ref``. Inputs in [0, 1] that span it
    come back in [0, 1]; a dim slice (e.g. max 0.6) keeps its own range instead of being brightened.
    """
    flat_y, flat_r = y.flatten(2), ref.flatten(2)
    y_lo, y_hi = flat_y.amin(dim=2), flat_y.amax(dim=2)
    r_lo, r_hi = flat_r.amin(dim=2), flat_r.amax(dim=2)
    span = y_hi - y_lo
    scale = torch.where(span > eps, (r_hi - r_lo) / span.clamp_min(eps), torch.zeros_like(span))
    shape = y.shape[:2] + (1,) * (y.ndim - 2)
    return (y - y_lo.view(shape)) * scale.view(shape) + r_lo.view(shape)


def _draw_rand_conv_params(
    batch: int,
    channels: int,
    spatial_ndim: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
    kernel_sizes: Sequence[int],
    alpha_range: Sequence[float],
) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
    """Draw the random filters of a whole batch (private; exposed for testing).

    Returns:
        ``(size_index, weights, alpha)``: ``size_index[b]`` indexes ``kernel_sizes`` for sample ``b``;
        ``weights[k]`` has shape ``(n_k * channels, channels, k, ..., k)`` for the ``n_k`` samples of
        kernel size ``k`` in batch order; ``alpha`` has shape ``(batch,)``.
    """
    # Same convention as GIN: draw on the generator's device in float32 (a seed gives the same
    # filters whatever the input dtype), then move the small tensors.
    gen_device = generator.device if generator is not None else device
    draw = {"generator": generator, "device": gen_device}
    size_index = torch.randint(len(kernel_sizes), (batch,), **draw)
    weights = {}
    for i, k in enumerate(kernel_sizes):
        n_k = int((size_index == i).sum())
        if n_k == 0:
            continue
        # Kaiming-normal-like: std 1/sqrt(fan_in) keeps the output variance near the input's.
        std = 1.0 / math.sqrt(channels * k**spatial_ndim)
        w = torch.randn((n_k * channels, channels) + (k,) * spatial_ndim, **draw) * std
        weights[k] = w.to(device=device, dtype=dtype)
    low, high = alpha_range
    alpha = low + (high - low) * torch.rand(batch, **draw)
    return size_index.to(device), weights, alpha.to(device=device, dtype=dtype)


def _random_linear_conv(
    x: torch.Tensor, size_index: torch.Tensor, weights: dict[int, torch.Tensor], kernel_sizes: Sequence[int]
) -> torch.Tensor:
    """Filter every sample with its own drawn kernel: one grouped convolution per kernel size."""
    batch, channels, *spatial = x.shape
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    out = torch.empty_like(x)
    for i, k in enumerate(kernel_sizes):
        if k not in weights:  # no sample drew this size
            continue
        members = (size_index == i).nonzero().flatten()
        n_k = members.numel()
        # Fold the group into channels so groups=n_k gives every sample its own filter in one call.
        h = x.index_select(0, members).reshape(1, n_k * channels, *spatial)
        h = conv(h, weights[k], padding=k // 2, groups=n_k)
        out.index_copy_(0, members, h.reshape(n_k, channels, *spatial))
    return out


@torch.no_grad()
def rand_conv_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    mix: bool = True,
    alpha_range: Sequence[float] = (0.0, 1.0),
    renormalize: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Apply RandConv to a batch, with a different random linear filter for every sample.

    Follows `Xu et al., ICLR 2021 <https://arxiv.org/abs/2007.07841>`_: one conv layer C -> C with
    no bias and no nonlinearity, kernel size drawn per sample from ``kernel_sizes``, weights
    ~ N(0, 1 / (k^d * C)). The steps, in order:

    1. ``y = conv(x)`` (linear in ``x`` for a fixed draw);
    2. if ``renormalize``: ``y`` is min-max rescaled per sample and channel onto the input's own
       intensity range ``[min x, max x]``, because a random filter's output range is arbitrary (and
       may be contrast-inverted) while the network expects the input's range, [0, 1] here;
    3. if ``mix`` (the paper's "mix" variant): ``x' = alpha * x + (1 - alpha) * y`` with
       ``alpha ~ U(alpha_range)`` per sample. A convex mix of two images in the input's range stays
       in it, so no rescaling is needed afterwards.

    Args:
        x: float tensor of shape (B, C, H, W) or (B, C, H, W, D), on any device.
        generator: source of every random draw; ``None`` uses torch's default RNG. It may live on
            another device than ``x`` (the drawn filters are moved to ``x.device``).
        kernel_sizes: distinct odd kernel sizes to draw from, one draw per sample.
        mix: blend the filtered image with the input (the paper's "RC_mix").
        alpha_range: range of the per-sample weight of the input in the mix, within [0, 1].
        renormalize: rescale the filtered image onto the input's per-sample, per-channel range.
        eps: filtered images whose range is below ``eps`` are treated as flat.

    Returns:
        Augmented tensor with the shape, dtype and device of ``x`` (float16/bfloat16 are computed in
        float32). A MetaTensor input keeps its type and metadata.

    Raises:
        ValueError: for a non-tensor or non-float input, a rank other than 4 or 5, or invalid
            hyper-parameters.
    """
    _check_rand_conv_args(kernel_sizes, alpha_range, eps)
    _check_batch(x, "rand_conv_batch")
    # Plain tensor maths: MetaTensor dispatch is slow and its metadata is restored at the end.
    xt = x.as_subclass(torch.Tensor)
    if xt.dtype in _LOW_PRECISION:
        xt = xt.float()
    batch, channels, *spatial = xt.shape
    size_index, weights, alpha = _draw_rand_conv_params(
        batch, channels, len(spatial), generator, xt.device, xt.dtype, kernel_sizes, alpha_range
    )
    out = _random_linear_conv(xt, size_index, weights, kernel_sizes)
    if renormalize:
        out = _rescale_like(out, xt, eps)
    if mix:
        alpha = alpha.view((batch,) + (1,) * (xt.ndim - 1))
        out = alpha * xt + (1.0 - alpha) * out
    return convert_to_dst_type(out, dst=x, dtype=x.dtype)[0]


class RandConv(RandomizableTransform):
    """Randomly apply RandConv (a random linear convolution) to one channel-first image.

    See :py:func:`rand_conv_batch` and `Xu et al., ICLR 2021 <https://arxiv.org/abs/2007.07841>`_.
    All randomness comes from ``self.R``: it decides whether to apply the transform and draws an
    integer seed for a CPU ``torch.Generator``, so ``set_random_state`` reproduces outputs on any
    device.

    Args:
        prob: probability of applying the transform.
        kernel_sizes: distinct odd kernel sizes to draw from.
        mix: blend the filtered image with the input, weight ``alpha ~ U(alpha_range)`` on the input.
        alpha_range: range of the input's weight in the mix, within [0, 1].
        renormalize: rescale the filtered image onto the input's intensity range.
        eps: filtered images whose range is below ``eps`` are treated as flat.

    The output has the type (numpy array, torch tensor or MetaTensor), dtype and device of the input.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 1.0,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        mix: bool = True,
        alpha_range: Sequence[float] = (0.0, 1.0),
        renormalize: bool = True,
        eps: float = 1e-8,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        # Fail at pipeline construction rather than in the middle of training.
        _check_rand_conv_args(kernel_sizes, alpha_range, eps)
        self.kernel_sizes = tuple(kernel_sizes)
        self.mix = mix
        self.alpha_range = tuple(alpha_range)
        self.renormalize = renormalize
        self.eps = eps
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        """Decide whether to apply and draw the seed of the random filter from ``self.R``."""
        super().randomize(None)
        if not self._do_transform:
            return None
        self._seed = int(self.R.randint(MAX_SEED))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Apply the transform to ``img`` of shape (C, H, W) or (C, H, W, D).

        Args:
            img: channel-first float image (numpy array, torch tensor or MetaTensor).
            randomize: draw new random parameters first; ``False`` reuses the last draw.
        """
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        if len(img.shape) not in (3, 4):
            raise ValueError(f"RandConv expects a (C, H, W) or (C, H, W, D) image, got shape {tuple(img.shape)}.")
        img_t = convert_to_tensor(img, track_meta=False)
        out = rand_conv_batch(
            img_t[None],
            generator=torch.Generator().manual_seed(self._seed),
            kernel_sizes=self.kernel_sizes,
            mix=self.mix,
            alpha_range=self.alpha_range,
            renormalize=self.renormalize,
            eps=self.eps,
        )[0]
        return convert_to_dst_type(out, dst=img)[0]


class RandConvd(RandomizableTransform, MapTransform):
    """Dictionary-based version of :py:class:`RandConv`.

    One draw per call is shared by all ``keys``. Labels are left alone simply by not listing them
    in ``keys``.

    Args:
        keys: keys of the images to transform. See also: :py:class:`monai.transforms.MapTransform`.
        prob: probability of applying the transform.
        kernel_sizes: distinct odd kernel sizes to draw from.
        mix: blend the filtered image with the input.
        alpha_range: range of the input's weight in the mix, within [0, 1].
        renormalize: rescale the filtered image onto the input's intensity range.
        eps: filtered images whose range is below ``eps`` are treated as flat.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = RandConv.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        mix: bool = True,
        alpha_range: Sequence[float] = (0.0, 1.0),
        renormalize: bool = True,
        eps: float = 1e-8,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        # prob is decided here, so the inner transform always applies once called.
        self.rand_conv = RandConv(1.0, kernel_sizes, mix, alpha_range, renormalize, eps)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandConvd:
        super().set_random_state(seed, state)
        self.rand_conv.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        # All keys share one random filter, e.g. co-registered contrasts of one subject.
        self.rand_conv.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rand_conv(d[key], randomize=False)
        return d
