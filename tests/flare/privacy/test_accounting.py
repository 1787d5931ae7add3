"""Epsilon of repeated whole-update Gaussian releases, checked against Opacus called directly."""

import math

import pytest
from fedgin.flare.privacy.accounting import ORDERS, gaussian_epsilon, rounds_within
from opacus.accountants import RDPAccountant


def test_epsilon_grows_with_rounds_and_shrinks_with_sigma():
    by_rounds = [gaussian_epsilon(1.0, k) for k in (1, 2, 5, 30)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
    by_sigma = [gaussian_epsilon(s, 30) for s in (0.5, 1.0, 2.0, 4.0)]
    assert by_sigma == sorted(by_sigma, reverse=True) and len(set(by_sigma)) == 4
    assert gaussian_epsilon(1.0, 30, delta=1e-3) < gaussian_epsilon(1.0, 30, delta=1e-5)


def test_matches_opacus_rdp_accountant():
    for sigma, rounds in ((0.5, 30), (1.0, 1), (1.0, 30), (2.0, 30), (4.0, 100)):
        accountant = RDPAccountant()
        for _ in range(rounds):
            accountant.step(noise_multiplier=sigma, sample_rate=1.0)
        assert gaussian_epsilon(sigma, rounds, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5, alphas=ORDERS))
        # Opacus's own order grid gives a (slightly) looser bound, never a tighter one.
        assert gaussian_epsilon(sigma, rounds, 1e-5) <= accountant.get_epsilon(1e-5) + 1e-9


def test_sampling_rate_one_is_the_closed_form_gaussian_rdp():
    # RDP of k Gaussian releases at sampling rate 1: k * alpha / (2 sigma^2); converted as Opacus does.
    sigma, rounds, delta = 2.0, 30, 1e-5
    best = min(
        rounds * a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in ORDERS
    )
    assert gaussian_epsilon(sigma, rounds, delta) == pytest.approx(best)


def test_edge_cases():
    assert gaussian_epsilon(1.0, 0) == 0.0
    assert gaussian_epsilon(0.0, 3) == math.inf
    with pytest.raises(ValueError):
        gaussian_epsilon(1.0, 3, delta=0)


def test_rounds_within_a_budget():
    k = rounds_within(1.0, 10.0)
    assert gaussian_epsilon(1.0, k) <= 10.0 < gaussian_epsilon(1.0, k + 1)
    assert rounds_within(1.0, 1.0) == 0
