"""The spacing scheme: volumes resampled to a pixel spacing, cropped to the body, windows for
training, a sliding window inverted back to each volume's own grid for scoring."""

import numpy as np
import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.geometry import ModelGrid
from fedgin.seg.data.site_data import TrainSamples, load_site_data
from fedgin.seg.site_config import load_site_config
from fedgin.seg.training import Trainer, dice_per_volume
from helpers import write_nifti, write_site
from monai.metrics import DiceMetric

SPACING = (1.6, 1.6)


def _phantom(shape, spacing, offset):
    """A body ellipse (CT soft tissue) in air with an off-centre 'liver' block; returns image, label."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = shape[0] / 2 + offset, shape[1] / 2
    body = ((x - cx) / (0.3 * shape[0])) ** 2 + ((y - cy) / (0.25 * shape[1])) ** 2 <= 1
    image = np.where(body, 40.0, -1000.0)[..., None].repeat(shape[2], 2).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    x0, y0 = int(cx + 0.05 * shape[0]), int(cy - 0.1 * shape[1])
    label[x0 : x0 + shape[0] // 6, y0 : y0 + shape[1] // 5, 1:-1] = 6
    image[label > 0] = 150.0
    return image, label, np.diag([*spacing, 3.0, 1.0])


@pytest.fixture
def site(tmp_path):
    """Two CT volumes of different in-plane spacing and field of view."""
    cases = []
    for i, (shape, spacing, offset) in enumerate((((90, 80, 6), (1.3, 1.1), -6), ((70, 64, 5), (2.2, 2.0), 4))):
        image, label, affine = _phantom(shape, spacing, offset)
        write_nifti(tmp_path / f"img{i}.nii.gz", image, affine)
        write_nifti(tmp_path / f"lab{i}.nii.gz", label, affine)
        cases.append((f"img{i}.nii.gz", f"lab{i}.nii.gz"))
    return load_site_config(write_site(tmp_path, "CT", {"training": cases, "test": cases}, {"liver": 6}))


def test_volumes_are_resampled_to_the_spacing_and_cropped_to_the_body(site):
    data = load_site_data(site, ["liver"], (32, 32), splits=("training", "test"), pixel_spacing=SPACING)
    geometry = (((90, 80, 6), (1.3, 1.1)), ((70, 64, 5), (2.2, 2.0)))
    for volume, (shape, spacing) in zip(data.test, geometry, strict=True):
        assert tuple(volume.label.shape) == (1, *shape)  # scored on the volume's own grid
        assert np.allclose(np.diag(np.asarray(volume.image.affine))[:3], (*SPACING, 3.0))
        h, w = volume.image.shape[1:3]
        resampled = [round(n * s / t) for n, s, t in zip(shape[:2], spacing, SPACING, strict=True)]
        body = [0.6 * resampled[0], 0.5 * resampled[1]]  # the ellipse's axes
        for size, full, extent in zip((h, w), resampled, body, strict=True):
            # the body, its 4-pixel margins, and a pixel or two of interpolated edge on each side
            assert size < full and abs(size - extent) <= 4 + 2 * 4, (size, full, extent)
    # Training slices keep each volume's size (content extents), padded into one array.
    train = data.train
    sizes = {tuple(v.image.shape[1:3]) for v in data.test}
    assert {tuple(e) for e in train.extents.tolist()} == {tuple(max(a, 32) for a in s) for s in sizes}
    assert tuple(train.images.shape[2:]) == tuple(max(s[i] for s in sizes) for i in (0, 1))


def test_the_inverted_prediction_of_a_perfect_model_matches_the_label_on_its_own_grid(site):
    data = load_site_data(site, ["liver"], (32, 32), splits=("test",), pixel_spacing=SPACING)
    metric = DiceMetric(include_background=False, reduction="none", num_classes=2)
    for volume in data.test:
        # The normalized image shows the liver brightest: a soft "perfect" probability on the model grid.
        liver = ((volume.image.as_tensor() - 0.55) * 20).sigmoid()
        probs = torch.cat([1 - liver, liver])
        classes = volume.grid.classes_on_volume_grid(probs, volume.image, volume.label.shape[1:])
        assert tuple(classes.shape) == tuple(volume.label.shape[1:])
        dice = float(metric(classes[None, None], volume.label[None].long())[0, 0])
        assert dice > 0.9, dice  # a flip, shift or wrong scale would drop this far
        flipped = volume.grid.classes_on_volume_grid(probs.flip(1), volume.image, volume.label.shape[1:])
        assert float(metric(flipped[None, None], volume.label[None].long())[0, 0]) < 0.5


def test_a_blank_scan_is_kept_whole_not_cropped_to_nothing(tmp_path):
    write_nifti(tmp_path / "blank.nii.gz", np.full((40, 36, 3), -1000.0, np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    write_nifti(tmp_path / "lab.nii.gz", np.zeros((40, 36, 3), np.uint8), np.diag([2.0, 2.0, 3.0, 1.0]))
    cfg = write_site(
        tmp_path,
        "CT",
        {"training": [("blank.nii.gz", "lab.nii.gz")], "test": [("blank.nii.gz", "lab.nii.gz")]},
        {"liver": 6},
    )
    data = load_site_data(load_site_config(cfg), ["liver"], (16, 16), splits=("test",), pixel_spacing=(4.0, 4.0))
    assert tuple(data.test[0].image.shape) == (1, 20, 18, 3)


def test_pixel_spacing_is_x_then_y_in_ras_order(site):
    data = load_site_data(site, ["liver"], (32, 32), splits=("test",), pixel_spacing=(1.6, 2.0))
    volume = data.test[0]
    assert np.allclose(np.diag(np.asarray(volume.image.affine))[:3], (1.6, 2.0, 3.0))
    assert volume.grid.classes_on_volume_grid(
        torch.ones(2, *volume.image.shape[1:]), volume.image, volume.label.shape[1:]
    ).shape == tuple(volume.label.shape[1:])


@pytest.mark.skipif(
    torch.multiprocessing.get_start_method(allow_none=True) == "spawn",
    reason="MONAI skips its transform identity check under the spawn start method",
)
def test_only_the_grid_that_resampled_a_volume_inverts_it(site):
    data = load_site_data(site, ["liver"], (32, 32), splits=("test",), pixel_spacing=SPACING)
    volume = data.test[0]
    probs = torch.zeros(2, *volume.image.shape[1:])
    with pytest.raises(RuntimeError):  # MONAI checks the transform object, not just its kind
        ModelGrid((32, 32), 2, SPACING).classes_on_volume_grid(probs, volume.image, volume.label.shape[1:])
    with pytest.raises(ValueError, match="resize scheme"):
        ModelGrid((32, 32)).classes_on_volume_grid(probs, volume.image, volume.label.shape[1:])


def test_training_windows_stay_inside_each_slices_content_and_follow_the_seed():
    images = torch.zeros(3, 1, 50, 60)
    extents = torch.tensor([[50, 60], [40, 32], [32, 32]])
    for i, (h, w) in enumerate(extents.tolist()):
        images[i, :, :h, :w] = 1.0 + torch.arange(h * w, dtype=torch.float32).reshape(h, w)  # content >= 1
    data = TrainSamples(images, (images > 0).to(torch.uint8), extents=extents)
    corners = set()
    for seed in range(20):
        x, y = data.windows(torch.arange(3), (32, 32), torch.Generator().manual_seed(seed))
        assert x.shape == (3, 1, 32, 32) and bool((x >= 1).all()), "a window left the slice's content"
        assert torch.equal(y, (x > 0).to(torch.uint8))  # image and label cut at the same place
        assert torch.equal(x[2], images[2, :, :32, :32])  # a slice of the window's size is taken whole
        corners.add(float(x[0, 0, 0, 0]))
    assert len(corners) > 10  # the window moves over the larger slices
    again = data.windows(torch.arange(3), (32, 32), torch.Generator().manual_seed(3))[0]
    assert torch.equal(again, data.windows(torch.arange(3), (32, 32), torch.Generator().manual_seed(3))[0])
    same_size = TrainSamples(images[:, :, :32, :32], images[:, :, :32, :32].to(torch.uint8))
    assert torch.equal(same_size.windows(torch.arange(2), (32, 32), torch.Generator())[0], images[:2, :, :32, :32])


def test_pooling_sites_of_different_slice_sizes_pads_and_keeps_their_extents():
    a = TrainSamples(torch.ones(2, 1, 40, 32), torch.ones(2, 1, 40, 32, dtype=torch.uint8))
    b = TrainSamples(torch.ones(3, 1, 32, 50), torch.ones(3, 1, 32, 50, dtype=torch.uint8))
    pooled = TrainSamples.concat([a, b], num_classes=2)
    assert pooled.images.shape == (5, 1, 40, 50)
    assert pooled.extents.tolist() == [[40, 32]] * 2 + [[32, 50]] * 3
    assert float(pooled.images[0, 0, :, 32:].abs().sum()) == 0.0  # padding is zeros


def test_training_and_sliding_window_prediction_on_resampled_volumes(site):
    config = TrainConfig.from_dict(
        {
            "organs": ["liver"],
            "spatial_size": [32, 32],
            "pixel_spacing": list(SPACING),
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "lr": 1e-2,
            "batch_size": 4,
            "augmentation": "none",
            # The plain loss and shuffle this 25-epoch check was sized with (it tests the geometry).
            "organ_sampling": 0.0,
            "dice_batch": False,
        }
    )
    assert config.pixel_spacing == SPACING
    data = load_site_data(site, ["liver"], (32, 32), splits=("training", "test"), pixel_spacing=SPACING)
    trainer = Trainer(config, device="cpu")
    before = dice_per_volume(trainer, data.test)
    trainer.train_epochs(data.train, epochs=25)
    after = dice_per_volume(trainer, data.test)
    assert after.shape == (2, 1) and float(np.nanmean(after)) > max(0.5, float(np.nanmean(before)) + 0.2), after


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pixel_spacing": [1.5]}, "two positive numbers"),
        ({"pixel_spacing": [1.5, -1]}, "two positive numbers"),
        ({"pixel_spacing": [1.5, 1.5], "spatial_size": [16, 16, 16], "model": {"spatial_dims": 3}}, "2D jobs"),
        ({"sliding_window_overlap": 1.0}, "sliding_window_overlap"),
    ],
)
def test_bad_geometry_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"organs": ["liver"], **options})
