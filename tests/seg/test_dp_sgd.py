"""Patient-level DP-SGD: accountant against Opacus, per-patient sensitivity, sampling, noise, training."""

import math

import numpy as np
import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.dp_sgd import DPSGDConfig, PatientDPSGD, epsilon_of
from fedgin.seg.training import Trainer
from opacus import PrivacyEngine

TINY_MODEL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def _slices(patients: list[int], size=16, seed=0) -> TrainSamples:
    """Noise slices with a bright box (class 1); ``patients[i]`` slices belong to patient i."""
    g = torch.Generator().manual_seed(seed)
    n = sum(patients)
    images = torch.rand((n, 1, size, size), generator=g) * 0.2
    labels = torch.zeros((n, 1, size, size), dtype=torch.uint8)
    for i in range(n):
        lo = int(torch.randint(0, size // 2, (1,), generator=g))
        images[i, 0, lo : lo + size // 3, lo : lo + size // 2] += 0.8
        labels[i, 0, lo : lo + size // 3, lo : lo + size // 2] = 1
    owner = torch.cat([torch.full((k,), p, dtype=torch.int64) for p, k in enumerate(patients)])
    return TrainSamples(images, labels, patients=owner)


def _config(augmentation: str = "gin", lr: float = 5e-4, **dp) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "organs": ["liver"],
            "dice_batch": True,  # asked for; DP-SGD must not use it
            "spatial_size": [16, 16],
            "model": TINY_MODEL,
            "batch_size": 4,
            "augmentation": augmentation,
            "lr": lr,
            "dp_sgd": {"enabled": True, "noise_seed": 7, **dp},
        }
    )


@pytest.mark.parametrize("accountant", ["rdp", "prv", "gdp"])
def test_epsilon_equals_opacus_privacy_engine(accountant):
    """The same sigma, sampling rate and steps through Opacus's own PrivacyEngine give the same epsilon."""
    n_records, batch, sigma, steps = 40, 8, 1.1, 30  # q = 0.2 = 1 / len(loader), as Opacus counts
    torch.manual_seed(0)  # Opacus's Poisson loader draws from the global generator
    model = torch.nn.Linear(3, 1)
    data = torch.utils.data.TensorDataset(torch.randn(n_records, 3), torch.randn(n_records, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    engine = PrivacyEngine(accountant=accountant)
    model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        poisson_sampling=True,
    )
    done = 0
    while done < steps:
        for x, y in loader:
            if done == steps:
                break
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            done += 1
    assert engine.accountant.history == [(sigma, batch / n_records, steps)]
    expected = engine.get_epsilon(delta=1e-5)
    ours = epsilon_of(accountant, [(sigma, batch / n_records, steps)], 1e-5)
    assert ours == pytest.approx(expected, rel=1e-9)
    assert 0 < ours < math.inf


def test_trainer_counts_steps_like_opacus():
    """A private round: q = patients_per_step / patients, ceil(1/q) steps an epoch, epsilon from them."""
    data = _slices([3, 2, 4, 3, 2, 3, 3, 4])  # 8 patients
    trainer = Trainer(_config(noise_multiplier=1.0, patients_per_step=2), device="cpu")
    stats = trainer.train_epochs(data)
    private = trainer.private
    assert private.num_patients == 8 and private.sample_rate == 0.25 and stats["steps"] == 4
    assert stats["epsilon"] == pytest.approx(epsilon_of("rdp", [(1.0, 0.25, 4)], 1e-5))
    trainer.train_epochs(data, min_steps=6)  # the step balancer's target raises a round's steps
    assert private.history == [(1.0, 0.25, 10)]
    assert private.epsilon(extra_steps=4) == pytest.approx(epsilon_of("rdp", [(1.0, 0.25, 14)], 1e-5))
    assert trainer.private_round_steps(data) == 4 and trainer.private_round_steps(data, min_steps=9) == 9


def _noiseless_sum(data: TrainSamples, idx: torch.Tensor, clip: float) -> torch.Tensor:
    """The clipped per-patient gradient sum of one step (sigma 0), flattened, from a fixed model."""
    trainer = Trainer(_config(noise_multiplier=0.0, max_grad_norm=clip, augmentation="none"), device="cpu")
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.0)  # keep the weights
    private = trainer.private_steps(data)
    private.optimizer = trainer.optimizer
    labelled = data.labelled_mask(2)
    trainer.model.train()
    private.step(idx, lambda i: trainer._loss(*trainer._batch(data, i, labelled)))
    expected = private.sample_rate * private.num_patients
    return torch.cat([p.grad.flatten() for p in private.params]) * expected


def test_one_patient_moves_the_sum_by_at_most_the_clip_norm():
    """Removing every slice of one patient changes the step's clipped sum by at most C, however many
    slices it has: the patient, not the slice, is the unit."""
    clip = 0.01  # far below the gradients' norms: every patient is clipped
    data = _slices([4, 4, 4])
    with_all = _noiseless_sum(data, torch.arange(12), clip)
    keep = data.patients != 1
    without = TrainSamples(data.images[keep], data.labels[keep], patients=data.patients[keep])
    without_one = _noiseless_sum(without, torch.arange(8), clip)
    assert torch.linalg.vector_norm(with_all - without_one) <= clip * 1.0001
    assert torch.linalg.vector_norm(with_all) == pytest.approx(3 * clip, rel=0.2)  # three clipped patients


def test_patient_gradient_is_the_mean_of_its_slices():
    """Unclipped (large C), the private sum equals the plain gradient of each patient's mean loss, summed.
    With the shipped batch Dice asked for too: DP-SGD scores each sample on its own (a batch-wide Dice
    would make one patient's gradient depend on the other patients of the batch)."""
    assert not Trainer(_config(), device="cpu").loss_fn.loss.dice.batch
    data = _slices([2, 3])
    private_sum = _noiseless_sum(data, torch.arange(5), clip=1e6)
    trainer = Trainer(_config(noise_multiplier=0.0, augmentation="none"), device="cpu")  # same init seed
    labelled = data.labelled_mask(2)
    trainer.model.train()
    total = 0
    for idx in (torch.arange(0, 2), torch.arange(2, 5)):
        total = total + trainer._loss(*trainer._batch(data, idx, labelled))
    grads = torch.autograd.grad(total, [p for p in trainer.model.parameters() if p.requires_grad])
    assert torch.allclose(private_sum, torch.cat([g.flatten() for g in grads]), rtol=1e-3, atol=1e-6)


def test_sampling_is_poisson_over_patients_with_at_most_k_slices():
    data = _slices([10, 1, 6, 8])
    model = torch.nn.Conv2d(1, 1, 1)
    private = PatientDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        data.patients,
        DPSGDConfig(enabled=True, patients_per_step=2, slices_per_patient=3, noise_seed=0),
        torch.device("cpu"),
    )
    g = torch.Generator().manual_seed(0)
    joined = []
    for _ in range(2000):
        idx = private.sample(g)
        owners = data.patients[idx]
        counts = torch.bincount(owners, minlength=4)
        assert counts.max() <= 3 and len(idx) == len(set(idx.tolist()))
        joined.append((counts > 0).float())
    rate = torch.stack(joined).mean(0)
    assert torch.allclose(rate, torch.full((4,), 0.5), atol=0.05)  # q = 2 / 4 for every patient


def test_noise_has_the_stated_std_and_a_secret_seed_by_default():
    data = _slices([2, 2])
    model = torch.nn.Conv2d(1, 1, 3)
    sigma, clip = 2.0, 0.5
    config = DPSGDConfig(enabled=True, noise_multiplier=sigma, max_grad_norm=clip, patients_per_step=2, noise_seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    private = PatientDPSGD(model, optimizer, data.patients, config, torch.device("cpu"))
    noise = []
    for _ in range(300):
        private.step(torch.zeros(0, dtype=torch.long), lambda i: None)  # an empty step: noise only
        noise.append(torch.cat([p.grad.flatten() for p in private.params]) * 2)  # times q N = 2
    assert torch.cat(noise).std().item() == pytest.approx(sigma * clip, rel=0.05)
    secret = []
    for _ in range(2):
        fresh = torch.nn.Conv2d(1, 1, 3)
        opt = torch.optim.SGD(fresh.parameters(), lr=0.0)
        secret.append(PatientDPSGD(fresh, opt, data.patients, DPSGDConfig(), torch.device("cpu")).noise_seed)
    assert secret[0] != secret[1]  # drawn from the OS, not from the job's seed


def test_same_noise_seed_same_model():
    data = _slices([3, 3, 3, 3])
    weights = []
    for _ in range(2):
        trainer = Trainer(_config(patients_per_step=2), device="cpu")
        trainer.train_epochs(data)
        weights.append(trainer.get_weights())
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_private_training_still_learns_without_much_noise():
    data = _slices([4] * 8)
    trainer = Trainer(_config(noise_multiplier=0.05, max_grad_norm=10.0, patients_per_step=4, lr=0.01), "cpu")
    first = trainer.train_epochs(data)["loss"]
    for _ in range(12):
        last = trainer.train_epochs(data)["loss"]
    assert last < first * 0.8


@pytest.mark.parametrize(
    "options, message",
    [
        ({"accountant": "moments"}, "accountant"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"slices_per_patient": 0}, "slices_per_patient"),
        ({"delta": 1.0}, "delta"),
        ({"max_epsilon": -1}, "max_epsilon"),
        ({"clip": 1.0}, "unknown dp_sgd option"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        _config(**options)


def test_augmentation_mixing_patients_is_refused():
    with pytest.raises(ValueError, match="amplitude"):
        TrainConfig.from_dict({"organs": ["liver"], "augmentation": "amplitude", "dp_sgd": {"enabled": True}})


def test_samples_without_patients_are_refused():
    data = _slices([2, 2])
    data.patients = None
    with pytest.raises(ValueError, match="patient"):
        Trainer(_config(), device="cpu").train_epochs(data)


def test_sampling_follows_the_secret_seed_not_the_jobs():
    data = _slices([3, 3, 3, 3, 3, 3])

    def draws(noise_seed):
        model = torch.nn.Conv2d(1, 1, 1)
        config = DPSGDConfig(enabled=True, patients_per_step=3, noise_seed=noise_seed)
        private = PatientDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), data.patients, config, "cpu")
        return [private.sample().tolist() for _ in range(20)]

    torch.manual_seed(0)  # the global generator (and any job seed) plays no part
    first = draws(7)
    torch.manual_seed(1)
    assert draws(7) == first  # the site's record reproduces its run
    assert draws(None) != draws(None)  # by default a secret drawn at the site


def test_a_later_job_continues_the_accountant_and_never_repeats_its_noise():
    data = _slices([3, 3, 3, 3, 3, 3])

    def private_of():
        model = torch.nn.Conv2d(1, 1, 1)
        config = DPSGDConfig(enabled=True, patients_per_step=3, noise_seed=7)
        return PatientDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), data.patients, config, "cpu")

    first = private_of()
    draws = [first.sample().tolist() for _ in range(10)]
    earlier = [(first.config.noise_multiplier, first.sample_rate, 40)]  # a first job's 40 steps
    later = private_of()
    later.continue_after(earlier)
    assert later.epsilon() == pytest.approx(epsilon_of("rdp", earlier, first.config.delta))
    assert later.epsilon(10) > later.epsilon() > 0
    continued = [later.sample().tolist() for _ in range(10)]
    assert continued != draws  # the same noise_seed, a new stream
    again = private_of()
    again.continue_after(earlier)
    assert [again.sample().tolist() for _ in range(10)] == continued  # still reproducible
    with pytest.raises(RuntimeError, match="already holds steps"):
        later.continue_after(earlier)


def test_secure_mode_noise_has_the_stated_std_and_ignores_the_seed():
    data = _slices([2, 2, 2, 2])
    sigma, clip = 2.0, 0.5
    runs = []
    for _ in range(2):
        model = torch.nn.Conv2d(1, 1, 3)
        config = DPSGDConfig(
            enabled=True,
            noise_multiplier=sigma,
            max_grad_norm=clip,
            patients_per_step=2,
            noise_seed=3,
            secure_mode=True,
        )
        private = PatientDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.0), data.patients, config, "cpu")
        noise = []
        for _ in range(300):
            private.step(torch.zeros(0, dtype=torch.long), lambda i: None)  # an empty step: noise only
            noise.append(torch.cat([p.grad.flatten() for p in private.params]) * 2)  # times q N = 2
        runs.append(torch.cat(noise))
        joined = [len(private.sample()) for _ in range(400)]  # 4 patients at q = 0.5, 2 slices each
        assert np.mean(joined) == pytest.approx(2 * 2, abs=0.3)
    assert runs[0].std().item() == pytest.approx(sigma * clip, rel=0.05)
    assert not torch.equal(runs[0], runs[1])  # the same noise_seed, different noise: not a PRNG's
