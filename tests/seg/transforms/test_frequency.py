"""Tests for the amplitude-spectrum mixing augmentation (fedgin.seg.transforms.frequency)."""

import numpy as np
import pytest
import torch
from fedgin.seg.transforms import RandAmplitudeMix, RandAmplitudeMixd, amplitude_mix_batch, amplitude_spectrum
from fedgin.seg.transforms.frequency import _draw_amplitude_mix_params, _low_frequency_mask
from monai.data import MetaTensor


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed)).to(dtype)


def _spectrum(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftn(x.double(), dim=tuple(range(2, x.ndim)))


def _band(shape, b: int) -> torch.Tensor:
    """Full-spectrum boolean mask of |k_d| <= b for every spatial dim (FDA's centred box, unshifted)."""
    grids = torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n).abs() for n in shape], indexing="ij")
    return torch.stack(grids).amax(dim=0) <= b


SHAPES = [(4, 2, 32, 24), (3, 1, 16, 12, 10)]
RAW = {"rescale": False}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_keeps_shape_dtype_device(shape, dtype):
    x = _image(shape, dtype=dtype)
    out = amplitude_mix_batch(x, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert type(out) is torch.Tensor
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_phase_is_kept(shape):
    x = _image(shape, seed=2).double()
    out = amplitude_mix_batch(x, generator=_gen(3), beta_range=(0.2, 0.3), lambda_range=(0.5, 1.0), **RAW)
    assert not torch.allclose(out, x)
    f_in, f_out = _spectrum(x), _spectrum(out)
    # Where both amplitudes are non-negligible the unit phasors agree.
    valid = (f_in.abs() > 1e-6) & (f_out.abs() > 1e-6)
    assert valid.float().mean() > 0.99
    phasor_in, phasor_out = f_in / f_in.abs(), f_out / f_out.abs()
    torch.testing.assert_close(phasor_out[valid], phasor_in[valid], rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rescale", [False, True])
def test_lambda_zero_is_identity(shape, rescale):
    x = _image(shape, seed=4).double()
    out = amplitude_mix_batch(x, generator=_gen(5), beta_range=(0.5, 0.5), lambda_range=(0.0, 0.0), rescale=rescale)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_only_the_low_band_amplitude_changes(shape):
    x = _image(shape, seed=6).double()
    beta = 0.25
    b = int(np.floor(beta * min(shape[2:])))
    out = amplitude_mix_batch(x, generator=_gen(7), beta_range=(beta, beta), lambda_range=(0.5, 1.0), **RAW)
    a_in, a_out = _spectrum(x).abs(), _spectrum(out).abs()
    band = _band(shape[2:], b).expand_as(a_in)
    torch.testing.assert_close(a_out[~band], a_in[~band], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(a_out[band], a_in[band])


def test_lambda_one_takes_the_partners_low_band():
    x = _image((2, 1, 20, 20), seed=8).double()
    x[1] = x[1] * 3.0 + 1.0  # a very different DC term and contrast
    b = 2
    out = amplitude_mix_batch(x, generator=_gen(9), beta_range=(0.1, 0.1), lambda_range=(1.0, 1.0), **RAW)
    a_in, a_out = _spectrum(x).abs(), _spectrum(out).abs()
    band = _band((20, 20), b)
    # With two samples the only other sample is the partner: they swap their low bands.
    torch.testing.assert_close(a_out[0][:, band], a_in[1][:, band])
    torch.testing.assert_close(a_out[1][:, band], a_in[0][:, band])


def test_partners_are_other_samples_of_the_batch():
    for seed in range(5):
        _, _, reference = _draw_amplitude_mix_params(7, 0, (8, 8), _gen(seed), torch.device("cpu"), (0, 0.1), (0, 1))
        assert (reference != torch.arange(7)).all()
        assert sorted(reference.tolist()) == list(range(7))


def test_single_sample_without_bank_is_unchanged():
    x = _image((1, 1, 16, 16), seed=10)
    torch.testing.assert_close(amplitude_mix_batch(x, generator=_gen(11)), x)


def test_reference_bank_is_used():
    x = _image((3, 1, 16, 16), seed=12).double()
    ref_img = torch.ones(1, 1, 16, 16, dtype=torch.float64) * 5.0
    bank = amplitude_spectrum(ref_img).float()  # any float dtype and device
    kwargs = {"beta_range": (0, 0), "lambda_range": (1, 1), "reference_amplitudes": bank}
    out = amplitude_mix_batch(x, generator=_gen(13), **kwargs, **RAW)
    # b = 0 swaps only the DC amplitude: every sample takes the reference's mean (5.0).
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.full((3,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(out - out.mean(dim=(2, 3), keepdim=True), x - x.mean(dim=(2, 3), keepdim=True))


def test_low_frequency_mask_matches_fftshift_box():
    spatial = (9, 8)
    half_width = torch.tensor([0, 1, 3])
    mask = _low_frequency_mask(spatial, half_width)
    assert mask.shape == (3, 1, 9, 5)
    for i, b in enumerate(half_width.tolist()):
        full = torch.zeros(spatial, dtype=torch.bool)
        c = [n // 2 for n in spatial]
        full[c[0] - b : c[0] + b + 1, c[1] - b : c[1] + b + 1] = True
        full = torch.fft.ifftshift(full)
        assert torch.equal(mask[i, 0], full[:, : spatial[1] // 2 + 1])


def test_rescaled_output_stays_in_input_range():
    x = _image((4, 2, 16, 16), seed=14) * 0.5 + 0.2
    out = amplitude_mix_batch(x, generator=_gen(15), beta_range=(0.1, 0.3))
    torch.testing.assert_close(out.flatten(2).amin(2), x.flatten(2).amin(2))
    torch.testing.assert_close(out.flatten(2).amax(2), x.flatten(2).amax(2))


def test_same_generator_seed_reproduces():
    x = _image((4, 1, 16, 16))
    a, b = amplitude_mix_batch(x, generator=_gen(16)), amplitude_mix_batch(x, generator=_gen(16))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, amplitude_mix_batch(x, generator=_gen(17)))


def test_metatensor_keeps_type_and_meta():
    x = MetaTensor(_image((2, 1, 8, 8)), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    out = amplitude_mix_batch(x, generator=_gen(18))
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, x.affine)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_with_cpu_generator_and_cpu_bank():
    x = _image((4, 1, 16, 16))
    out = amplitude_mix_batch(x.cuda(), generator=_gen(19))
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), amplitude_mix_batch(x, generator=_gen(19)), rtol=1e-4, atol=1e-4)
    bank = amplitude_spectrum(_image((3, 1, 16, 16), seed=20))
    g = torch.Generator(device="cuda").manual_seed(21)
    assert amplitude_mix_batch(x.cuda(), generator=g, reference_amplitudes=bank).is_cuda


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (torch.ones(1, 1, 8, 8, dtype=torch.int64), {}),
        (np.ones((1, 1, 8, 8), np.float32), {}),
        (torch.ones(1, 8, 8), {}),
        (torch.ones(1, 1, 8), {}),
        (torch.ones(1, 1, 2, 8, 8, 8), {}),
        (torch.ones(1, 1, 8, 8), {"beta_range": (-0.1, 0.1)}),
        (torch.ones(1, 1, 8, 8), {"beta_range": (0.1, 0.6)}),
        (torch.ones(1, 1, 8, 8), {"lambda_range": (0.5, 0.2)}),
        (torch.ones(1, 1, 8, 8), {"lambda_range": (0.0, 1.5)}),
        (torch.ones(1, 1, 8, 8), {"reference_amplitudes": torch.ones(2, 1, 8, 6)}),
        (torch.ones(1, 1, 8, 8), {"reference_amplitudes": torch.ones(2, 2, 8, 8)}),
        (torch.ones(1, 1, 8, 8), {"reference_amplitudes": torch.ones(0, 1, 8, 8)}),
        (torch.ones(1, 1, 8, 8), {"reference_amplitudes": np.ones((2, 1, 8, 8))}),
    ],
)
def test_invalid_inputs_raise(x, kwargs):
    with pytest.raises(ValueError):
        amplitude_mix_batch(x, **kwargs)


def test_amplitude_spectrum_shape_and_checks():
    x = _image((2, 1, 8, 6))
    assert amplitude_spectrum(x).shape == x.shape
    with pytest.raises(ValueError):
        amplitude_spectrum(torch.ones(8, 8))


def _bank(shape=(3, 1, 16, 12), seed=30):
    return amplitude_spectrum(_image(shape, seed=seed) * 2.0)


def test_transform_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandAmplitudeMix(_bank())(torch.ones(16, 12))
    with pytest.raises(ValueError):
        RandAmplitudeMix(torch.ones(3, 16))
    with pytest.raises(ValueError):
        RandAmplitudeMix(_bank(), beta_range=(0.0, 0.9))
    with pytest.raises(ValueError):
        RandAmplitudeMixd(keys="image", reference_amplitudes=_bank(), lambda_range=(0.0, 2.0))
    with pytest.raises(ValueError):  # bank and image shapes differ
        RandAmplitudeMix(_bank())(torch.ones(1, 16, 16))


@pytest.mark.parametrize(
    "img, bank",
    [
        (np.random.default_rng(0).random((1, 16, 12)).astype(np.float32), _bank()),
        (_image((2, 16, 12), dtype=torch.float64), _bank((3, 2, 16, 12))),
        (
            MetaTensor(_image((1, 8, 8, 6)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))),
            _bank((2, 1, 8, 8, 6)),
        ),
    ],
    ids=["numpy-2d", "tensor-2d", "metatensor-3d"],
)
def test_transform_keeps_type_and_reproduces(img, bank):
    def make(seed):
        return RandAmplitudeMix(bank, beta_range=(0.1, 0.3)).set_random_state(seed)

    out = make(31)(img)
    assert type(out) is type(img) and out.shape == img.shape and out.dtype == img.dtype
    if isinstance(img, MetaTensor):
        torch.testing.assert_close(out.affine, img.affine)
    np.testing.assert_allclose(np.asarray(out), np.asarray(make(31)(img)))
    assert not np.allclose(np.asarray(out), np.asarray(img))
    assert not np.allclose(np.asarray(out), np.asarray(make(32)(img)))


def test_prob_zero_is_identity():
    img = _image((1, 16, 12))
    assert torch.equal(RandAmplitudeMix(_bank(), prob=0.0)(img), img)
    d = {"image": img, "label": torch.ones(1, 16, 12)}
    out = RandAmplitudeMixd(keys="image", reference_amplitudes=_bank(), prob=0.0)(d)
    assert torch.equal(out["image"], img) and torch.equal(out["label"], d["label"])


def test_dict_label_untouched_keys_share_draw_and_reproduce():
    label = torch.randint(0, 3, (1, 16, 12), generator=_gen(33))
    img = _image((1, 16, 12))
    data = {"a": img, "b": img.clone(), "label": label.clone()}
    t = RandAmplitudeMixd(keys=["a", "b"], reference_amplitudes=_bank(), beta_range=(0.1, 0.3))
    assert t.set_random_state(34) is t
    out = t(data)
    assert torch.equal(out["label"], label)
    assert not torch.allclose(out["a"], img)
    torch.testing.assert_close(out["a"], out["b"])
    again = RandAmplitudeMixd(keys=["a", "b"], reference_amplitudes=_bank(), beta_range=(0.1, 0.3))
    torch.testing.assert_close(again.set_random_state(34)(data)["a"], out["a"])


def test_dict_missing_keys():
    with pytest.raises(KeyError):
        RandAmplitudeMixd(keys=["image", "t2"], reference_amplitudes=_bank())({"image": _image((1, 16, 12))})
    t = RandAmplitudeMixd(keys=["image", "t2"], reference_amplitudes=_bank(), allow_missing_keys=True)
    assert set(t({"image": _image((1, 16, 12))})) == {"image"}
