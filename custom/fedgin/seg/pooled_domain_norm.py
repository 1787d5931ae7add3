"""Domain-specific normalization for pooled (centralized) training.

The federated form is FedBN (``local_norm``: each site keeps its norm weights). Trained in one
process, the same idea is DSBN (Chang et al., `Domain-Specific Batch Normalization for Unsupervised
Domain Adaptation <https://arxiv.org/abs/1906.03950>`_, CVPR 2019): one set of norm weights per
domain, every batch drawn from one domain and normalized (and trained) with that domain's set,
all other weights shared. Here a domain is a training site, as in FedBN, so the centralized and
federated runs of the family differ only in where the data sits. Each set also keeps its own AdamW
state, as separate parameters would. A site is scored with the shared weights and its own set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.training import Trainer

__all__ = ["DomainNorms", "train_domain_epochs"]


class DomainNorms:
    """Per-domain values (and optimizer state) of a trainer's norm weights, swapped in on demand.

    Args:
        trainer: a :class:`Trainer` built with ``local_norm`` (affine norm layers).
        domains: the domain names; every set starts from the model's current norm weights.

    Raises:
        ValueError: if the trainer's model has no norm weights to keep per domain.
    """

    def __init__(self, trainer: Trainer, domains: Sequence[str]):
        if not trainer.local_keys:
            raise ValueError("domain-specific norm needs a job with local_norm: true (affine norm layers)")
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"domains must be distinct names, got {list(domains)}")
        self.trainer = trainer
        state = trainer.model.state_dict(keep_vars=True)
        self._tensors = {k: state[k] for k in sorted(trainer.local_keys)}  # the live parameters/buffers
        self._params = {k: t for k, t in self._tensors.items() if isinstance(t, torch.nn.Parameter)}
        self.values = {d: {k: t.detach().clone() for k, t in self._tensors.items()} for d in domains}
        self._opt_state: dict[str, dict] = {d: {} for d in domains}
        self.active: str | None = None

    @torch.no_grad()
    def activate(self, domain: str) -> None:
        """Put ``domain``'s norm weights and their optimizer state into the model."""
        if domain not in self.values:
            raise KeyError(f"unknown domain {domain!r}; known: {sorted(self.values)}")
        if domain == self.active:
            return
        opt_state = self.trainer.optimizer.state
        if self.active is not None:
            for k, t in self._tensors.items():
                self.values[self.active][k].copy_(t)
            for k, p in self._params.items():
                self._opt_state[self.active][k] = opt_state.pop(p, {})
        for k, t in self._tensors.items():
            t.copy_(self.values[domain][k])
        for k, p in self._params.items():
            own = self._opt_state[domain].get(k)
            if own:
                opt_state[p] = own
            else:
                opt_state.pop(p, None)  # AdamW starts this domain's moments afresh
        self.active = domain

    def state_dict(self, domain: str) -> dict[str, torch.Tensor]:
        """The full model state with ``domain``'s norm weights (a copy, on the CPU)."""
        self.activate(domain)
        return {k: v.detach().cpu().clone() for k, v in self.trainer.model.state_dict().items()}


def train_domain_epochs(
    trainer: Trainer, parts: Mapping[str, TrainSamples], norms: DomainNorms, epochs: int = 1
) -> dict:
    """Epochs over every domain's samples: single-domain batches in a seeded, shuffled order.

    Each epoch cuts every domain's shuffled samples into batches and trains the batches of all
    domains in one shuffled order, each with its own domain's norm weights.

    Returns:
        ``{"loss": mean loss, "steps": optimizer steps}``.
    """
    bs = trainer.config.batch_size
    labelled = {d: data.labelled_mask(trainer.config.num_classes) for d, data in parts.items()}
    losses = []
    for _ in range(epochs):
        batches = []
        for domain, data in parts.items():
            order = torch.randperm(len(data), generator=trainer.shuffle_generator)
            batches += [(domain, order[s : s + bs]) for s in range(0, len(order), bs)]
        for i in torch.randperm(len(batches), generator=trainer.shuffle_generator).tolist():
            domain, idx = batches[i]
            norms.activate(domain)
            losses.append(trainer.train_batch(parts[domain], idx, labelled[domain]))
    return {"loss": float(np.mean(losses)) if losses else math.nan, "steps": len(losses)}
