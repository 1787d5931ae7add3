"""2.5D context: each axial slice goes in with its neighbours as extra channels."""

import numpy as np
import pytest
import torch
from fedgin.seg.augmentation import augment
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.geometry import slices_with_context
from fedgin.seg.data.site_data import load_site_data
from fedgin.seg.site_config import load_site_config
from fedgin.seg.training import Trainer, _per_scan, dice_per_volume
from helpers import ABDOMEN, FIXTURES, TINY_TRAINING, TOTALSEG_IDS, write_site


def test_each_slice_comes_with_its_neighbours_in_order_and_the_ends_repeated():
    volume = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 3, 4)  # slice z holds the value z
    stacks = slices_with_context(volume, 1)
    assert stacks.shape == (4, 3, 2, 3)
    assert stacks[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert slices_with_context(volume, 0).shape == (4, 1, 2, 3)
    assert slices_with_context(volume, 2)[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2]
    keep = torch.tensor([False, True, False, True])
    assert torch.equal(slices_with_context(volume, 1, at=keep), stacks[keep])  # only the kept slices
    assert torch.equal(slices_with_context(volume, 1, at=torch.tensor([3])), stacks[3:])
    with pytest.raises(ValueError, match="shape"):
        slices_with_context(volume[0], 1)


@pytest.mark.parametrize("kind", ["gin", "randconv"])
def test_every_slice_of_a_sample_gets_the_same_random_intensity_network(kind):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 24, 20, generator=gen)
    x = image.expand(2, 3, 24, 20).contiguous()  # three identical slices per sample
    out = _per_scan(augment, kind, x, torch.Generator().manual_seed(1), {})
    assert out.shape == x.shape
    inner = out[:, :, 5:-5]  # rows near the seams between stacked slices see their neighbour's rows
    assert torch.allclose(inner[:, 0], inner[:, 1], atol=1e-6) and torch.allclose(inner[:, 1], inner[:, 2], atol=1e-6)
    assert not torch.allclose(inner[0, 0], inner[1, 0], atol=1e-3)  # each sample its own network
    assert not torch.allclose(out, x, atol=1e-3)


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    case = [(str(FIXTURES / "example_ct_sm.nii.gz"), str(FIXTURES / "example_seg.nii.gz"))]
    return load_site_config(write_site(root, "CT", {"training": case, "test": case}, TOTALSEG_IDS))


@pytest.mark.parametrize("grid", [{}, {"pixel_spacing": [5.0, 5.0]}])
def test_a_2_5d_model_trains_and_predicts_on_the_original_grid(fixture_site, grid):
    options = {"organs": ABDOMEN, **TINY_TRAINING, **grid, "context_slices": 1, "lr": 1e-2, "batch_size": 8}
    config = TrainConfig.from_dict(options)
    data = load_site_data(
        fixture_site,
        ABDOMEN,
        config.spatial_size,
        splits=("training", "test"),
        pixel_spacing=config.pixel_spacing,
        context_slices=1,
    )
    flat = load_site_data(
        fixture_site, ABDOMEN, config.spatial_size, splits=("training",), pixel_spacing=config.pixel_spacing
    )
    assert data.train.images.shape[1] == 3 and flat.train.images.shape[1] == 1
    torch.testing.assert_close(data.train.images[:, 1:2], flat.train.images)  # the middle channel is the slice
    trainer = Trainer(config, device="cpu")
    assert trainer.model.model[0].conv.unit0.conv.in_channels == 3
    trainer.train_epochs(data.train, epochs=20)
    pred = trainer.predict(data.test[0])
    assert tuple(pred.shape) == tuple(data.test[0].label.shape[1:])
    assert np.nanmax(dice_per_volume(trainer, data.test)) > 0.3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"context_slices": -1}, "context_slices"),
        ({"context_slices": 1, "spatial_size": [16, 16, 16], "model": {"spatial_dims": 3}}, "2D jobs"),
    ],
)
def test_bad_context_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"organs": ["liver"], **options})
