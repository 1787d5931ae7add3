"""Server-side validation of the sites' updates before they are averaged.

:class:`RobustAggregator` is FLARE's ``InTimeAccumulateWeightedAggregator`` (weighted FedAvg) with
a gate in front: an update with NaN/Inf values, missing or unknown keys, wrong shapes, a bad step
count, or an L2 norm per local step far above that of the updates already accepted is rejected and
logged with the site's name and the reason (never its values). The round goes on with the valid
updates.
Per step, because sites train different numbers of steps (round 1 on the real development set: 77
CT steps against 6 MRI steps, before the StepBalancer has a target), as FLARE's own percentile
filter scales by ``NUM_STEPS``. A site's claimed step count is also its weight in the average:
above the job's ``max_steps`` it is weighed as ``max_steps``, so no site owns the average by
claiming 10^6 steps.

Every check is decided in ``accept()``, so *accepted* means one thing: FLARE logs the answer,
and the StepBalancer and the best-model selector (``AcceptedModelSelector``) count only what was
accepted. The norm bound therefore compares an update with those known when it arrives: the
updates accepted before it in this round and those of the previous round (per step). The first
update of a job has nothing to compare with; it is bounded by ``max_norm_ratio`` x the global
model's own L2 norm (an update larger than the model it changes is never a training step).
Accepted updates are held and summed in ``aggregate()`` in a fixed site order, so the same updates
give the same global model whatever order they arrived in.

Note that ScatterAndGather counts a rejected update as a response for ``min_clients``; the
aggregator's own ``min_valid_updates`` decides what happens when too few updates survive: the
round then leaves the global model unchanged (a zero update) instead of averaging too few.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import Counter
from collections.abc import Mapping

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
from nvflare.app_common.app_constant import AppConstants

from fedgin.flare.update_norm import update_norm

_MAX_NAMED = 3  # keys named in one rejection reason


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
    return ", ".join(repr(k) for k in keys[:_MAX_NAMED]) + more


def _kind_name(kind) -> str:
    return str(getattr(kind, "value", kind))


def update_problem(data, reference: Mapping[str, tuple[int, ...]] | None) -> str | None:
    """Why an update's tensors cannot be averaged, or None if they can.

    Args:
        data: the update (variable name -> array).
        reference: variable name -> shape of the global model (None: keys and shapes unchecked).

    Returns:
        A short reason naming the offending keys (no values), or None.
    """
    if not isinstance(data, Mapping) or not data:
        return f"expected a non-empty dict of arrays, got {type(data).__name__}"
    if reference is not None:
        missing = set(reference) - set(data)
        unknown = set(data) - set(reference)
        if missing:
            return f"missing key(s) {_names(missing)}"
        if unknown:
            return f"unknown key(s) {_names(unknown)}"
    bad_shape, not_numeric, not_finite = [], [], []
    for key, value in data.items():
        try:
            array = np.asarray(value)
        except Exception:  # e.g. a GPU tensor or an arbitrary object
            not_numeric.append(key)
            continue
        if array.dtype.kind not in "biuf":
            not_numeric.append(key)
            continue
        if reference is not None and tuple(array.shape) != tuple(reference[key]):
            bad_shape.append(f"{key!r} {tuple(array.shape)} instead of {tuple(reference[key])}")
            continue
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            not_finite.append(key)
    if not_numeric:
        return f"non-numeric value(s) for {_names(not_numeric)}"
    if bad_shape:
        more = f" and {len(bad_shape) - _MAX_NAMED} more" if len(bad_shape) > _MAX_NAMED else ""
        return "wrong shape(s): " + ", ".join(bad_shape[:_MAX_NAMED]) + more
    if not_finite:
        return f"NaN or Inf in {len(not_finite)} tensor(s): {_names(not_finite)}"
    return None


def norm_outlier(norm: float, reference: list[float], max_norm_ratio: float | None) -> str | None:
    """Why an update's L2 norm per step is an outlier against ``reference`` (the per-step norms of
    updates already accepted), or None.

    Only a norm far above the reference's median is refused (a small update never is), so with two
    sites a huge update is caught whichever arrives second or in a later round. Like any median it
    needs a majority of sane updates.
    """
    if not max_norm_ratio or not reference:
        return None
    median = statistics.median(reference)
    if median > 0 and norm > max_norm_ratio * median:
        return (
            f"L2 norm per step {norm:.3g} is more than {max_norm_ratio:g} x the median of the others "
            f"({median:.3g}, {len(reference)} accepted update(s))"
        )
    return None


class RobustAggregator(InTimeAccumulateWeightedAggregator):
    """Weighted FedAvg over the updates that pass validation.

    Args:
        max_norm_ratio: reject an update whose L2 norm per local step exceeds this many times the
            median of the updates accepted before it (this round's and the previous round's; the
            job's first update: this many times the global model's norm). None or 0 turns it off.
        max_norm: reject an update whose L2 norm exceeds this absolute bound (None: no bound).
        max_steps: the most local steps an update is weighed by in the average (a larger claim is
            logged and weighed as this; None: no bound). The job uses the StepBalancer's cap.
        min_valid_updates: if fewer updates survive, the round keeps the global model unchanged.
            The job configs set it to ``{min_clients}``.
        exclude_vars, aggregation_weights, expected_data_kind, weigh_by_local_iter: as for
            ``InTimeAccumulateWeightedAggregator`` (one DXO per result; collections are not supported).
    """

    def __init__(
        self,
        max_norm_ratio: float | None = 10.0,
        max_norm: float | None = None,
        max_steps: int | None = None,
        min_valid_updates: int = 1,
        site_local_keys: list[str] | None = None,
        exclude_vars: str | None = None,
        aggregation_weights: dict | None = None,
        expected_data_kind: str = DataKind.WEIGHT_DIFF,
        weigh_by_local_iter: bool = True,
    ):
        if expected_data_kind not in (DataKind.WEIGHT_DIFF, DataKind.WEIGHTS):
            raise ValueError(f"expected_data_kind must be WEIGHT_DIFF or WEIGHTS, got {expected_data_kind!r}")
        if max_norm_ratio is not None and max_norm_ratio < 0:
            raise ValueError(f"max_norm_ratio must be >= 0, got {max_norm_ratio}")
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if int(min_valid_updates) < 1:
            raise ValueError(f"min_valid_updates must be >= 1, got {min_valid_updates}")
        super().__init__(exclude_vars, aggregation_weights, expected_data_kind, weigh_by_local_iter)
        self.max_norm_ratio = max_norm_ratio
        self.max_norm = max_norm
        self.max_steps = max_steps
        self.min_valid_updates = int(min_valid_updates)
        # Weights each site keeps to itself (domain-specific norm): never in an update; one that
        # carries them is rejected as having unknown keys.
        self.site_local_keys = (
            sorted(site_local_keys) if site_local_keys else None
        )  # as given: FLARE's Job API writes it back
        self._lock = threading.Lock()  # results of different sites may arrive on different threads
        self._pending: dict[str, tuple[Shareable, float]] = {}  # site -> (update, L2 norm per step)
        self._previous: list[float] = []  # L2 norms per step of the last aggregated round's updates
        self._first_shapes: dict[str, tuple[int, ...]] | None = None
        self.rejections: list[dict] = []  # {"round", "site", "reason"} over the whole job

    # -- helpers -----------------------------------------------------------------------------
    def _reference(self, fl_ctx: FLContext) -> dict[str, tuple[int, ...]] | None:
        """Keys and shapes of the current global model (or, without one, of the first valid update)."""
        model = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        weights = model.get(ModelLearnableKey.WEIGHTS) if isinstance(model, Mapping) else None
        if weights:
            local = set(self.site_local_keys or ())
            return {k: tuple(np.shape(v)) for k, v in weights.items() if k not in local}
        return self._first_shapes

    @staticmethod
    def _model_norm(fl_ctx: FLContext) -> float:
        model = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        weights = model.get(ModelLearnableKey.WEIGHTS) if isinstance(model, Mapping) else None
        return update_norm(weights) if weights else 0.0

    def _norm_problem(self, fl_ctx: FLContext, norm: float, steps: float) -> str | None:
        """The norm checks; called under the lock (the reference is the updates accepted so far)."""
        if self.max_norm is not None and norm > self.max_norm:
            return f"L2 norm {norm:.3g} exceeds max_norm {self.max_norm:g}"
        reference = [n for _, n in self._pending.values()] + self._previous
        if reference:
            return norm_outlier(norm / steps, reference, self.max_norm_ratio)
        model_norm = self._model_norm(fl_ctx)
        if self.max_norm_ratio and self._data_kind() == DataKind.WEIGHT_DIFF and model_norm > 0:
            if norm > self.max_norm_ratio * model_norm:
                return (
                    f"L2 norm {norm:.3g} is more than {self.max_norm_ratio:g} x the global model's own "
                    f"({model_norm:.3g}; the first update, nothing else to compare with)"
                )
        return None

    def _data_kind(self) -> str:
        # START_RUN turns expected_data_kind into {"": kind} (InTimeAccumulateWeightedAggregator).
        kind = self.expected_data_kind
        return kind.get(self._single_dxo_key) if isinstance(kind, dict) else kind

    def _reject(self, fl_ctx: FLContext, site: str, current_round, reason: str) -> bool:
        self.rejections.append({"round": current_round, "site": site, "reason": reason})
        # fire_event=False: a log line is enough; the reason holds names and norms, never values.
        self.log_warning(
            fl_ctx, f"[fedgin] rejected the update of {site} at round {current_round}: {reason}", fire_event=False
        )
        return False

    # -- Aggregator --------------------------------------------------------------------------
    def accept(self, shareable: Shareable, fl_ctx: FLContext) -> bool:
        site = shareable.get_peer_prop(key=ReservedKey.IDENTITY_NAME, default="?")
        current_round = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        rc = shareable.get_return_code()
        if rc and rc != ReturnCode.OK:
            return super().accept(shareable, fl_ctx)  # logs the return code and refuses it
        contribution_round = shareable.get_cookie(AppConstants.CONTRIBUTION_ROUND)
        if contribution_round != current_round:
            return self._reject(fl_ctx, site, current_round, f"late: it was computed for round {contribution_round}")
        try:
            dxo = from_shareable(shareable)
        except Exception as e:
            return self._reject(fl_ctx, site, current_round, f"not a DXO ({type(e).__name__})")
        expected = self._data_kind()
        if dxo.data_kind != expected:
            return self._reject(
                fl_ctx, site, current_round, f"data kind {_kind_name(dxo.data_kind)}, expected {_kind_name(expected)}"
            )
        steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
        if not isinstance(steps, (int, float)) or isinstance(steps, bool) or not math.isfinite(steps) or steps <= 0:
            return self._reject(
                fl_ctx, site, current_round, f"NUM_STEPS_CURRENT_ROUND {steps!r} is not a positive number"
            )
        if self.max_steps is not None and steps > self.max_steps:
            self.log_warning(
                fl_ctx,
                f"[fedgin] {site} claims {steps:g} local steps at round {current_round}: weighed as the "
                f"job's max_steps {self.max_steps}",
                fire_event=False,
            )
            steps = self.max_steps
            dxo.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, steps)
            dxo.update_shareable(shareable)
        problem = update_problem(dxo.data, self._reference(fl_ctx))
        if problem:
            return self._reject(fl_ctx, site, current_round, problem)
        norm = update_norm(dxo.data)
        with self._lock:
            if site in self._pending:
                return self._reject(fl_ctx, site, current_round, "a second update in the same round")
            problem = self._norm_problem(fl_ctx, norm, steps)
            if problem:
                return self._reject(fl_ctx, site, current_round, problem)
            self._pending[site] = (shareable, norm / steps)
            if self._first_shapes is None:
                self._first_shapes = {k: tuple(np.shape(v)) for k, v in dxo.data.items()}
        return True

    def aggregate(self, fl_ctx: FLContext) -> Shareable:
        current_round = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        with self._lock:
            pending, self._pending = self._pending, {}
            if pending:
                self._previous = [norm for _, norm in pending.values()]
        valid = {site: s for site, (s, _) in pending.items()}
        rejected = [r for r in self.rejections if r["round"] == current_round]
        summary = f"[fedgin] round {current_round}: {len(valid)} valid update(s) ({', '.join(sorted(valid)) or 'none'})"
        if rejected:
            summary += f", {len(rejected)} rejected: " + "; ".join(f"{r['site']}: {r['reason']}" for r in rejected)
        if len(valid) < self.min_valid_updates:
            self.log_error(
                fl_ctx,
                f"{summary}; fewer than min_valid_updates={self.min_valid_updates}: global model kept as is",
                fire_event=False,
            )
            return DXO(data_kind=self._data_kind(), data={}).to_shareable()
        self.log_info(fl_ctx, summary)
        for site in sorted(valid):  # a fixed order: the same updates give the same sum
            if not super().accept(valid[site], fl_ctx):
                self._reject(fl_ctx, site, current_round, "refused by the weighted aggregator (see above)")
        return super().aggregate(fl_ctx)

    def reset(self, fl_ctx: FLContext):
        with self._lock:
            self._pending = {}
        super().reset(fl_ctx)

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        super().handle_event(event_type, fl_ctx)
        if event_type == EventType.END_RUN and self.rejections:
            counts = Counter(r["site"] for r in self.rejections)
            self.log_warning(
                fl_ctx,
                f"[fedgin] {len(self.rejections)} update(s) rejected in this job: "
                + ", ".join(f"{site} {n}" for site, n in sorted(counts.items())),
                fire_event=False,
            )
