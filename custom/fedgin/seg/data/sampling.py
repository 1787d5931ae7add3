"""Organ-aware slice sampling: small organs get their share of every epoch.

A 2D epoch that visits every kept slice once shows the model the liver in almost every batch and the
gallbladder in few (real CT development set, its 1,084 training slices with an organ: liver in 89 %,
pancreas 44 %, gallbladder 20 %). nnU-Net forces a third of its patches to contain foreground, and
the FedGIN reference code balances organs per batch; here a share ``organ_sampling`` of each epoch's
samples is drawn organ-first (an organ the site labels, uniformly, then a slice that holds it,
uniformly) and the rest uniformly over all slices, with replacement, so an epoch keeps its number of
steps.
"""

from __future__ import annotations

import torch


def organ_presence(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, num_classes - 1) bool: which organs (classes 1..C-1) occur in each sample's label map.

    Args:
        labels: (N, 1, *spatial) class indices.
        num_classes: classes including background.
    """
    if labels.ndim < 3 or labels.shape[1] != 1:
        raise ValueError(f"labels must be (N, 1, *spatial), got shape {tuple(labels.shape)}")
    flat = labels.reshape(labels.shape[0], -1)
    return torch.stack([(flat == c).any(1) for c in range(1, num_classes)], dim=1)


def organ_balanced_weights(presence: torch.Tensor, share: float) -> torch.Tensor:
    """Probability of drawing each sample: ``share`` organ-first, ``1 - share`` uniform.

    Organ-first: each organ that occurs in some sample gets ``share / K`` of the mass (K such
    organs), spread evenly over the samples holding it. Samples without any organ are drawn only
    by the uniform part. Returns (N,) float64 summing to 1.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"organ_sampling must be in [0, 1], got {share}")
    n = presence.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    p = presence.to(torch.float64)
    counts = p.sum(0)
    occurring = counts > 0
    weights = torch.full((n,), (1.0 - share) / n, dtype=torch.float64)
    if not bool(occurring.any()):
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    per_organ = share / int(occurring.sum())
    weights += (p[:, occurring] / counts[occurring]).sum(1) * per_organ
    return weights / weights.sum()


def epoch_order(n: int, weights: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """The sample indices of one epoch: a permutation of ``n`` (``weights`` None), else ``n`` draws
    with replacement from ``weights``; both from ``generator`` only."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} sampling weights for {n} samples")
    return torch.multinomial(weights, n, replacement=True, generator=generator)
