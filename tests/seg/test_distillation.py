"""Conditional distillation (ConDistFL): what it scores, where, and how the trainer uses it."""

import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.distillation import ConditionalDistillationLoss
from fedgin.seg.training import Trainer


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, :3, :3] = 1  # organ 1 labelled; organs 2 and 3 not (they appear as background)
    labelled = torch.tensor([[True, True, False, False]] * 2)
    return logits, target, labelled


def test_nothing_to_distill_when_every_organ_is_labelled():
    logits, target, _ = _batch()
    loss = ConditionalDistillationLoss()(logits, torch.randn_like(logits), target, torch.ones(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0


def test_agreeing_models_score_zero_and_disagreeing_ones_do_not():
    logits, target, labelled = _batch()
    fn = ConditionalDistillationLoss()
    assert fn(logits, logits.clone(), target, labelled).item() == pytest.approx(0.0, abs=1e-5)
    assert fn(logits, torch.randn(logits.shape, generator=torch.Generator().manual_seed(9)), target, labelled) > 0.05


def test_only_unlabelled_classes_off_the_labelled_organs_count():
    """Changing the labelled organ's logit, or any logit where the label holds that organ, leaves the
    loss unchanged: those are the supervised loss's business."""
    logits, target, labelled = _batch()
    teacher = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    teacher[:, 1] = -10.0  # the global model claims no voxel for organ 1
    fn = ConditionalDistillationLoss()
    base = fn(logits, teacher, target, labelled)
    moved = logits.clone()
    moved[:, 1] += 3.0  # the labelled organ's logit: outside the conditional distribution
    moved[:, 2:, :3, :3] += 5.0  # unlabelled classes where the label says organ 1: masked out
    torch.testing.assert_close(fn(moved, teacher, target, labelled), base)
    moved[:, 2, 5:, 5:] += 5.0  # an unlabelled class on unclaimed voxels: counts
    assert not torch.allclose(fn(moved, teacher, target, labelled), base)


def test_bad_shapes_and_options_raise():
    logits, target, labelled = _batch()
    fn = ConditionalDistillationLoss()
    with pytest.raises(ValueError, match="teacher logits"):
        fn(logits, logits[:, :3], target, labelled)
    with pytest.raises(ValueError, match="labelled mask shape"):
        fn(logits, logits, target, labelled[:, :3])
    with pytest.raises(ValueError, match="temperature must be positive"):
        ConditionalDistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="distillation_weight must be >= 0"):
        TrainConfig.from_dict({"organs": ["a"], "distillation_weight": -1})


def _site(labelled_organs):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(12, 1, 16, 16, generator=g)
    labels = torch.zeros(12, 1, 16, 16, dtype=torch.uint8)
    labels[:, :, 2:8, 2:8] = 1
    labelled = torch.zeros(12, 3, dtype=torch.bool)
    labelled[:, [0, *labelled_organs]] = True
    return TrainSamples(images, labels, labelled=labelled)


def _trainer(weight: float, **options) -> Trainer:
    config = {
        "organs": ["a", "b"],
        "spatial_size": [16, 16],
        "batch_size": 4,
        "lr": 0.01,
        "distillation_weight": weight,
        "model": {"channels": [8, 16], "strides": [2], "num_res_units": 0},
        **options,
    }
    return Trainer(TrainConfig.from_dict(config), "cpu")


def test_trainer_distills_only_at_sites_with_unlabelled_organs():
    assert _trainer(1.0)._round_teacher(_site([1, 2]).labelled_mask(3)) is None
    assert _trainer(0.0)._round_teacher(_site([1]).labelled_mask(3)) is None
    teacher = _trainer(1.0)._round_teacher(_site([1]).labelled_mask(3))
    assert teacher is not None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_distillation_ramps_over_the_rounds():
    trainer = _trainer(2.0)
    trainer.start_round(0, 5)
    assert trainer.distillation_scale == pytest.approx(0.02)
    trainer.start_round(4, 5)
    assert trainer.distillation_scale == pytest.approx(2.0)


def _two_organ_site(partial: bool) -> TrainSamples:
    """16 slices with two bright organs; ``partial``: organ 2 unlabelled (its voxels read background)."""
    labels = torch.zeros(16, 1, 16, 16, dtype=torch.uint8)
    for i in range(16):
        r = i % 6
        labels[i, :, 2 + r : 8 + r, 2:8] = 1
        labels[i, :, 9:13, 4 + r : 8 + r] = 2
    images = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.3 + labels.float()
    labelled = torch.ones(16, 3, dtype=torch.bool)
    if partial:
        labelled[:, 2] = False
        labels = torch.where(labels == 2, 0, labels)
    return TrainSamples(images, labels, labelled=labelled)


def test_distillation_holds_the_global_models_view_of_an_unlabelled_organ():
    """A global model that learnt organ 2 elsewhere (one epoch with both labels), then a round at a
    site that does not label it: with distillation the local model's probability of organ 2 on its
    voxels (given "not organ 1") stays nearer the global model's than without, same seed and data."""
    full, partial = _two_organ_site(False), _two_organ_site(True)
    organ2 = full.labels[:, 0] == 2

    def p_organ2(trainer):
        with torch.no_grad():
            return trainer.model.eval()(full.images)[:, [0, 2]].softmax(1)[:, 1][organ2].mean().item()

    elsewhere = _trainer(0.0, augmentation="none")
    elsewhere.train_epochs(full, epochs=1)
    start = p_organ2(elsewhere)
    drift = {}
    for weight in (0.0, 5.0):
        trainer = _trainer(weight, augmentation="none")
        trainer.set_weights(elsewhere.get_weights())
        trainer.start_round(9, 10)  # the full weight
        stats = trainer.train_epochs(partial, epochs=10)
        assert trainer.teacher is None and stats["steps"] == 40  # the teacher lives for the round only
        drift[weight] = abs(p_organ2(trainer) - start)
    assert drift[5.0] < 0.5 * drift[0.0], drift
