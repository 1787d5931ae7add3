"""Tests for GIN + IPA (fedgin.seg.transforms.ipa)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fedgin.seg.transforms import gin_batch, gin_ipa_batch, ipa_blend, ipa_blend_mask, ipa_consistency_loss
from fedgin.seg.transforms.ipa import _bspline_kernel_1d
from monai.data import MetaTensor


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(shape, generator=_gen(seed)) + 0.5).to(dtype)


SHAPES = [(3, 1, 32, 24), (2, 2, 16, 12, 10)]


@pytest.mark.parametrize("spatial", [(128, 128), (40, 36, 28)])
def test_mask_is_smooth_and_in_unit_range(spatial):
    spacing = 32 if len(spatial) == 2 else 12
    masks = ipa_blend_mask(8, spatial, _gen(1), grid_spacing=spacing)
    assert masks.shape == (8, 1, *spatial) and masks.dtype == torch.float32
    flat = masks.flatten(1)
    # Rescaled per sample onto [0, 1], reaching both ends.
    torch.testing.assert_close(flat.amin(1), torch.zeros(8))
    torch.testing.assert_close(flat.amax(1), torch.ones(8))
    # Smooth: a full 0 -> 1 swing needs many pixels, neighbours differ by a small fraction of it.
    for dim in range(2, masks.ndim):
        assert masks.diff(dim=dim).abs().amax() < 4.0 / spacing
    # Each sample its own mask.
    assert not torch.allclose(masks[0], masks[1], atol=0.05)


def test_mask_smoother_for_coarser_grid():
    fine = ipa_blend_mask(16, (64, 64), _gen(2), grid_spacing=4).diff(dim=2).abs().mean()
    coarse = ipa_blend_mask(16, (64, 64), _gen(2), grid_spacing=32).diff(dim=2).abs().mean()
    assert coarse < fine / 2


def test_bspline_kernel_partition_of_unity():
    for spacing in (1, 3, 8):
        for order in (0, 1, 2, 3):
            kernel = _bspline_kernel_1d(spacing, order, torch.float64, torch.device("cpu"))
            assert kernel.numel() == (order + 1) * (spacing - 1) + 1
            field = F.conv_transpose1d(torch.ones(1, 1, 12, dtype=torch.float64), kernel.view(1, 1, -1), stride=spacing)
            margin = kernel.numel() - spacing
            inner = field.flatten()[margin : field.shape[-1] - margin]
            torch.testing.assert_close(inner, torch.ones_like(inner))


def test_blend_with_ones_gives_first_view_and_zeros_the_second():
    x1, x2 = _image((2, 1, 8, 8), seed=3), _image((2, 1, 8, 8), seed=4)
    torch.testing.assert_close(ipa_blend(x1, x2, torch.ones(2, 1, 8, 8)), x1)
    torch.testing.assert_close(ipa_blend(x1, x2, torch.zeros(2, 1, 8, 8)), x2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_views", [1, 2, 3, 4])
def test_views_are_blends_of_independent_gin_views(shape, n_views):
    x = _image(shape, seed=5)
    batch = shape[0]
    kwargs = {"grid_spacing": 8, "kernel_sizes": (1, 3)}
    views, masks = gin_ipa_batch(x, _gen(6), n_views=n_views, **kwargs)
    assert views.shape == (n_views * batch, *shape[1:]) and masks.shape == (batch, 1, *shape[2:])
    # Same draws by hand: GIN views first (one call on the repeated batch), then the masks.
    g = _gen(6)
    n_gin = max(n_views, 2)
    gins = gin_batch(x.repeat((n_gin,) + (1,) * (x.ndim - 1)), generator=g, kernel_sizes=(1, 3))
    expected_masks = ipa_blend_mask(batch, shape[2:], g, grid_spacing=8)
    torch.testing.assert_close(masks, expected_masks)
    x1, x2 = gins[:batch], gins[batch : 2 * batch]
    assert not torch.allclose(x1, x2)
    torch.testing.assert_close(views[:batch], masks * x1 + (1 - masks) * x2)
    if n_views >= 2:
        torch.testing.assert_close(views[batch : 2 * batch], (1 - masks) * x1 + masks * x2)
        # The two IPA views are complementary: together they keep both GIN views' content.
        torch.testing.assert_close(views[:batch] + views[batch : 2 * batch], x1 + x2)
    if n_views >= 3:
        torch.testing.assert_close(views[2 * batch :], gins[2 * batch :])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_keeps_dtype_and_device(dtype):
    x = _image((2, 1, 16, 16), dtype=dtype)
    views, masks = gin_ipa_batch(x, _gen(7), grid_spacing=8)
    assert views.dtype == dtype and masks.dtype == dtype and views.device == x.device
    assert torch.isfinite(views).all()


def test_metatensor_input_gives_plain_tensors():
    x = MetaTensor(_image((2, 1, 16, 16)))
    views, masks = gin_ipa_batch(x, _gen(8))
    assert type(views) is torch.Tensor and type(masks) is torch.Tensor


def test_same_generator_seed_reproduces():
    x = _image((3, 1, 16, 16))
    (a, ma), (b, mb) = gin_ipa_batch(x, _gen(9)), gin_ipa_batch(x, _gen(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ma, mb, rtol=0, atol=0)
    c, mc = gin_ipa_batch(x, _gen(10))
    assert not torch.allclose(a, c) and not torch.allclose(ma, mc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_with_cpu_and_cuda_generators():
    x = _image((2, 1, 32, 32))
    views, masks = gin_ipa_batch(x.cuda(), _gen(11))
    assert views.is_cuda and masks.is_cuda
    cpu_views, cpu_masks = gin_ipa_batch(x, _gen(11))
    torch.testing.assert_close(masks.cpu(), cpu_masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(views.cpu(), cpu_views, rtol=1e-3, atol=1e-3)
    g = torch.Generator(device="cuda").manual_seed(12)
    assert gin_ipa_batch(x.cuda(), g)[0].is_cuda
    assert ipa_blend_mask(2, (32, 32), g).is_cuda


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (torch.ones(1, 1, 8, 8, dtype=torch.int64), {}),
        (np.ones((1, 1, 8, 8), np.float32), {}),
        (torch.ones(1, 8, 8), {}),
        (torch.ones(1, 1, 8), {}),
        (torch.ones(1, 1, 2, 8, 8, 8), {}),
        (torch.ones(1, 1, 8, 8), {"n_views": 0}),
        (torch.ones(1, 1, 8, 8), {"grid_spacing": 0}),
        (torch.ones(1, 1, 8, 8), {"grid_spacing": (8, 8, 8)}),
        (torch.ones(1, 1, 8, 8), {"spline_order": -1}),
        (torch.ones(1, 1, 8, 8), {"kernel_sizes": (2,)}),
    ],
)
def test_invalid_inputs_raise(x, kwargs):
    with pytest.raises(ValueError):
        gin_ipa_batch(x, **kwargs)


def test_invalid_mask_shape_raises():
    with pytest.raises(ValueError):
        ipa_blend_mask(2, (16,))


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (2, 3, 6, 6, 4)])
def test_consistency_loss_zero_for_identical_positive_otherwise(shape):
    logits = torch.randn(shape, generator=_gen(13))
    assert ipa_consistency_loss(logits, logits.clone()).abs() < 1e-7
    # Softmax is shift invariant: the same distributions give zero too.
    assert ipa_consistency_loss(logits, logits + 3.0).abs() < 1e-6
    other = torch.randn(shape, generator=_gen(14))
    assert ipa_consistency_loss(logits, other) > 1e-3
    assert ipa_consistency_loss(logits, other, logits) > 0


def test_consistency_loss_gradient_flows_to_every_view():
    a = torch.randn(2, 3, 8, 8, generator=_gen(15), requires_grad=True)
    b = torch.randn(2, 3, 8, 8, generator=_gen(16), requires_grad=True)
    c = torch.randn(2, 3, 8, 8, generator=_gen(17), requires_grad=True)
    ipa_consistency_loss(a, b, c).backward()
    for t in (a, b, c):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
def test_consistency_loss_matches_official_kldiv_form():
    a, b, c = (torch.randn(2, 5, 6, 6, generator=_gen(s)) for s in (18, 19, 20))
    stacked = torch.cat([a, b, c])
    p_avg = F.softmax(stacked, dim=1).reshape(3, 2, 5, 6, 6).mean(dim=0).repeat(3, 1, 1, 1)
    official = torch.nn.KLDivLoss(reduction="mean")(F.log_softmax(stacked, dim=1), p_avg)
    torch.testing.assert_close(ipa_consistency_loss(a, b, c), official)
    torch.testing.assert_close(ipa_consistency_loss(a, b, c, reduction="voxelmean"), official * 5)


def test_consistency_loss_half_logits_and_detach():
    a = torch.randn(2, 3, 8, 8, generator=_gen(21)).half().requires_grad_()
    b = torch.randn(2, 3, 8, 8, generator=_gen(22)).half()
    loss = ipa_consistency_loss(a, b, detach_target=True)
    assert loss.dtype == torch.float32
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_consistency_loss_invalid_inputs_raise():
    with pytest.raises(ValueError):
        ipa_consistency_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError):
        ipa_consistency_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), reduction="sum")
    with pytest.raises(ValueError):
        ipa_consistency_loss(torch.zeros(3), torch.zeros(3))
