"""(epsilon, delta) of a site's updates after k rounds of the Gaussian mechanism.

Each round the site releases its whole model update once, clipped to L2 norm C and with Gaussian
noise of std sigma * C per coordinate: one Gaussian mechanism with sensitivity C and noise
multiplier sigma, sampling rate q = 1 (no subsampling: the update of every round is released).
k rounds compose; Opacus's Renyi-DP accountant converts the composition to (epsilon, delta).

The unit of privacy is the site's whole contribution: the released updates against those of a site
whose data contributed nothing (update 0, at distance at most C: the add/remove convention of
DP-FedAvg and Opacus). So epsilon is a per-site, user-level bound over the rounds. Between any two
datasets of a site the distance is up to 2C: that is the epsilon of ``noise_multiplier / 2``.
"""

from __future__ import annotations

import math
import warnings

from opacus.accountants import RDPAccountant

DEFAULT_DELTA = 1e-5
# Opacus's default orders plus orders near 1 (large epsilon: small sigma, many rounds) and large
# orders (small epsilon: large sigma, few rounds), so the optimum order is inside the grid there too.
ORDERS = [1 + x / 100 for x in range(1, 10)] + RDPAccountant.DEFAULT_ALPHAS + [80, 128, 256, 512, 1024]


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """Epsilon after ``rounds`` releases with ``noise_multiplier`` sigma at sampling rate 1.

    Args:
        noise_multiplier: sigma (noise std / clip norm); 0 gives no guarantee (``math.inf``).
        rounds: number of releases so far (0 gives 0).
        delta: the delta of the (epsilon, delta) guarantee.

    Returns:
        Epsilon (``math.inf`` when sigma is 0).
    """
    if noise_multiplier < 0 or rounds < 0 or not 0 < delta < 1:
        raise ValueError(
            f"need noise_multiplier >= 0, rounds >= 0, 0 < delta < 1; got {noise_multiplier}, {rounds}, {delta}"
        )
    return composed_epsilon([float(noise_multiplier)] * int(rounds), delta)


def composed_epsilon(noise_multipliers: list[float], delta: float = DEFAULT_DELTA) -> float:
    """Epsilon after one release per entry of ``noise_multipliers`` (sampling rate 1), composed by
    the same RDP accountant: releases of different jobs with different sigmas add up.

    Returns 0 for no release, ``math.inf`` when any sigma is 0.
    """
    if not 0 < delta < 1 or any(s < 0 for s in noise_multipliers):
        raise ValueError(f"need sigmas >= 0 and 0 < delta < 1; got {noise_multipliers}, {delta}")
    if not noise_multipliers:
        return 0.0
    if any(s == 0 for s in noise_multipliers):
        return math.inf
    accountant = RDPAccountant()
    for sigma in noise_multipliers:  # step() merges identical consecutive steps into one entry
        accountant.step(noise_multiplier=float(sigma), sample_rate=1.0)
    with warnings.catch_warnings():
        # Opacus warns when the best order is at the grid's edge; the bound is still valid.
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta, alphas=ORDERS))


def rounds_within(
    noise_multiplier: float, max_epsilon: float, delta: float = DEFAULT_DELTA, limit: int = 10_000
) -> int:
    """The largest number of rounds whose epsilon stays within ``max_epsilon`` (at most ``limit``)."""
    if gaussian_epsilon(noise_multiplier, 1, delta) > max_epsilon:
        return 0
    low, high = 1, 2
    while high <= limit and gaussian_epsilon(noise_multiplier, high, delta) <= max_epsilon:
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # epsilon grows with rounds: bisect
        mid = (low + high) // 2
        low, high = (mid, high) if gaussian_epsilon(noise_multiplier, mid, delta) <= max_epsilon else (low, mid)
    return low
