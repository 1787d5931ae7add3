"""A differentially private result filter: clip the whole weight diff and add Gaussian noise.

Each round the site's update (all parameter arrays together) is scaled down to L2 norm at most
``clip_norm`` C, then every coordinate gets independent N(0, (sigma * C)^2) noise. That is the
Gaussian mechanism with sensitivity C, applied once per round to the whole update (sampling rate
1); :mod:`fedgin.flare.privacy.accounting` turns k rounds into (epsilon, delta). The guarantee is per
site and user-level: it covers anything the site's data could change in its updates, not only one
record, and it holds for the updates alone (see "Differential privacy" in poc/README.md).

Add it to a job's ``task_result_filters`` for task ``train`` (see
:func:`fedgin.flare.privacy.filters.privacy_filter_config`).
"""

from __future__ import annotations

import secrets
import zlib

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from fedgin.flare.figure_release import DP_FIGURES, RELEASE_FIGURES, hold
from fedgin.flare.metrics import GAUSSIAN_DELTA, GAUSSIAN_EPSILON
from fedgin.flare.privacy.accounting import DEFAULT_DELTA, composed_epsilon, gaussian_epsilon
from fedgin.flare.privacy.ledger import GAUSSIAN, json_epsilon, ledger_path, read_ledger, write_ledger
from fedgin.flare.update_norm import update_norm
from fedgin.seg.secure_random import secure_normal

# DXO meta keys the server sees (aggregate numbers only).
META_EPSILON = "epsilon"
META_DELTA = "delta"
META_ROUNDS = "privacy_rounds"


class PrivacyBudgetExceeded(RuntimeError):
    """Releasing this update would take the site past ``max_epsilon``."""


def clip_and_noise(
    arrays: dict[str, np.ndarray], clip_norm: float, noise_multiplier: float, rng: np.random.Generator | None
) -> tuple[dict[str, np.ndarray], float]:
    """The Gaussian mechanism on a whole update.

    Args:
        arrays: parameter name -> floating-point array (an integer array is refused: it could be
            neither clipped nor noised meaningfully, and left as is it would escape the guarantee).
        clip_norm: C, the L2 norm the whole update is clipped to.
        noise_multiplier: sigma; the noise std per coordinate is sigma * C.
        rng: the noise generator; None: the operating system's CSPRNG (secure mode,
            :mod:`fedgin.seg.secure_random`).

    Returns:
        The new arrays (same dtypes) and the update's norm before clipping.
    """
    for name, a in arrays.items():
        if not np.issubdtype(np.asarray(a).dtype, np.floating):
            raise TypeError(
                f"GaussianPrivacy: {name!r} has dtype {np.asarray(a).dtype}; only floating-point arrays can be "
                "clipped and noised (use a model without integer buffers, e.g. instance norm, or exclude it)"
            )
    norm = update_norm(arrays)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip_norm
    out = {}
    for name in sorted(arrays):  # a fixed order, so the same generator gives the same noise per array
        a = np.asarray(arrays[name])
        noisy = a.astype(np.float64) * scale
        if std > 0:
            noisy += secure_normal(a.shape, std) if rng is None else rng.normal(0.0, std, size=a.shape)
        out[name] = noisy.astype(a.dtype)
    return out, norm


def noise_generator(seed: int, site: str, release: int) -> np.random.Generator:
    """A generator that differs per site and per release (the site's n-th update over all its jobs,
    so a second job's round 1 never repeats the first job's noise), the same for the same three values."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(site.encode()), int(release)]))


class GaussianPrivacy(DXOFilter):
    """Clip each outgoing weight diff to L2 norm ``clip_norm`` and add Gaussian noise.

    Per round it logs ``[fedgin] privacy: round r sigma s clip C epsilon e delta d`` (r 1-based, as
    in the progress lines), appends the round to the site's ledger (in its ``local/`` folder, over
    all its jobs: :mod:`fedgin.flare.privacy.ledger`) and puts ``epsilon``, ``delta`` and
    ``privacy_rounds`` into the DXO meta for the server. Epsilon is the site's lifetime spend: every
    release of earlier jobs on the same dataset composed with this one (RDP, each with its sigma).

    Args:
        noise_multiplier: sigma, noise std relative to ``clip_norm`` (0: clipping only, no guarantee).
        clip_norm: C, the L2 norm of the whole update after clipping.
        seed: with the site name and the release's number, seeds the noise (fresh noise every
            release and site). None (the default) draws a secret seed from the operating system, kept
            in the site's ledger only: a seed written in the job is known to the server, which
            could then regenerate the noise and subtract it, so a fixed seed is for research runs.
        delta: the delta of the reported (epsilon, delta).
        max_epsilon: the site's lifetime budget. When one more round would exceed it, the ledger says
            ``budget_spent`` and the executor stops training (its train task then fails with
            EARLY_TERMINATION); an update that would exceed it is refused here as well.
        secure: draw the noise from the operating system's CSPRNG (:mod:`fedgin.seg.secure_random`)
            instead of the seeded generator: for real deployments (``seed`` is then unused and a
            run cannot be reproduced).
        release_figures: the per-round figures (tags) that may leave the site besides the privacy
            figures (:mod:`fedgin.flare.figure_release`); default only ``train/steps``. Name
            ``val_dice/mean`` to also keep the validation metrics in the update's meta (best-model
            selection); they are computed outside the mechanism.
        data_kinds: only ``["WEIGHT_DIFF"]`` (the default). Full weights are refused: clipping a
            whole model to norm C would destroy it, and its noise would not be an update's.
    """

    def __init__(
        self,
        noise_multiplier: float,
        clip_norm: float,
        seed: int | None = None,
        delta: float = DEFAULT_DELTA,
        max_epsilon: float | None = None,
        secure: bool = False,
        release_figures: list[str] | None = None,
        data_kinds: list[str] | None = None,
    ):
        data_kinds = list(data_kinds or [DataKind.WEIGHT_DIFF])
        if data_kinds != [DataKind.WEIGHT_DIFF]:
            raise ValueError(
                f"GaussianPrivacy filters WEIGHT_DIFF only, got data_kinds {data_kinds}: send weight differences "
                "(clipping full WEIGHTS to clip_norm would destroy the model)"
            )
        super().__init__(supported_data_kinds=[DataKind.WEIGHT_DIFF], data_kinds_to_filter=data_kinds)
        if not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        if noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        first = gaussian_epsilon(noise_multiplier, 1, delta)  # also checks delta
        if max_epsilon is not None and first > max_epsilon:
            raise ValueError(
                f"max_epsilon {max_epsilon} is below one round's epsilon {first:.3g} at noise_multiplier "
                f"{noise_multiplier}: no update could ever leave the site"
            )
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.seed = seed
        self._noise_seed = secrets.randbits(63) if seed is None else int(seed)
        self.delta = float(delta)
        self.max_epsilon = None if max_epsilon is None else float(max_epsilon)
        self.secure = bool(secure)
        self.release_figures = list(DP_FIGURES if release_figures is None else release_figures)

    def epsilon(self, rounds: int) -> float:
        """Epsilon after ``rounds`` released updates."""
        return gaussian_epsilon(self.noise_multiplier, rounds, self.delta)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO:
        site = fl_ctx.get_identity_name()
        path = ledger_path(fl_ctx, GAUSSIAN)
        if path is None:
            raise RuntimeError("GaussianPrivacy keeps its record in the site's workspace: the context has no engine")
        ledger = read_ledger(path)
        # Each earlier release with its own sigma (an entry without one is from the ledger's sigma).
        sigmas = [float(r.get("noise_multiplier", ledger.get("noise_multiplier", 0.0))) for r in ledger["rounds"]]
        released = len(sigmas) + 1
        epsilon = composed_epsilon([*sigmas, self.noise_multiplier], self.delta)
        if self.max_epsilon is not None and epsilon > self.max_epsilon:
            # Normally the executor stopped before training; refusing here keeps the promise anyway.
            raise PrivacyBudgetExceeded(
                f"{site}: update {released} would reach epsilon {epsilon:.3g} > max_epsilon {self.max_epsilon} "
                f"(ledger {path})"
            )
        current_round = shareable.get_header(AppConstants.CURRENT_ROUND, None)
        if current_round is None:
            current_round = fl_ctx.get_prop(AppConstants.CURRENT_ROUND, released - 1)

        rng = None if self.secure else noise_generator(ledger.get("noise_seed", self._noise_seed), site, released)
        dxo.data, norm = clip_and_noise(dxo.data, self.clip_norm, self.noise_multiplier, rng)

        after_next = composed_epsilon([*sigmas, self.noise_multiplier, self.noise_multiplier], self.delta)
        spent = self.max_epsilon is not None and after_next > self.max_epsilon
        ledger.update(
            site=site,
            mechanism="gaussian",
            accountant="opacus RDPAccountant, sampling rate 1",
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            delta=self.delta,
            max_epsilon=self.max_epsilon,
            budget_spent=spent,
            noise_seed=ledger.get("noise_seed", self._noise_seed),  # secret: it regenerates the noise
            secure_noise=self.secure,
        )
        ledger["rounds"].append(
            {
                "job": fl_ctx.get_job_id(),
                "round": current_round + 1,
                "privacy_rounds": released,
                "noise_multiplier": self.noise_multiplier,
                "epsilon": json_epsilon(epsilon),
                "update_norm": norm,
            }
        )
        write_ledger(path, ledger)

        self.log_info(
            fl_ctx,
            f"[fedgin] privacy: round {current_round + 1} sigma {self.noise_multiplier:g} clip {self.clip_norm:g} "
            f"epsilon {epsilon:.4g} delta {self.delta:g}",
        )
        if spent:
            self.log_info(
                fl_ctx, f"[fedgin] privacy: {site} released its last update within max_epsilon {self.max_epsilon:g}"
            )
        # The site's privacy spend joins its figures, sent once every result filter has passed; the
        # others leave as this site's policy says (fedgin.flare.figure_release).
        hold(fl_ctx, {GAUSSIAN_EPSILON: epsilon, GAUSSIAN_DELTA: self.delta}, current_round + 1)
        fl_ctx.set_prop(RELEASE_FIGURES, list(self.release_figures), private=True, sticky=False)
        if "val_dice/mean" not in self.release_figures:  # nor do the validation metrics in the meta
            dxo.remove_meta_props([MetaKey.INITIAL_METRICS])
        dxo.set_meta_prop(META_EPSILON, epsilon)
        dxo.set_meta_prop(META_DELTA, self.delta)
        dxo.set_meta_prop(META_ROUNDS, released)
        return dxo
