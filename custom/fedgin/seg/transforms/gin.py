"""GIN: Global Intensity Non-linear augmentation.

Implements the random shallow convolutional network ("GINGroupConv") of Ouyang et al.,
`Causality-inspired single-source domain generalization for medical image segmentation
<https://arxiv.org/abs/2111.12525>`_, IEEE TMI 2022. Each sample is passed through its own
freshly drawn random network, blended with the original image and rescaled to the original
Frobenius norm. The appearance changes while the shapes (and hence the labels) stay put.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import MAX_SEED, TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["RandGIN", "RandGINd", "gin_batch"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_gin_args(
    n_layers: int, interm_channels: int, kernel_sizes: Sequence[int], alpha_range: Sequence[float], eps: float
) -> None:
    """Validate GIN hyper-parameters, raising ``ValueError`` with a clear message."""
    if not isinstance(n_layers, int) or n_layers < 2:
        raise ValueError(f"n_layers must be an integer >= 2 (input and output conv), got {n_layers!r}.")
    if not isinstance(interm_channels, int) or interm_channels < 1:
        raise ValueError(f"interm_channels must be a positive integer, got {interm_channels!r}.")
    ks = tuple(kernel_sizes) if isinstance(kernel_sizes, Sequence) else ()
    # Odd sizes only: padding k // 2 keeps the spatial shape only for odd k.
    if not ks or not all(isinstance(k, int) and k > 0 and k % 2 == 1 for k in ks):
        raise ValueError(f"kernel_sizes must be a non-empty sequence of positive odd integers, got {kernel_sizes!r}.")
    if len(alpha_range) != 2 or not 0.0 <= alpha_range[0] <= alpha_range[1] <= 1.0:
        raise ValueError(f"alpha_range must be (low, high) with 0 <= low <= high <= 1, got {alpha_range!r}.")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}.")


def _draw_gin_params(
    batch: int,
    channels: int,
    spatial_ndim: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
    n_layers: int,
    interm_channels: int,
    kernel_sizes: Sequence[int],
    alpha_range: Sequence[float],
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Draw the random networks of a whole batch (private; exposed for testing).

    Returns:
        ``(layers, alpha)``: ``layers[i] = (weight, bias)`` with weight of shape
        ``(batch * c_out, c_in, k, ..., k)`` and bias of shape ``(batch * c_out,)``; rows
        ``[b * c_out:(b + 1) * c_out]`` belong to sample ``b``. ``alpha`` has shape ``(batch,)``.
    """
    # Draw on the generator's own device (a CPU generator cannot feed CUDA sampling), always in
    # float32 so a seed gives the same networks whatever the input dtype, then move the (small) tensors.
    gen_device = generator.device if generator is not None else device
    draw = {"generator": generator, "device": gen_device}
    widths = [channels] + [interm_channels] * (n_layers - 1) + [channels]
    layers = []
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        k = kernel_sizes[int(torch.randint(len(kernel_sizes), (1,), **draw))]
        weight = torch.randn((batch * c_out, c_in) + (k,) * spatial_ndim, **draw)
        bias = torch.randn(batch * c_out, **draw)
        layers.append((weight.to(device=device, dtype=dtype), bias.to(device=device, dtype=dtype)))
    low, high = alpha_range
    alpha = low + (high - low) * torch.rand(batch, **draw)
    return layers, alpha.to(device=device, dtype=dtype)


@torch.no_grad()
def gin_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    n_layers: int = 4,
    interm_channels: int = 2,
    kernel_sizes: Sequence[int] = (1, 3),
    alpha_range: Sequence[float] = (0.0, 1.0),
    eps: float = 1e-5,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Apply GIN to a batch, with a different random network for every sample.

    Follows ``GINGroupConv`` of `Ouyang et al., IEEE TMI 2022 <https://arxiv.org/abs/2111.12525>`_:
    ``n_layers`` convolutions (C -> interm -> ... -> interm -> C) with weights and biases ~ N(0, 1),
    LeakyReLU between layers (none after the last), kernel size drawn per layer from
    ``kernel_sizes``. All per-sample networks run as one grouped convolution per layer. The result
    is blended as ``alpha * GIN(x) + (1 - alpha) * x`` with ``alpha ~ U(alpha_range)`` per sample,
    then rescaled so each sample keeps the Frobenius norm of its input.

    Args:
        x: float tensor of shape (B, C, H, W) or (B, C, H, W, D), on any device.
        generator: source of every random draw; ``None`` uses torch's default RNG. It may live on
            another device than ``x`` (the drawn weights are moved to ``x.device``).
        n_layers: number of conv layers, at least 2.
        interm_channels: channels of the hidden layers.
        kernel_sizes: odd kernel sizes to draw from, one draw per layer (shared by the batch).
        alpha_range: range of the per-sample blending weight, within [0, 1].
        eps: added to the output norm before rescaling, to avoid division by zero.
        negative_slope: LeakyReLU slope.

    Returns:
        Augmented tensor with the shape, dtype and device of ``x`` (float16/bfloat16 are computed in
        float32). A MetaTensor input keeps its type and metadata.

    Raises:
        ValueError: for a non-tensor or non-float input, a rank other than 4 or 5, or invalid
            hyper-parameters.
    """
    _check_gin_args(n_layers, interm_channels, kernel_sizes, alpha_range, eps)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"gin_batch expects a floating point torch.Tensor, got {getattr(x, 'dtype', type(x))}.")
    if x.ndim not in (4, 5):
        raise ValueError(f"gin_batch expects (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")
    # Plain tensor maths: MetaTensor dispatch is slow and its metadata is restored at the end.
    xt = x.as_subclass(torch.Tensor)
    if xt.dtype in _LOW_PRECISION:  # N(0, 1) weights stacked over layers overflow half precision easily
        xt = xt.float()
    batch, channels, *spatial = xt.shape
    layers, alpha = _draw_gin_params(
        batch,
        channels,
        len(spatial),
        generator,
        xt.device,
        xt.dtype,
        n_layers,
        interm_channels,
        kernel_sizes,
        alpha_range,
    )
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    # Fold the batch into channels so groups=batch gives every sample its own network in one call.
    h = xt.reshape(1, batch * channels, *spatial)
    if h.device.type == "cpu":
        # oneDNN runs grouped convs of 1-2 channels per group ~1.7x faster channels-last
        # (bench/run_bench.py, section gin); CUDA keeps the layout it was given.
        h = h.contiguous(memory_format=torch.channels_last if h.ndim == 4 else torch.channels_last_3d)
    for i, (weight, bias) in enumerate(layers):
        h = conv(h, weight, bias, padding=weight.shape[-1] // 2, groups=batch)
        if i < len(layers) - 1:
            h = F.leaky_relu_(h, negative_slope)
    h = h.contiguous().reshape(xt.shape)

    per_sample = (batch,) + (1,) * (xt.ndim - 1)
    mixed = torch.lerp(xt, h, alpha.view(per_sample))  # alpha * GIN(x) + (1 - alpha) * x
    norm_in = torch.linalg.vector_norm(xt.reshape(batch, -1), dim=1).view(per_sample)
    norm_out = torch.linalg.vector_norm(mixed.reshape(batch, -1), dim=1).view(per_sample)
    out = mixed.mul_(norm_in / (norm_out + eps))
    return convert_to_dst_type(out, dst=x, dtype=x.dtype)[0]


class RandGIN(RandomizableTransform):
    """Randomly apply GIN (Global Intensity Non-linear augmentation) to one channel-first image.

    The random network is that of ``GINGroupConv`` in `Causality-inspired single-source domain
    generalization for medical image segmentation <https://arxiv.org/abs/2111.12525>`_ (Ouyang et
    al., IEEE TMI 2022); see :py:func:`gin_batch`. All randomness comes from ``self.R``: it decides
    whether to apply the transform and draws an integer seed for a CPU ``torch.Generator``, so
    ``set_random_state`` reproduces outputs on any device.

    Args:
        prob: probability of applying the transform.
        n_layers: number of conv layers, at least 2.
        interm_channels: channels of the hidden layers.
        kernel_sizes: odd kernel sizes to draw from, one draw per layer.
        alpha_range: range of the blending weight between GIN output and input, within [0, 1].
        eps: added to the output norm before rescaling to the input's Frobenius norm.

    The output has the type (numpy array, torch tensor or MetaTensor), dtype and device of the input.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 1.0,
        n_layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        alpha_range: Sequence[float] = (0.0, 1.0),
        eps: float = 1e-5,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        # Fail at pipeline construction rather than in the middle of training.
        _check_gin_args(n_layers, interm_channels, kernel_sizes, alpha_range, eps)
        self.n_layers = n_layers
        self.interm_channels = interm_channels
        self.kernel_sizes = tuple(kernel_sizes)
        self.alpha_range = tuple(alpha_range)
        self.eps = eps
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        """Decide whether to apply and draw the seed of the random network from ``self.R``."""
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
            raise ValueError(f"RandGIN expects a (C, H, W) or (C, H, W, D) image, got shape {tuple(img.shape)}.")
        img_t = convert_to_tensor(img, track_meta=False)
        generator = torch.Generator().manual_seed(self._seed)
        out = gin_batch(
            img_t[None],
            generator=generator,
            n_layers=self.n_layers,
            interm_channels=self.interm_channels,
            kernel_sizes=self.kernel_sizes,
            alpha_range=self.alpha_range,
            eps=self.eps,
        )[0]
        return convert_to_dst_type(out, dst=img)[0]


class RandGINd(RandomizableTransform, MapTransform):
    """Dictionary-based version of :py:class:`RandGIN`.

    One draw per call is shared by all ``keys``. Labels are left alone simply by not listing them
    in ``keys``.

    Args:
        keys: keys of the images to transform. See also: :py:class:`monai.transforms.MapTransform`.
        prob: probability of applying the transform.
        n_layers: number of conv layers, at least 2.
        interm_channels: channels of the hidden layers.
        kernel_sizes: odd kernel sizes to draw from, one draw per layer.
        alpha_range: range of the blending weight between GIN output and input, within [0, 1].
        eps: added to the output norm before rescaling to the input's Frobenius norm.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = RandGIN.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        n_layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        alpha_range: Sequence[float] = (0.0, 1.0),
        eps: float = 1e-5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        # prob is decided here, so the inner transform always applies once called.
        self.rand_gin = RandGIN(1.0, n_layers, interm_channels, kernel_sizes, alpha_range, eps)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandGINd:
        super().set_random_state(seed, state)
        self.rand_gin.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        # All keys share one random network, e.g. co-registered contrasts of one subject.
        self.rand_gin.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rand_gin(d[key], randomize=False)
        return d
