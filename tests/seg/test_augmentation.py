"""Augmentation families as training options: each trains, is seeded, and GIN-IPA adds its views."""

import pytest
import torch
from fedgin.seg.augmentation import AUGMENTATIONS, augment
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.training import Trainer

TINY = {
    "organs": ["liver"],
    "spatial_size": [16, 16],
    "batch_size": 4,
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
}


def _data(n=8):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 16, 16, generator=g) * 0.2
    labels = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    images[:, :, 4:10, 3:12] += 0.7
    labels[:, :, 4:10, 3:12] = 1
    return TrainSamples(images, labels)


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_every_family_trains_and_is_seeded(kind):
    runs = []
    for _ in range(2):
        trainer = Trainer(TrainConfig.from_dict({**TINY, "augmentation": kind}), device="cpu")
        stats = trainer.train_epochs(_data(), epochs=2)
        assert stats["steps"] == 4 and torch.isfinite(torch.tensor(stats["loss"]))
        runs.append(trainer.get_weights())
    for key in runs[0]:
        assert (runs[0][key] == runs[1][key]).all(), key


def test_gin_is_the_default_and_the_one_switch():
    assert TrainConfig.from_dict(TINY).augmentation == "gin"
    assert TrainConfig.from_dict({**TINY, "augmentation": "none"}).augmentation == "none"
    with pytest.raises(ValueError, match="gin.enabled is not an option"):
        TrainConfig.from_dict({**TINY, "gin": {"enabled": False}})
    config = TrainConfig.from_dict(
        {**TINY, "augmentation": "randconv", "augmentation_options": {"kernel_sizes": [1, 3]}}
    )
    assert config.augmentation == "randconv" and config.augmentation_kwargs() == {"kernel_sizes": [1, 3]}
    # GIN-IPA draws its GIN views with the job's GIN settings unless told otherwise.
    ipa = TrainConfig.from_dict({**TINY, "augmentation": "gin_ipa", "gin": {"n_layers": 2}})
    assert ipa.augmentation_kwargs()["n_layers"] == 2


def test_bad_family_or_option_is_named():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        TrainConfig.from_dict({**TINY, "augmentation": "mixup"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sigma'\] for augmentation 'randconv'"):
        TrainConfig.from_dict({**TINY, "augmentation": "randconv", "augmentation_options": {"sigma": 1}})


def test_gin_ipa_trains_on_two_views_with_a_consistency_term(monkeypatch):
    """The batch the model sees is doubled (two blended views), and the consistency weight matters."""
    seen = []
    trainer = Trainer(TrainConfig.from_dict({**TINY, "augmentation": "gin_ipa"}), device="cpu")
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: seen.append(x.shape[0]) or forward(x))
    trainer.train_epochs(_data(4), epochs=1)
    assert seen == [8]
    losses = []
    for weight in (0.0, 100.0):
        t = Trainer(TrainConfig.from_dict({**TINY, "augmentation": "gin_ipa", "consistency_weight": weight}), "cpu")
        losses.append(t.train_epochs(_data(4), epochs=1)["loss"])
    assert losses[1] > losses[0]


def test_single_view_families_keep_shape_and_none_is_identity():
    x = torch.rand(3, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert augment("none", x, g, {}) is x
    for kind in ("gin", "randconv", "amplitude"):
        y = augment(kind, x, g, {})
        assert y.shape == x.shape and not torch.equal(y, x)


def test_gin_ipa_with_one_view_trains_on_the_blend_alone_without_consistency(monkeypatch):
    """n_views=1: one blended view a sample (the model sees the batch once) and the consistency
    weight changes nothing, since there is no second view to agree with."""
    seen = []
    one = {**TINY, "augmentation": "gin_ipa", "augmentation_options": {"n_views": 1}}
    trainer = Trainer(TrainConfig.from_dict(one), device="cpu")
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: seen.append(x.shape[0]) or forward(x))
    trainer.train_epochs(_data(4), epochs=1)
    assert seen == [4]
    losses = [
        Trainer(TrainConfig.from_dict({**one, "consistency_weight": w}), "cpu").train_epochs(_data(4), epochs=1)["loss"]
        for w in (0.0, 100.0)
    ]
    assert losses[0] == losses[1]
