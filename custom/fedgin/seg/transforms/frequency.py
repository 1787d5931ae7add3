"""Amplitude-spectrum mixing: low-frequency amplitude interpolation in Fourier space.

In the spirit of FDA (Yang & Soatto, `FDA: Fourier Domain Adaptation for Semantic Segmentation
<https://arxiv.org/abs/2004.05498>`_, CVPR 2020) and FedDG's continuous frequency-space
interpolation (Liu et al., `FedDG: Federated Domain Generalization on Medical Image Segmentation via
Episodic Learning in Continuous Frequency Space <https://arxiv.org/abs/2103.06030>`_, CVPR 2021).
The phase of an image's spectrum carries its structure (edges, shapes: what the labels describe);
the low-frequency part of its amplitude carries the "style" (overall intensity, contrast, smooth
shading). Interpolating only that part towards another image's amplitude changes the style and
keeps the shapes.

Privacy: an amplitude spectrum is a summary of an image (intensity statistics, texture, low
frequency appearance; with the phase of a similar image it can be visualised). FedDG shares a bank
of amplitude spectra across sites; that leaks information about the other sites' images. The default
here never shares anything: each sample's reference is another sample of the *same* batch. An
explicit ``reference_amplitudes`` bank is the caller's decision, and only crosses sites if the
caller builds it from other sites' images.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import MAX_SEED, TransformBackends, convert_to_dst_type, convert_to_tensor

from fedgin.seg.transforms.randconv import _check_batch, _rescale_like

__all__ = ["RandAmplitudeMix", "RandAmplitudeMixd", "amplitude_mix_batch", "amplitude_spectrum"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_amplitude_mix_args(beta_range: Sequence[float], lambda_range: Sequence[float], eps: float) -> None:
    """Validate the hyper-parameters, raising ``ValueError`` with a clear message."""
    # beta is a half-width relative to the smallest spatial size: 0.5 already covers the spectrum.
    if len(beta_range) != 2 or not 0.0 <= beta_range[0] <= beta_range[1] <= 0.5:
        raise ValueError(f"beta_range must be (low, high) with 0 <= low <= high <= 0.5, got {beta_range!r}.")
    if len(lambda_range) != 2 or not 0.0 <= lambda_range[0] <= lambda_range[1] <= 1.0:
        raise ValueError(f"lambda_range must be (low, high) with 0 <= low <= high <= 1, got {lambda_range!r}.")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}.")


def _check_bank(bank: object, channels: int, spatial: Sequence[int]) -> None:
    if not isinstance(bank, torch.Tensor) or not bank.is_floating_point():
        raise ValueError(
            f"reference_amplitudes must be a floating point torch.Tensor, got {getattr(bank, 'dtype', type(bank))}."
        )
    if bank.ndim != 2 + len(spatial) or bank.shape[0] < 1 or tuple(bank.shape[1:]) != (channels, *spatial):
        raise ValueError(
            f"reference_amplitudes must have shape (N >= 1, {channels}, {', '.join(map(str, spatial))}) "
            f"like amplitude_spectrum(images), got {tuple(bank.shape)}."
        )


def amplitude_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Amplitude ``|FFT(x)|`` over the spatial dims of a (B, C, H, W[, D]) batch, unshifted.

    This is the format of ``reference_amplitudes`` in :py:func:`amplitude_mix_batch`.
    """
    _check_batch(x, "amplitude_spectrum")
    xt = x.as_subclass(torch.Tensor)
    if xt.dtype in _LOW_PRECISION:
        xt = xt.float()
    return torch.fft.fftn(xt, dim=tuple(range(2, xt.ndim))).abs()


def _low_frequency_mask(spatial: Sequence[int], half_width: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, *rfft_spatial) mask of the centred (2b+1)^d band, ``b = half_width[i]`` per sample.

    A frequency belongs to the band when every integer frequency index satisfies ``|k| <= b``: the
    ``[c - b, c + b]`` box around the centre ``c = n // 2`` of the fftshift-ed spectrum, as in FDA.
    """
    device = half_width.device
    k_max = torch.zeros((), dtype=torch.long, device=device)
    for axis, n in enumerate(spatial):
        last = axis == len(spatial) - 1
        # rfft keeps only the non-negative frequencies of the last axis; the rest follow by symmetry.
        k = torch.arange(n // 2 + 1, device=device) if last else torch.fft.fftfreq(n, 1.0 / n, device=device)
        shape = [1] * len(spatial)
        shape[axis] = -1
        k_max = torch.maximum(k_max, k.abs().round().long().view(shape))
    return k_max[None, None] <= half_width.view((-1, 1) + (1,) * len(spatial))


def _draw_amplitude_mix_params(
    batch: int,
    n_bank: int,
    spatial: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    beta_range: Sequence[float],
    lambda_range: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw band half-widths, interpolation weights and reference indices (private; for testing).

    Returns:
        ``(half_width, lam, reference)``, each of shape ``(batch,)``: ``half_width`` (int) is
        ``floor(beta * min(spatial))`` with ``beta ~ U(beta_range)``, ``lam ~ U(lambda_range)`` (float32),
        ``reference`` indexes the batch (``n_bank == 0``) or the bank.
    """
    gen_device = generator.device if generator is not None else device
    draw = {"generator": generator, "device": gen_device}
    beta = beta_range[0] + (beta_range[1] - beta_range[0]) * torch.rand(batch, **draw, dtype=torch.float64)
    half_width = torch.floor(beta * min(spatial)).long()
    lam = lambda_range[0] + (lambda_range[1] - lambda_range[0]) * torch.rand(batch, **draw)
    if n_bank:
        reference = torch.randint(n_bank, (batch,), **draw)
    else:
        # A random cyclic order: every sample gets another sample of the batch as its partner
        # (a plain permutation would leave some samples paired with themselves, i.e. unchanged).
        order = torch.randperm(batch, **draw)
        reference = torch.empty_like(order)
        reference[order] = order.roll(-1)
    return half_width.to(device), lam.to(device), reference.to(device)


@torch.no_grad()
def amplitude_mix_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    beta_range: Sequence[float] = (0.0, 0.1),
    lambda_range: Sequence[float] = (0.0, 1.0),
    reference_amplitudes: torch.Tensor | None = None,
    rescale: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Interpolate the low-frequency amplitude of every sample towards a reference amplitude.

    Per sample: ``F = FFT(x)`` over the spatial dims, ``A = |F|``, ``phi = angle(F)``; inside the
    centred low-frequency box of half-width ``b = floor(beta * min(H, W[, D]))`` (``beta ~
    U(beta_range)``, the FDA/FedDG parameterisation ``L``), ``A`` becomes ``(1 - lam) * A + lam * A_ref``
    with ``lam ~ U(lambda_range)``; outside it ``A`` is kept. The image is
    ``IFFT(A' * exp(i * phi))``: the mixed amplitude stays symmetric, so the result is real (computed
    with ``rfftn``/``irfftn``, which is the real part of the full inverse FFT). Finally, if
    ``rescale``, each sample and channel is min-max rescaled onto its input's own range (for our
    [0, 1] inputs that span [0, 1] this is [0, 1]; a dim slice keeps its range rather than being
    brightened).

    The reference ``A_ref`` is:

    * by default, the amplitude of another sample of the same batch (a random cyclic pairing, so
      every sample gets a partner other than itself when B >= 2; a batch of one is returned
      unchanged). Nothing leaves the site.
    * with ``reference_amplitudes``, a bank entry drawn uniformly per sample. FedDG builds this bank
      from all sites and shares it, which leaks the other sites' amplitude spectra (intensity
      statistics, texture); see the module docstring.

    Args:
        x: float tensor of shape (B, C, H, W) or (B, C, H, W, D), on any device.
        generator: source of every random draw; ``None`` uses torch's default RNG. It may live on
            another device than ``x``.
        beta_range: range of the relative half-width of the low-frequency box, within [0, 0.5].
            ``b = 0`` mixes only the mean (the DC term).
        lambda_range: range of the per-sample interpolation weight of the reference, within [0, 1].
        reference_amplitudes: optional bank of shape (N, C, *spatial) as returned by
            :py:func:`amplitude_spectrum`, on any device.
        rescale: rescale each output sample and channel onto its input's intensity range.
        eps: outputs whose range is below ``eps`` are treated as flat when rescaling.

    Returns:
        Augmented tensor with the shape, dtype and device of ``x`` (float16/bfloat16 are computed in
        float32). A MetaTensor input keeps its type and metadata.

    Raises:
        ValueError: for a non-tensor or non-float input, a rank other than 4 or 5, a bank of the
            wrong shape, or invalid hyper-parameters.
    """
    _check_amplitude_mix_args(beta_range, lambda_range, eps)
    _check_batch(x, "amplitude_mix_batch")
    xt = x.as_subclass(torch.Tensor)
    if xt.dtype in _LOW_PRECISION:  # half-precision FFTs only exist for power-of-two sizes on CUDA
        xt = xt.float()
    batch, channels, *spatial = xt.shape
    if reference_amplitudes is not None:
        _check_bank(reference_amplitudes, channels, spatial)
    n_bank = 0 if reference_amplitudes is None else reference_amplitudes.shape[0]
    half_width, lam, reference = _draw_amplitude_mix_params(
        batch, n_bank, spatial, generator, xt.device, beta_range, lambda_range
    )

    dims = tuple(range(2, xt.ndim))
    spectrum = torch.fft.rfftn(xt, dim=dims)
    amplitude, phase = spectrum.abs(), spectrum.angle()
    if reference_amplitudes is None:
        ref = amplitude.index_select(0, reference)
    else:
        bank = reference_amplitudes.as_subclass(torch.Tensor)
        # rfftn(x) is fftn(x) cut to the non-negative frequencies of the last axis.
        ref = bank.index_select(0, reference.to(bank.device))[..., : spatial[-1] // 2 + 1]
        ref = ref.to(device=xt.device, dtype=amplitude.dtype)
    lam = lam.to(amplitude.dtype).view((batch,) + (1,) * (xt.ndim - 1))
    band = _low_frequency_mask(spatial, half_width)
    amplitude = torch.where(band, (1.0 - lam) * amplitude + lam * ref, amplitude)
    out = torch.fft.irfftn(torch.polar(amplitude, phase), s=spatial, dim=dims)
    if rescale:
        out = _rescale_like(out, xt, eps)
    return convert_to_dst_type(out, dst=x, dtype=x.dtype)[0]


class RandAmplitudeMix(RandomizableTransform):
    """Randomly interpolate the low-frequency amplitude of one image towards a bank entry.

    A single image has no batch partner, so this transform always draws its reference from
    ``reference_amplitudes`` (see :py:func:`amplitude_mix_batch`). Build the bank from the site's own
    images (``amplitude_spectrum(images)``) to keep everything local; a bank of other sites'
    spectra is FedDG-style sharing and leaks information about their images.

    All randomness comes from ``self.R``: it decides whether to apply the transform and draws an
    integer seed for a CPU ``torch.Generator``, so ``set_random_state`` reproduces outputs.

    Args:
        reference_amplitudes: bank of shape (N, C, *spatial), matching the images' shape.
        prob: probability of applying the transform.
        beta_range: range of the relative half-width of the low-frequency box, within [0, 0.5].
        lambda_range: range of the interpolation weight of the reference, within [0, 1].
        rescale: rescale the output onto the input's intensity range.
        eps: outputs whose range is below ``eps`` are treated as flat when rescaling.

    The output has the type (numpy array, torch tensor or MetaTensor), dtype and device of the input.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        reference_amplitudes: torch.Tensor,
        prob: float = 1.0,
        beta_range: Sequence[float] = (0.0, 0.1),
        lambda_range: Sequence[float] = (0.0, 1.0),
        rescale: bool = True,
        eps: float = 1e-8,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        _check_amplitude_mix_args(beta_range, lambda_range, eps)
        if not isinstance(reference_amplitudes, torch.Tensor) or reference_amplitudes.ndim not in (4, 5):
            raise ValueError(
                "reference_amplitudes must be a (N, C, H, W) or (N, C, H, W, D) tensor, "
                f"got {getattr(reference_amplitudes, 'shape', type(reference_amplitudes))}."
            )
        self.reference_amplitudes = reference_amplitudes
        self.beta_range = tuple(beta_range)
        self.lambda_range = tuple(lambda_range)
        self.rescale = rescale
        self.eps = eps
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        """Decide whether to apply and draw the seed of the random parameters from ``self.R``."""
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
            raise ValueError(
                f"RandAmplitudeMix expects a (C, H, W) or (C, H, W, D) image, got shape {tuple(img.shape)}."
            )
        img_t = convert_to_tensor(img, track_meta=False)
        out = amplitude_mix_batch(
            img_t[None],
            generator=torch.Generator().manual_seed(self._seed),
            beta_range=self.beta_range,
            lambda_range=self.lambda_range,
            reference_amplitudes=self.reference_amplitudes,
            rescale=self.rescale,
            eps=self.eps,
        )[0]
        return convert_to_dst_type(out, dst=img)[0]


class RandAmplitudeMixd(RandomizableTransform, MapTransform):
    """Dictionary-based version of :py:class:`RandAmplitudeMix`.

    One draw per call (band, weight and bank entry) is shared by all ``keys``. Labels are left alone
    simply by not listing them in ``keys``.

    Args:
        keys: keys of the images to transform. See also: :py:class:`monai.transforms.MapTransform`.
        reference_amplitudes: bank of shape (N, C, *spatial), matching the images' shape.
        prob: probability of applying the transform.
        beta_range: range of the relative half-width of the low-frequency box, within [0, 0.5].
        lambda_range: range of the interpolation weight of the reference, within [0, 1].
        rescale: rescale the output onto the input's intensity range.
        eps: outputs whose range is below ``eps`` are treated as flat when rescaling.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = RandAmplitudeMix.backend

    def __init__(
        self,
        keys: KeysCollection,
        reference_amplitudes: torch.Tensor,
        prob: float = 1.0,
        beta_range: Sequence[float] = (0.0, 0.1),
        lambda_range: Sequence[float] = (0.0, 1.0),
        rescale: bool = True,
        eps: float = 1e-8,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        # prob is decided here, so the inner transform always applies once called.
        self.mixer = RandAmplitudeMix(reference_amplitudes, 1.0, beta_range, lambda_range, rescale, eps)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandAmplitudeMixd:
        super().set_random_state(seed, state)
        self.mixer.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.mixer.randomize()
        for key in self.key_iterator(d):
            d[key] = self.mixer(d[key], randomize=False)
        return d
