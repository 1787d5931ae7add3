"""Tests for the GIN augmentation (fedgin.seg.transforms.gin)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fedgin.seg.transforms import RandGIN, RandGINd, gin_batch
from fedgin.seg.transforms.gin import _draw_gin_params
from monai.data import MetaTensor


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frob(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.double().reshape(x.shape[0], -1), dim=1)


def _image(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    # Smooth positive image so the norm is far from zero.
    return (torch.rand(shape, generator=_gen(seed)) + 0.5).to(dtype)


SHAPES = [(3, 2, 16, 12), (2, 1, 8, 10, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_gin_batch_keeps_shape_dtype_device(shape, dtype):
    x = _image(shape, dtype=dtype)
    out = gin_batch(x, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert type(out) is torch.Tensor
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_frobenius_norm_preserved(shape):
    x = _image(shape)
    out = gin_batch(x, generator=_gen(2))
    torch.testing.assert_close(_frob(out), _frob(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_alpha_zero_is_identity(shape):
    x = _image(shape)
    torch.testing.assert_close(gin_batch(x, generator=_gen(3), alpha_range=(0.0, 0.0)), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_output_differs_for_positive_alpha(shape):
    x = _image(shape)
    out = gin_batch(x, generator=_gen(4), alpha_range=(0.5, 1.0))
    assert ((out - x).abs().amax(dim=tuple(range(1, x.ndim))) > 1e-2).all()


def test_identical_samples_get_different_networks():
    x = _image((1, 1, 16, 16)).repeat(4, 1, 1, 1)
    out = gin_batch(x, generator=_gen(5), alpha_range=(1.0, 1.0))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j], atol=1e-3), (i, j)


def test_same_generator_seed_reproduces():
    x = _image((4, 1, 16, 16))
    a, b = gin_batch(x, generator=_gen(6)), gin_batch(x, generator=_gen(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, gin_batch(x, generator=_gen(7)))


def test_default_rng_used_when_no_generator():
    x = _image((2, 1, 12, 12))
    torch.manual_seed(8)
    a = gin_batch(x)
    torch.manual_seed(8)
    torch.testing.assert_close(gin_batch(x), a, rtol=0, atol=0)


def _reference_gin(x, layers, alpha, eps=1e-5, negative_slope=0.01):
    """Loop over samples, running each sample's own slice of the drawn weights as a plain conv."""
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    outs = []
    for b in range(x.shape[0]):
        h = x[b : b + 1]
        for i, (w, bias) in enumerate(layers):
            c_out = w.shape[0] // x.shape[0]
            rows = slice(b * c_out, (b + 1) * c_out)
            h = conv(h, w[rows], bias[rows], padding=w.shape[-1] // 2)
            if i < len(layers) - 1:
                h = F.leaky_relu(h, negative_slope)
        mixed = alpha[b] * h + (1 - alpha[b]) * x[b : b + 1]
        outs.append(mixed * x[b].norm() / (mixed.norm() + eps))
    return torch.cat(outs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha_range", [(1.0, 1.0), (0.2, 0.9)])
def test_grouped_conv_matches_per_sample_networks(shape, alpha_range):
    x = _image(shape)
    kwargs = dict(n_layers=3, interm_channels=3, kernel_sizes=(1, 3, 5), alpha_range=alpha_range)
    out = gin_batch(x, generator=_gen(9), **kwargs)
    layers, alpha = _draw_gin_params(x.shape[0], x.shape[1], x.ndim - 2, _gen(9), x.device, x.dtype, **kwargs)
    assert [tuple(w.shape[:2]) for w, _ in layers] == [
        (x.shape[0] * 3, x.shape[1]),
        (x.shape[0] * 3, 3),
        (x.shape[0] * x.shape[1], 3),
    ]
    # Every sample owns different weights and biases, not copies of one network.
    for w, bias in layers:
        per_sample_w, per_sample_b = w.reshape(x.shape[0], -1), bias.reshape(x.shape[0], -1)
        assert not torch.allclose(per_sample_w[0], per_sample_w[1])
        assert not torch.allclose(per_sample_b[0], per_sample_b[1])
    torch.testing.assert_close(out, _reference_gin(x, layers, alpha), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_input():
    x = _image((2, 1, 16, 16))
    out = gin_batch(x.cuda(), generator=_gen(10))
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), gin_batch(x, generator=_gen(10)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (torch.ones(1, 1, 8, 8, dtype=torch.int64), {}),
        (np.ones((1, 1, 8, 8), np.float32), {}),
        (torch.ones(1, 8, 8), {}),
        (torch.ones(1, 1, 2, 8, 8, 8), {}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": (2,)}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": ()}),
        (torch.ones(1, 1, 8, 8), {"n_layers": 1}),
        (torch.ones(1, 1, 8, 8), {"interm_channels": 0}),
        (torch.ones(1, 1, 8, 8), {"alpha_range": (-0.1, 1.0)}),
        (torch.ones(1, 1, 8, 8), {"alpha_range": (0.0, 1.5)}),
        (torch.ones(1, 1, 8, 8), {"alpha_range": (0.8, 0.2)}),
    ],
)
def test_gin_batch_invalid_inputs_raise(x, kwargs):
    with pytest.raises(ValueError):
        gin_batch(x, **kwargs)


def test_rand_gin_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandGIN()(torch.ones(8, 8))
    with pytest.raises(ValueError):
        RandGIN(kernel_sizes=(4,))
    with pytest.raises(ValueError):
        RandGINd(keys="image", alpha_range=(0.0, 2.0))


@pytest.mark.parametrize(
    "img",
    [
        np.random.default_rng(0).random((1, 16, 12)).astype(np.float32),
        _image((2, 16, 12), dtype=torch.float64),
        MetaTensor(_image((1, 8, 8, 6)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))),
    ],
    ids=["numpy-2d", "tensor-2d", "metatensor-3d"],
)
def test_rand_gin_keeps_type_and_reproduces(img):
    out = RandGIN().set_random_state(11)(img)
    assert type(out) is type(img) and out.shape == img.shape and out.dtype == img.dtype
    if isinstance(img, MetaTensor):
        torch.testing.assert_close(out.affine, img.affine)
    np.testing.assert_allclose(np.asarray(out), np.asarray(RandGIN().set_random_state(11)(img)))
    assert not np.allclose(np.asarray(out), np.asarray(RandGIN().set_random_state(12)(img)))
    torch.testing.assert_close(_frob(torch.as_tensor(out)[None]), _frob(torch.as_tensor(img)[None]), rtol=1e-5, atol=0)


def test_rand_gin_randomize_false_reuses_draw():
    t = RandGIN().set_random_state(13)
    img = _image((1, 12, 12))
    a = t(img)
    torch.testing.assert_close(t(img, randomize=False), a)
    assert not torch.allclose(t(img), a)


def test_rand_gin_prob_zero_is_identity():
    img = _image((1, 12, 12))
    assert torch.equal(RandGIN(prob=0.0)(img), img)
    d = {"image": img, "label": torch.ones(1, 12, 12)}
    out = RandGINd(keys="image", prob=0.0)(d)
    assert torch.equal(out["image"], img) and torch.equal(out["label"], d["label"])


def test_rand_gind_label_untouched_and_reproducible():
    label = torch.randint(0, 3, (1, 16, 16), generator=_gen(14))
    data = {"image": _image((1, 16, 16)), "label": label.clone()}
    t = RandGINd(keys="image")
    assert t.set_random_state(15) is t
    out = t(data)
    assert torch.equal(out["label"], label) and out["label"].dtype == label.dtype
    assert not torch.allclose(out["image"], data["image"])
    torch.testing.assert_close(RandGINd(keys="image").set_random_state(15)(data)["image"], out["image"])


def test_rand_gind_keys_share_one_draw():
    img = _image((1, 16, 16))
    out = RandGINd(keys=["a", "b"]).set_random_state(16)({"a": img, "b": img.clone()})
    torch.testing.assert_close(out["a"], out["b"])
    assert not torch.allclose(out["a"], img)


def test_rand_gind_missing_keys():
    with pytest.raises(KeyError):
        RandGINd(keys=["image", "t2"])({"image": _image((1, 8, 8))})
    out = RandGINd(keys=["image", "t2"], allow_missing_keys=True)({"image": _image((1, 8, 8))})
    assert set(out) == {"image"}
