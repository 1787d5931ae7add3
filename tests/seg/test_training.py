"""The Trainer shared by the Executor and local runs: determinism, 3D, Dice on the original grid."""

import math

import numpy as np
import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import EvalVolume, TrainSamples
from fedgin.seg.training import Trainer, summarize_dice

TINY_MODEL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def _blobs(n, size, dims, seed=0):
    """Bright boxes (class 1) on noise, each axis with its own offset and length: learnable in a few
    steps, and not symmetric under swapping axes, so a transposed prediction would score badly."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((n, 1) + (size,) * dims, generator=g) * 0.2
    labels = torch.zeros((n, 1) + (size,) * dims, dtype=torch.uint8)
    for i in range(n):
        region = [i, 0]
        for axis in range(dims):
            length = size // 4 + axis * size // 4
            lo = int(torch.randint(0, size - length, (1,), generator=g))
            region.append(slice(lo, lo + length))
        images[tuple(region)] += 0.8
        labels[tuple(region)] = 1
    return TrainSamples(images, labels)


def _config(dims=2, **kw):
    size = [16] * dims
    model = {**TINY_MODEL, "spatial_dims": dims}
    return TrainConfig.from_dict({"organs": ["liver"], "spatial_size": size, "model": model, "batch_size": 4, **kw})


def test_same_seed_same_model():
    data = _blobs(8, 16, 2)
    runs = []
    for _ in range(2):
        trainer = Trainer(_config(seed=5), device="cpu")
        trainer.train_epochs(data, epochs=2)
        runs.append(trainer.get_weights())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
    other = Trainer(_config(seed=6), device="cpu")
    other.train_epochs(data, epochs=2)
    assert any(not np.array_equal(runs[0][k], v) for k, v in other.get_weights().items())


@pytest.mark.parametrize("dims", [2, 3])
def test_training_learns_and_predicts_on_the_original_grid(dims):
    data = _blobs(12, 16, dims)
    trainer = Trainer(_config(dims, lr=1e-2, augmentation="gin" if dims == 2 else "none"), device="cpu")
    first = trainer.train_epochs(data, epochs=1)["loss"]
    last = trainer.train_epochs(data, epochs=15)["loss"]
    assert last < first
    # Evaluate at a coarser "original" grid than the training size: predictions are resized back.
    image = data.images[0] if dims == 3 else data.images[:5, 0].permute(1, 2, 0)[None]  # (1, S, S, D)
    label = data.labels[0] if dims == 3 else data.labels[:5, 0].permute(1, 2, 0)[None]
    small = torch.nn.functional.interpolate(label[None].float(), size=(8, 8, label.shape[-1] if dims == 2 else 8))
    volume = EvalVolume(image=image, label=small[0].to(torch.uint8))
    pred = trainer.predict(volume)
    assert tuple(pred.shape) == tuple(volume.label.shape[1:])
    assert trainer.evaluate([volume])["dice_liver"] > 0.5


def test_weights_of_another_model_are_rejected_with_the_key():
    trainer = Trainer(_config(), device="cpu")
    weights = trainer.get_weights()
    key = next(iter(weights))
    weights[key] = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        trainer.set_weights(weights)


def test_dice_summary_skips_absent_organs():
    per_volume = np.array([[0.8, np.nan], [0.6, np.nan]])
    s = summarize_dice(per_volume, ["liver", "pancreas"])
    assert s["dice_liver"] == pytest.approx(0.7) and math.isnan(s["dice_pancreas"])
    assert s["mean_dice"] == pytest.approx(0.7)


def test_unknown_training_option_is_named():
    with pytest.raises(ValueError, match="unknown training option.*'learning_rate'"):
        TrainConfig.from_dict({"organs": ["liver"], "learning_rate": 1})
    with pytest.raises(ValueError, match="spatial_size"):
        TrainConfig.from_dict({"organs": ["liver"], "spatial_size": [32, 32, 32]})


def test_initial_model_is_seeded_and_leaves_the_global_rng_alone():
    from fedgin.seg.model import SegmentationUNet

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = SegmentationUNet(3, init_seed=7), SegmentationUNet(3, init_seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    c = SegmentationUNet(3, init_seed=8)
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_min_local_steps_makes_a_small_site_train_as_many_steps_as_asked():
    data = _blobs(6, 16, 2)  # 2 batches of 4 per epoch
    assert Trainer(_config(), device="cpu").train_epochs(data)["steps"] == 2
    # A round (epochs=None) continues over fresh shuffles up to exactly min_local_steps ...
    trainer = Trainer(_config(min_local_steps=5), device="cpu")
    assert trainer.train_epochs(data)["steps"] == 5
    # ... a site with more data than that still finishes its epoch ...
    assert Trainer(_config(min_local_steps=1, local_epochs=2), device="cpu").train_epochs(data)["steps"] == 4
    # ... and an explicit epoch count (centralized and local runs) ignores it.
    assert trainer.train_epochs(data, epochs=1)["steps"] == 2
    # A site without a single training sample ends its round instead of looping for ever.
    empty = TrainSamples(data.images[:0], data.labels[:0])
    assert Trainer(_config(min_local_steps=5), device="cpu").train_epochs(empty)["steps"] == 0
    with pytest.raises(ValueError, match="min_local_steps"):
        _config(min_local_steps=-1)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "poly"])
def test_lr_schedule_sets_each_rounds_learning_rate(schedule):
    trainer = Trainer(_config(lr=1e-3, lr_schedule=schedule), device="cpu")
    rates = [trainer.start_round(r, 10) for r in range(10)]
    assert rates[0] == pytest.approx(1e-3)
    assert all(g["lr"] == rates[-1] for g in trainer.optimizer.param_groups)
    if schedule == "constant":
        assert rates == [pytest.approx(1e-3)] * 10
    else:  # decreasing to a small, still positive rate in the last round
        assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True))
        assert 0 < rates[-1] < 0.2e-3
    assert trainer.start_round(3, 0) == pytest.approx(1e-3)  # rounds unknown: the base rate
    with pytest.raises(ValueError, match="lr_schedule"):
        _config(lr_schedule="step")
