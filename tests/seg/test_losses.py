"""The marginal loss for partial labels: unlabelled organs merge into background, labelled ones do not."""

import pytest
import torch
from fedgin.seg.losses import MarginalDiceCELoss
from monai.losses import DiceCELoss


def _logits(favoured: torch.Tensor, num_classes: int = 4, strength: float = 8.0) -> torch.Tensor:
    """(B, C, 8, 8) logits that strongly predict class ``favoured[b, y, x]``."""
    onehot = torch.nn.functional.one_hot(favoured.long(), num_classes).permute(0, 3, 1, 2).float()
    return onehot * strength


def test_all_labelled_equals_monai_dice_ce():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 4, 8, 8), torch.randint(0, 4, (3, 1, 8, 8))
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    loss = MarginalDiceCELoss("marginal")
    assert torch.allclose(loss(logits, target), expected)
    assert torch.allclose(loss(logits, target, torch.ones(3, 4, dtype=torch.bool)), expected)


def test_predicting_an_unlabelled_organ_on_background_is_not_punished():
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, :4] = 1  # organ 1 labelled in the top half
    favoured = target[:, 0].clone()
    favoured[:, 4:, :4] = 2  # the model sees organ 2 where this site says "background"
    logits = _logits(favoured)
    perfect = _logits(target[:, 0])
    labelled = torch.tensor([[True, True, False, True]] * 2)  # organ 2 not labelled at this site

    marginal, naive = MarginalDiceCELoss("marginal"), MarginalDiceCELoss("background")
    assert marginal(logits, target, labelled) == pytest.approx(float(marginal(perfect, target, labelled)), abs=1e-3)
    # Taught as background, the same prediction costs a lot.
    assert naive(logits, target, labelled) > naive(perfect, target, labelled) + 0.3


def test_predicting_a_labelled_organ_on_background_is_still_punished():
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, :4] = 1
    favoured = target[:, 0].clone()
    favoured[:, 4:, :4] = 3  # organ 3 IS labelled here, so this is a real false positive
    labelled = torch.tensor([[True, True, False, True]] * 2)
    loss = MarginalDiceCELoss("marginal")
    assert loss(_logits(favoured), target, labelled) > loss(_logits(target[:, 0]), target, labelled) + 0.3


def test_mixed_batch_is_the_size_weighted_mean_of_its_label_sets():
    torch.manual_seed(1)
    logits, target = torch.randn(3, 4, 8, 8), torch.randint(0, 2, (3, 1, 8, 8))
    full = torch.ones(4, dtype=torch.bool)
    partial = torch.tensor([True, True, False, False])
    loss = MarginalDiceCELoss("marginal")
    mixed = loss(logits, target, torch.stack([full, partial, full]))
    expected = (loss(logits[[0, 2]], target[[0, 2]]) * 2 + loss(logits[[1]], target[[1]], partial[None])) / 3
    assert torch.allclose(mixed, expected)


def test_gradients_reach_merged_classes_and_bad_inputs_raise():
    logits = torch.randn(1, 4, 8, 8, requires_grad=True)
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    MarginalDiceCELoss()(logits, target, torch.tensor([[True, True, False, False]])).backward()
    assert logits.grad[:, 2].abs().sum() > 0
    with pytest.raises(ValueError, match="labelled mask shape"):
        MarginalDiceCELoss()(logits, target, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="partial-label mode"):
        MarginalDiceCELoss("ignore")


def test_batch_dice_scores_the_batch_as_one():
    """dice_batch: a sample without the organ adds no Dice term of its own (nnU-Net's batch Dice)."""
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[0, 0, :4, :4] = 2  # only the first sample holds class 2
    batch = MarginalDiceCELoss(batch=True)
    torch.testing.assert_close(
        batch(logits, target), DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, target)
    )
    assert not torch.allclose(batch(logits, target), MarginalDiceCELoss()(logits, target))


def test_trainer_uses_batch_dice_when_asked():
    from fedgin.seg.config import TrainConfig
    from fedgin.seg.training import Trainer

    small = {"organs": ["liver"], "spatial_size": [8, 8], "model": {"channels": [4, 8], "strides": [2]}}
    assert Trainer(TrainConfig.from_dict({**small, "dice_batch": True}), "cpu").loss_fn.loss.dice.batch
    assert not Trainer(TrainConfig.from_dict({**small, "dice_batch": False}), "cpu").loss_fn.loss.dice.batch
    assert Trainer(TrainConfig.from_dict(small), "cpu").loss_fn.loss.dice.batch  # the shipped default
