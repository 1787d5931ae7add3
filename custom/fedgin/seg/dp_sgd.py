"""Record-level differential privacy at a site: DP-SGD with the patient as the unit of privacy.

2D training sees slices, but a slice is not a person: one patient gives dozens of slices, and a
guarantee per slice would let a model learn a whole patient. Here the protected record is a
**patient** (every slice of one volume): adding or removing one patient from a site's training
data changes each step's noiseless gradient sum by at most ``max_grad_norm``. Each step
(Abadi et al. 2016, https://arxiv.org/abs/1607.00133, with per-user clipping as in McMahan et al.
2018, https://arxiv.org/abs/1710.06963):

1. Poisson sampling of patients: each of the site's N patients joins the step independently with
   probability q = ``patients_per_step`` / N (Opacus's ``DPDataLoader`` samples records the same
   way); a step may hold no patient and still adds noise;
2. up to ``slices_per_patient`` of a joining patient's slices, drawn at random;
3. per-slice gradients from Opacus's ``GradSampleModule``, averaged per patient: one gradient per
   patient, clipped to L2 norm C = ``max_grad_norm`` over all parameters;
4. the clipped gradients summed, N(0, (sigma C)^2) noise added to every coordinate, the sum divided
   by the expected number of patients q N;
5. the optimizer (AdamW) steps on that gradient (post-processing: no further privacy cost).

Opacus's accountant (RDP by default, or PRV / GDP) composes the steps of (sigma, q) into the site's
(epsilon, delta) per patient. GIN runs on each slice before the forward pass and uses no other
slice, so it costs nothing; augmentations that mix samples (``amplitude``) are refused.

The noise and the Poisson sampling come from generators seeded by ``noise_seed``, which must stay
secret at the site: whoever knows it can regenerate the noise, and whoever knows which patients
joined a step loses the amplification by subsampling the accountant counts on. (The job's ``seed``,
which the server knows, seeds only the GIN draws.) None (the default) draws it from the operating
system's entropy; the site's privacy record keeps it so the site (only) can reproduce a run.
A seeded PRNG is not a cryptographic generator: for a real deployment set ``secure_mode`` (noise
and sampling from the operating system's CSPRNG, :mod:`fedgin.seg.secure_random`).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.accountants import create_accountant

from fedgin.seg.secure_random import secure_normal, secure_uniform

ACCOUNTANTS = ("rdp", "prv", "gdp")
# Augmentations whose output for one sample depends on another sample of the batch.
CROSS_SAMPLE_AUGMENTATIONS = ("amplitude",)


@dataclass
class DPSGDConfig:
    """DP-SGD's options (a job's ``dp_sgd`` training option).

    Args:
        enabled: train with DP-SGD (per-patient clipping and noise) instead of plain steps.
        noise_multiplier: sigma, the noise std relative to ``max_grad_norm`` (0: clipping only,
            no guarantee: epsilon is infinite).
        max_grad_norm: C, the L2 norm each patient's gradient is clipped to.
        patients_per_step: the expected number of patients per step (q N).
        slices_per_patient: at most this many slices of a sampled patient enter a step.
        delta: the delta of the reported (epsilon, delta); keep it well below 1 / N.
        max_epsilon: the site's budget: a round that would take epsilon past it is not trained.
        accountant: Opacus accountant, "rdp", "prv" or "gdp".
        noise_seed: the noise generator's seed; None draws a secret one (see the module doc).
        secure_mode: draw the noise and the sampling from the operating system's CSPRNG
            (:mod:`fedgin.seg.secure_random`) instead of the seeded generators: for real deployments;
            such a run cannot be reproduced.
    """

    enabled: bool = False
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    patients_per_step: float = 4.0
    slices_per_patient: int = 4
    delta: float = 1e-5
    max_epsilon: float | None = None
    accountant: str = "rdp"
    noise_seed: int | None = None
    secure_mode: bool = False

    def check(self) -> None:
        """Raise a ValueError naming the option that is out of range."""
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"dp_sgd.accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.noise_multiplier < 0 or not self.max_grad_norm > 0:
            raise ValueError(
                f"dp_sgd needs noise_multiplier >= 0 and max_grad_norm > 0, got "
                f"{self.noise_multiplier} and {self.max_grad_norm}"
            )
        if not self.patients_per_step > 0 or self.slices_per_patient < 1:
            raise ValueError(
                f"dp_sgd needs patients_per_step > 0 and slices_per_patient >= 1, got "
                f"{self.patients_per_step} and {self.slices_per_patient}"
            )
        if not 0 < self.delta < 1:
            raise ValueError(f"dp_sgd.delta must be in (0, 1), got {self.delta}")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ValueError(f"dp_sgd.max_epsilon must be > 0, got {self.max_epsilon}")


def epsilon_of(accountant_name: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon after the steps in ``history`` ((sigma, q, steps) entries, Opacus's layout)."""
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    accountant = create_accountant(accountant_name)
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():
        # Opacus warns when the best RDP order is at the edge of its grid; the bound still holds.
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


class PatientDPSGD:
    """DP-SGD steps of one site's model, the patient as the unit of privacy (see the module doc).

    Args:
        model: the site's model; Opacus hooks are added to it (its weights stay shared with it).
        optimizer: the optimizer stepping on the private gradient.
        patients: (N_samples,) patient (volume) index of each training sample.
        config: the DP-SGD options.
        device: where the noise is drawn (the model's device).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        patients: torch.Tensor,
        config: DPSGDConfig,
        device: torch.device,
    ):
        config.check()
        if patients is None or len(patients) == 0:
            raise ValueError("DP-SGD needs to know which patient (volume) each training slice comes from")
        self.config = config
        self.optimizer = optimizer
        self.module = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        self.params = [p for p in model.parameters() if p.requires_grad]
        ids, self.patient_of = torch.unique(torch.as_tensor(patients), return_inverse=True)
        self.num_patients = len(ids)
        self.slices = [(self.patient_of == p).nonzero(as_tuple=True)[0] for p in range(self.num_patients)]
        self.sample_rate = min(1.0, config.patients_per_step / self.num_patients)
        self.steps_per_epoch = math.ceil(1.0 / self.sample_rate)
        self.noise_seed = secrets.randbits(63) if config.noise_seed is None else int(config.noise_seed)
        self.noise_generator = torch.Generator(device=device).manual_seed(self.noise_seed)
        self.sampling_generator = torch.Generator().manual_seed((self.noise_seed + 1) % 2**63)
        self.device = device
        self.history: list[tuple[float, float, int]] = []  # (sigma, q, steps), Opacus's layout

    def continue_after(self, history: list[tuple[float, float, int]]) -> None:
        """Start from steps already taken on these patients (earlier jobs: the site's ledger), so
        epsilon composes over them; the generators move on to a stream of their own (seeded by the
        noise seed and the steps so far), so a fixed ``noise_seed`` never repeats earlier noise."""
        if self.history:
            raise RuntimeError("continue_after: this accountant already holds steps (call it once, before training)")
        self.history = [(float(s), float(q), int(n)) for s, q, n in history]
        done = sum(n for _, _, n in self.history)
        if done:
            seeds = np.random.SeedSequence([self.noise_seed, done]).generate_state(2, dtype=np.uint64)
            self.noise_generator.manual_seed(int(seeds[0]) % 2**63)
            self.sampling_generator.manual_seed(int(seeds[1]) % 2**63)

    # -- accounting --------------------------------------------------------------------------
    def epsilon(self, extra_steps: int = 0) -> float:
        """Epsilon per patient after the steps taken so far (plus ``extra_steps`` more)."""
        history = list(self.history)
        if extra_steps:
            history.append((self.config.noise_multiplier, self.sample_rate, int(extra_steps)))
        return epsilon_of(self.config.accountant, history, self.config.delta)

    def _count_step(self) -> None:
        sigma, q = self.config.noise_multiplier, self.sample_rate
        if self.history and self.history[-1][:2] == (sigma, q):
            self.history[-1] = (sigma, q, self.history[-1][2] + 1)
        else:
            self.history.append((sigma, q, 1))

    # -- steps -------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample indices of one step: Poisson over patients, then up to k slices of each; from the
        secret :attr:`sampling_generator` unless ``generator`` is given (tests)."""
        secure = self.config.secure_mode and generator is None
        generator = self.sampling_generator if generator is None else generator
        draws = (
            torch.from_numpy(secure_uniform(self.num_patients))
            if secure
            else torch.rand(self.num_patients, generator=generator)
        )
        joined = (draws < self.sample_rate).nonzero(as_tuple=True)[0]
        chosen = []
        for p in joined.tolist():
            slices = self.slices[p]
            if secure:  # a random order: the argsort of secure uniforms
                order = torch.from_numpy(np.argsort(secure_uniform(len(slices))))
            else:
                order = torch.randperm(len(slices), generator=generator)
            chosen.append(slices[order[: self.config.slices_per_patient]])
        return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)

    def step(self, idx: torch.Tensor, batch_loss: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """One private step on samples ``idx``; returns the batch's mean loss (NaN when empty).

        ``batch_loss(idx)`` runs the forward pass through :attr:`module` and returns the batch's
        mean loss over its samples (a multi-view batch: the views of a sample count as that sample).
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = math.nan
        summed = [torch.zeros_like(p) for p in self.params]
        if len(idx):
            loss = batch_loss(idx)
            with warnings.catch_warnings():
                # Opacus's full backward hooks note that the images need no gradient: as intended.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                (loss * len(idx)).backward()  # each sample's gradient is that of its own loss
            loss_value = float(loss.detach())
            summed = self._clipped_patient_sum(idx)
        std = self.config.noise_multiplier * self.config.max_grad_norm
        expected = self.sample_rate * self.num_patients
        for p, total in zip(self.params, summed, strict=True):
            if self.config.secure_mode:
                noise = torch.from_numpy(secure_normal(tuple(p.shape), std)).to(self.device)
            else:
                noise = torch.normal(0.0, std, p.shape, generator=self.noise_generator, device=self.device)
            p.grad = (total + noise.to(total.dtype)) / expected
            p.grad_sample = None
        self.optimizer.step()
        self._count_step()
        return loss_value

    def _clipped_patient_sum(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Per-patient mean of the per-sample gradients, clipped to C, summed over the patients."""
        owners = self.patient_of[idx].to(self.device)
        rows = self.params[0].grad_sample.shape[0]
        if rows % len(idx):
            raise RuntimeError(f"{rows} per-sample gradients for {len(idx)} samples")
        owners = owners.repeat(rows // len(idx))  # views of a sample follow each other block-wise
        present, group = torch.unique(owners, return_inverse=True)
        counts = torch.bincount(group[: len(idx)], minlength=len(present))  # slices per patient (one view)
        per_patient = []
        for p in self.params:
            grads = p.grad_sample.reshape(rows, -1)
            grouped = torch.zeros(len(present), grads.shape[1], dtype=grads.dtype, device=grads.device)
            grouped.index_add_(0, group, grads)
            per_patient.append(grouped / counts[:, None].to(grads.dtype))
        norms = torch.sqrt(sum((g.double() ** 2).sum(1) for g in per_patient))
        factors = (self.config.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        return [
            (g * factors[:, None].to(g.dtype)).sum(0).reshape(p.shape)
            for g, p in zip(per_patient, self.params, strict=True)
        ]
