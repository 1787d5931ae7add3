"""Tests for the RandConv augmentation (fedgin.seg.transforms.randconv)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fedgin.seg.transforms import RandConv, RandConvd, rand_conv_batch
from fedgin.seg.transforms.randconv import _draw_rand_conv_params
from monai.data import MetaTensor


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed)).to(dtype)


SHAPES = [(5, 2, 16, 12), (3, 1, 8, 10, 6)]
RAW = {"renormalize": False, "mix": False}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_keeps_shape_dtype_device(shape, dtype):
    x = _image(shape, dtype=dtype)
    out = rand_conv_batch(x, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert type(out) is torch.Tensor
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_raw_conv_is_linear_for_a_fixed_draw(shape):
    # The defining property: before renormalization and mixing the map is linear (no bias, no
    # nonlinearity), f(a x + b y) = a f(x) + b f(y) for the same draw.
    x, y = _image(shape, seed=2).double(), _image(shape, seed=3).double()
    a, b = 0.7, -1.9

    def f(z):
        return rand_conv_batch(z, generator=_gen(4), **RAW)

    torch.testing.assert_close(f(a * x + b * y), a * f(x) + b * f(y), rtol=1e-10, atol=1e-10)
    # Linear but not trivial.
    assert not torch.allclose(f(x), x)


@pytest.mark.parametrize("shape", SHAPES)
def test_mix_without_renormalization_is_still_linear(shape):
    x, y = _image(shape, seed=5).double(), _image(shape, seed=6).double()

    def f(z):
        return rand_conv_batch(z, generator=_gen(7), renormalize=False, mix=True)

    torch.testing.assert_close(f(2 * x - y), 2 * f(x) - f(y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_grouped_conv_matches_per_sample_filters(shape):
    x = _image(shape, seed=8)
    ks = (1, 3, 5)
    out = rand_conv_batch(x, generator=_gen(9), kernel_sizes=ks, **RAW)
    size_index, weights, _ = _draw_rand_conv_params(
        x.shape[0], x.shape[1], x.ndim - 2, _gen(9), x.device, x.dtype, ks, (0.0, 1.0)
    )
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    c = x.shape[1]
    seen = dict.fromkeys(weights, 0)
    for b in range(x.shape[0]):
        k = ks[int(size_index[b])]
        w = weights[k][seen[k] * c : (seen[k] + 1) * c]
        seen[k] += 1
        assert w.shape == (c, c) + (k,) * (x.ndim - 2)
        torch.testing.assert_close(out[b : b + 1], conv(x[b : b + 1], w, padding=k // 2), rtol=1e-5, atol=1e-5)


def test_kernel_sizes_and_weight_scale():
    cpu = torch.device("cpu")
    size_index, weights, alpha = _draw_rand_conv_params(400, 1, 2, _gen(10), cpu, torch.float64, (1, 3, 5, 7), (0, 1))
    # Every size drawn, per sample (not once for the whole batch).
    assert set(size_index.tolist()) == {0, 1, 2, 3}
    assert set(weights) == {1, 3, 5, 7}
    # Kaiming-normal-like: std 1 / sqrt(k^d * C_in).
    for k, w in weights.items():
        assert w.std().item() == pytest.approx(1.0 / k, rel=0.2)
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0 and alpha.std() > 0.2


def test_renormalized_output_stays_in_input_range():
    x = _image((6, 2, 16, 16), seed=11) * 0.6 + 0.1  # per-sample ranges inside [0.1, 0.7]
    for mix in (False, True):
        out = rand_conv_batch(x, generator=_gen(12), mix=mix)
        lo, hi = x.flatten(2).amin(2), x.flatten(2).amax(2)
        assert (out.flatten(2).amin(2) >= lo - 1e-6).all() and (out.flatten(2).amax(2) <= hi + 1e-6).all()
        if not mix:  # the renormalized filter output spans exactly the input's range
            torch.testing.assert_close(out.flatten(2).amin(2), lo)
            torch.testing.assert_close(out.flatten(2).amax(2), hi)


def test_flat_input_stays_flat():
    x = torch.full((2, 1, 8, 8), 0.25)
    torch.testing.assert_close(rand_conv_batch(x, generator=_gen(13)), x)


def test_alpha_one_is_identity():
    x = _image((4, 1, 12, 12), seed=14)
    torch.testing.assert_close(rand_conv_batch(x, generator=_gen(15), alpha_range=(1.0, 1.0)), x)


def test_identical_samples_get_different_filters():
    x = _image((1, 1, 16, 16), seed=16).repeat(6, 1, 1, 1)
    out = rand_conv_batch(x, generator=_gen(17), kernel_sizes=(3,), mix=False)
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.allclose(out[i], out[j], atol=1e-3), (i, j)


def test_same_generator_seed_reproduces():
    x = _image((4, 1, 16, 16))
    a, b = rand_conv_batch(x, generator=_gen(18)), rand_conv_batch(x, generator=_gen(18))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, rand_conv_batch(x, generator=_gen(19)))


def test_metatensor_keeps_type_and_meta():
    x = MetaTensor(_image((2, 1, 8, 8)), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    out = rand_conv_batch(x, generator=_gen(20))
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, x.affine)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_with_cpu_and_cuda_generators():
    x = _image((4, 1, 16, 16))
    out = rand_conv_batch(x.cuda(), generator=_gen(21))
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), rand_conv_batch(x, generator=_gen(21)), rtol=1e-4, atol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(22)
    assert rand_conv_batch(x.cuda(), generator=g).is_cuda


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (torch.ones(1, 1, 8, 8, dtype=torch.int64), {}),
        (np.ones((1, 1, 8, 8), np.float32), {}),
        (torch.ones(1, 8, 8), {}),
        (torch.ones(1, 1, 8), {}),
        (torch.ones(1, 1, 2, 8, 8, 8), {}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": (2,)}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": ()}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": (3, 3)}),
        (torch.ones(1, 1, 8, 8), {"alpha_range": (-0.1, 1.0)}),
        (torch.ones(1, 1, 8, 8), {"alpha_range": (0.8, 0.2)}),
        (torch.ones(1, 1, 8, 8), {"eps": -1.0}),
    ],
)
def test_invalid_inputs_raise(x, kwargs):
    with pytest.raises(ValueError):
        rand_conv_batch(x, **kwargs)


def test_transform_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandConv()(torch.ones(8, 8))
    with pytest.raises(ValueError):
        RandConv(kernel_sizes=(4,))
    with pytest.raises(ValueError):
        RandConvd(keys="image", alpha_range=(0.0, 2.0))


@pytest.mark.parametrize(
    "img",
    [
        np.random.default_rng(0).random((1, 16, 12)).astype(np.float32),
        _image((2, 16, 12), dtype=torch.float64),
        MetaTensor(_image((1, 8, 8, 6)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))),
    ],
    ids=["numpy-2d", "tensor-2d", "metatensor-3d"],
)
def test_rand_conv_keeps_type_and_reproduces(img):
    out = RandConv().set_random_state(23)(img)
    assert type(out) is type(img) and out.shape == img.shape and out.dtype == img.dtype
    if isinstance(img, MetaTensor):
        torch.testing.assert_close(out.affine, img.affine)
    np.testing.assert_allclose(np.asarray(out), np.asarray(RandConv().set_random_state(23)(img)))
    assert not np.allclose(np.asarray(out), np.asarray(RandConv().set_random_state(24)(img)))


def test_rand_conv_randomize_false_reuses_draw():
    t = RandConv().set_random_state(25)
    img = _image((1, 12, 12))
    a = t(img)
    torch.testing.assert_close(t(img, randomize=False), a)
    assert not torch.allclose(t(img), a)


def test_prob_zero_is_identity():
    img = _image((1, 12, 12))
    assert torch.equal(RandConv(prob=0.0)(img), img)
    d = {"image": img, "label": torch.ones(1, 12, 12)}
    out = RandConvd(keys="image", prob=0.0)(d)
    assert torch.equal(out["image"], img) and torch.equal(out["label"], d["label"])


def test_dict_label_untouched_keys_share_draw_and_reproduce():
    label = torch.randint(0, 3, (1, 16, 16), generator=_gen(26))
    img = _image((1, 16, 16))
    data = {"a": img, "b": img.clone(), "label": label.clone()}
    t = RandConvd(keys=["a", "b"])
    assert t.set_random_state(27) is t
    out = t(data)
    assert torch.equal(out["label"], label)
    assert not torch.allclose(out["a"], img)
    torch.testing.assert_close(out["a"], out["b"])
    torch.testing.assert_close(RandConvd(keys=["a", "b"]).set_random_state(27)(data)["a"], out["a"])


def test_dict_missing_keys():
    with pytest.raises(KeyError):
        RandConvd(keys=["image", "t2"])({"image": _image((1, 8, 8))})
    out = RandConvd(keys=["image", "t2"], allow_missing_keys=True)({"image": _image((1, 8, 8))})
    assert set(out) == {"image"}
