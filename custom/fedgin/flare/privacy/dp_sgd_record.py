"""The site's DP-SGD record and its per-round report (fedgin.seg.dp_sgd does the training).

After each private round the executor appends to the site's DP-SGD ledger in its ``local/`` folder
(:mod:`fedgin.flare.privacy.ledger`: over all its jobs, plus the sampling rate, each round's steps
and the secret noise seed, which is why the file never leaves the site), logs
``[fedgin] privacy: round r DP-SGD sigma s clip C q q steps n epsilon e delta d per patient``,
streams ``privacy/dp_sgd_epsilon`` and ``privacy/dp_sgd_delta`` and puts the same two figures in the
update's DXO meta. Before a round it checks the budget: a round that would take epsilon past
``max_epsilon`` is not trained (the executor answers EARLY_TERMINATION, as for the Gaussian filter).
A new job starts its accountant from the ledger's steps (:func:`earlier_steps`): epsilon per patient
is the site's lifetime figure.
"""

from __future__ import annotations

from pathlib import Path

from fedgin.flare.metrics import DP_SGD_EPSILON
from fedgin.flare.privacy.ledger import json_epsilon, read_ledger, write_ledger
from fedgin.seg.dp_sgd import PatientDPSGD

META_EPSILON = "dp_sgd_epsilon"
META_DELTA = "dp_sgd_delta"
SCALAR_EPSILON = DP_SGD_EPSILON
SCALAR_DELTA = "privacy/dp_sgd_delta"


def over_budget(private: PatientDPSGD, steps: int) -> str | None:
    """Why ``steps`` more private steps may not be taken (None: they fit the budget)."""
    budget = private.config.max_epsilon
    if budget is None:
        return None
    after = private.epsilon(steps)
    if after <= budget:
        return None
    return (
        f"privacy budget spent: DP-SGD epsilon {private.epsilon():.4g} per patient so far, this round's "
        f"{steps} steps would reach {after:.4g} > max_epsilon {budget:g} (delta {private.config.delta:g})"
    )


def earlier_steps(path: Path | None) -> list[tuple[float, float, int]]:
    """The (sigma, q, steps) of every round in the ledger (earlier jobs), Opacus's history layout."""
    if path is None:
        return []
    ledger = read_ledger(path)
    sigma, q = ledger.get("noise_multiplier"), ledger.get("sample_rate")
    return [
        (r.get("noise_multiplier", sigma), r.get("sample_rate", q), r["steps"])
        for r in ledger["rounds"]
        if r.get("steps")
    ]


def record_round(
    path: Path | None, site: str, private: PatientDPSGD, round_number: int, steps: int, job: str | None = None
) -> dict:
    """Append a trained round to the site's record; returns the round's entry (epsilon, steps, ...).

    ``budget_spent`` is set when another round of as many steps would exceed ``max_epsilon``.
    """
    config = private.config
    epsilon = private.epsilon()
    entry = {
        "job": job,
        "round": round_number,
        "steps": steps,
        "noise_multiplier": config.noise_multiplier,
        "sample_rate": private.sample_rate,
        "epsilon": json_epsilon(epsilon),
        "privacy_rounds": 0,
    }
    spent = over_budget(private, steps) is not None
    if path is None:
        return {**entry, "epsilon": epsilon, "budget_spent": spent}
    ledger = read_ledger(path)
    ledger.update(
        site=site,
        mechanism="dp-sgd",
        unit="patient (all slices of one training volume)",
        accountant=f"opacus {config.accountant}",
        noise_multiplier=config.noise_multiplier,
        max_grad_norm=config.max_grad_norm,
        sample_rate=private.sample_rate,
        patients=private.num_patients,
        slices_per_patient=config.slices_per_patient,
        delta=config.delta,
        max_epsilon=config.max_epsilon,
        noise_seed=private.noise_seed,  # secret: whoever knows it can regenerate the noise
        secure_mode=config.secure_mode,
        budget_spent=spent,
    )
    entry["privacy_rounds"] = len(ledger["rounds"]) + 1
    ledger["rounds"].append(entry)
    write_ledger(path, ledger)
    return {**entry, "epsilon": epsilon, "budget_spent": spent}


def mark_spent(path: Path | None, reason: str) -> None:
    """Note in the record that the budget stopped the site (so later rounds stop at once)."""
    if path is None:
        return
    ledger = read_ledger(path)
    ledger.update(budget_spent=True, stopped=reason)
    write_ledger(path, ledger)


def round_line(private: PatientDPSGD, round_number: int, steps: int, epsilon: float) -> str:
    config = private.config
    return (
        f"[fedgin] privacy: round {round_number} DP-SGD sigma {config.noise_multiplier:g} clip "
        f"{config.max_grad_norm:g} q {private.sample_rate:.3g} steps {steps} epsilon {epsilon:.4g} "
        f"delta {config.delta:g} per patient"
    )
