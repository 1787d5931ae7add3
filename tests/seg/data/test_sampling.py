"""Organ-aware slice sampling: which organs each slice holds, the draw weights, seeded epochs."""

import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.sampling import epoch_order, organ_balanced_weights, organ_presence
from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.training import Trainer


def _labels() -> torch.Tensor:
    """20 slices: 15 hold organ 1 (big), 2 hold organ 2 (small) too, 3 hold nothing."""
    lab = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    lab[:15, :, :4, :4] = 1
    lab[13:15, :, 6:, 6:] = 2
    return lab


def test_presence_names_the_organs_of_each_slice():
    presence = organ_presence(_labels(), num_classes=3)
    assert presence.shape == (20, 2)
    assert presence[:, 0].sum() == 15 and presence[:, 1].sum() == 2
    assert not presence[15:].any()
    with pytest.raises(ValueError, match=r"\(N, 1, \*spatial\)"):
        organ_presence(torch.zeros(4, 8, 8), 3)


def test_weights_give_each_organ_its_share():
    presence = organ_presence(_labels(), 3)
    w = organ_balanced_weights(presence, share=0.5)
    assert w.sum().item() == pytest.approx(1.0)
    # Mass of slices holding organ 2: its organ-first quarter plus its uniform part, against 2/20 uniformly.
    small = w[presence[:, 1]].sum().item()
    assert small == pytest.approx(0.25 + 0.5 * 2 / 20 + 0.25 * 2 / 15)
    assert w[15:].tolist() == pytest.approx([0.5 / 20] * 5)  # organ-free slices: the uniform part only
    torch.testing.assert_close(organ_balanced_weights(presence, 0.0), torch.full((20,), 1 / 20, dtype=torch.float64))
    with pytest.raises(ValueError, match="organ_sampling must be in"):
        organ_balanced_weights(presence, 1.5)


def test_weights_without_any_organ_are_uniform():
    w = organ_balanced_weights(torch.zeros(4, 2, dtype=torch.bool), share=1.0)
    torch.testing.assert_close(w, torch.full((4,), 0.25, dtype=torch.float64))


def test_epoch_order_is_seeded_and_keeps_the_epoch_length():
    w = organ_balanced_weights(organ_presence(_labels(), 3), 0.5)
    a = epoch_order(20, w, torch.Generator().manual_seed(3))
    b = epoch_order(20, w, torch.Generator().manual_seed(3))
    c = epoch_order(20, w, torch.Generator().manual_seed(4))
    assert len(a) == 20 and torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(epoch_order(20, None, torch.Generator().manual_seed(0)).tolist()) == list(range(20))
    with pytest.raises(ValueError, match="3 sampling weights for 20 samples"):
        epoch_order(20, w[:3], torch.Generator())


def test_small_organ_slices_are_drawn_more_often_in_training():
    """Over many draws the trainer's epochs show the small organ's slices about as often as the weights say."""
    draws = torch.cat(
        [
            epoch_order(20, organ_balanced_weights(organ_presence(_labels(), 3), 0.5), torch.Generator().manual_seed(s))
            for s in range(200)
        ]
    )
    share = ((draws == 13) | (draws == 14)).float().mean().item()
    assert 0.26 < share < 0.34  # 0.3 expected, against 0.1 for a plain shuffle


def test_trainer_epochs_follow_organ_sampling():
    data = TrainSamples(torch.randn(20, 1, 8, 8), _labels())
    config = {
        "organs": ["big", "small"],
        "spatial_size": [8, 8],
        "batch_size": 4,
        "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    }
    plain = Trainer(TrainConfig.from_dict({**config, "organ_sampling": 0.0}), "cpu")
    balanced = Trainer(TrainConfig.from_dict({**config, "organ_sampling": 0.5}), "cpu")
    assert plain._sampling_weights(data) is None
    w = balanced._sampling_weights(data)
    assert w[13].item() > 3 * w[0].item()
    assert balanced.train_epochs(data)["steps"] == plain.train_epochs(data)["steps"] == 5  # epoch length kept


def test_organ_sampling_options_are_checked():
    with pytest.raises(ValueError, match="organ_sampling must be in"):
        TrainConfig.from_dict({"organs": ["liver"], "organ_sampling": -0.1})
    # DP-SGD keeps its Poisson sampling of patients (its accountant's assumption) and ignores it.
    TrainConfig.from_dict({"organs": ["liver"], "organ_sampling": 0.5, "dp_sgd": {"enabled": True}})
