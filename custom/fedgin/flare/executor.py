"""The site side of a fedgin job: a FLARE Executor that trains and scores on the site's own data.

Only weight differences (after the job's privacy filters) and aggregate Dice scores leave the
site; the site config (data paths, label ids) is read from the site's own ``local/`` folder.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants

from fedgin.flare import figure_release
from fedgin.flare.compat import advertise_keyword_options, serialize_always
from fedgin.flare.cpu_turns import Turn, cpu_turn, turns_lock_path
from fedgin.flare.local_norm import LOCAL_NORM_FILE
from fedgin.flare.metrics import BUDGET_SPENT, round_scalars
from fedgin.flare.privacy import dp_sgd_record
from fedgin.flare.privacy.ledger import DP_SGD, GAUSSIAN, budget_spent, ledger_path, read_ledger
from fedgin.flare.round_log import format_round
from fedgin.flare.site_files import find_site_config
from fedgin.flare.step_balance import TARGET_STEPS_HEADER
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import SiteData, load_site_data
from fedgin.seg.site_config import SiteConfig, load_site_config
from fedgin.seg.training import Trainer


def runtime_line() -> str:
    """Python, its environment and the versions of the site's runtime (what ``pip install .`` put there)."""
    import monai
    import nvflare

    python = ".".join(map(str, sys.version_info[:3]))
    versions = f"torch {torch.__version__}, MONAI {monai.__version__}, FLARE {nvflare.__version__}"
    return f"runtime Python {python} in {sys.prefix}, {versions}"


def site_seed(job_seed: int, site_name: str) -> int:
    """A site's own seed (data draws, batch order, GIN): the job's seed shifted by the site's name."""
    return job_seed + zlib.crc32(site_name.encode()) % 10_000


def shaped_like(weights: dict, model_state: Mapping[str, torch.Tensor]) -> dict:
    """``weights`` with every flat layer given its shape and dtype in ``model_state``.

    FLARE's ``HEModelDecryptor`` (encrypted aggregation) hands each decrypted layer over as a flat
    list of floats: a CKKS vector has no shape. A layer that arrives with its shape, or whose size
    does not match, is left alone, so :meth:`Trainer.set_weights` still rejects a wrong model.
    """
    shaped = {}
    for key, value in weights.items():
        ref = model_state.get(key)
        flat = isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim == 1)
        if ref is not None and flat and np.size(value) == ref.numel():
            dtype = torch.empty(0, dtype=ref.dtype).numpy().dtype
            value = np.asarray(value, dtype=dtype).reshape(tuple(ref.shape))
        shaped[key] = value
    return shaped


def _finite_metrics(metrics: dict, prefix: str = "val_") -> dict:
    # Organs a site does not label are NaN; leave them out so results stay valid JSON.
    return {prefix + k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


class SegmentationExecutor(Executor):
    """Handles ``train``, ``validate`` and ``submit_model`` for a segmentation job.

    Args:
        organs: the job's organ names; class i of the model is organs[i - 1].
        train_task_name, validate_task_name, submit_model_task_name: task names of the workflows.
        **training: every other argument is a :class:`fedgin.seg.config.TrainConfig` option
            (spatial_size, model, gin, local_epochs, batch_size, lr, weight_decay, seed, ...).
    """

    def __init__(
        self,
        organs: list[str],
        train_task_name: str = AppConstants.TASK_TRAIN,
        validate_task_name: str = AppConstants.TASK_VALIDATION,
        submit_model_task_name: str = AppConstants.TASK_SUBMIT_MODEL,
        **training,
    ):
        super().__init__()
        self.config = TrainConfig.from_dict({"organs": list(organs), **training})
        # FLARE's Job API writes a component's arguments back from attributes named after them
        # (``_<name>`` too), always every option the job gave (fedgin.flare.compat).
        self.organs = list(organs)
        for key, value in training.items():
            setattr(self, f"_{key}", value)
        serialize_always(self, ("organs", *training))
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.submit_model_task_name = submit_model_task_name
        self.site_name = "?"
        self.site: SiteConfig | None = None
        self.data: SiteData | None = None
        self.trainer: Trainer | None = None
        self.trained = False
        self.setup_error: str | None = None
        self.turns_path: str | None = None

    # -- setup -------------------------------------------------------------------------------
    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.AFTER_TASK_RESULT_FILTER:
            # Every result filter passed: the round's figures may leave, as the policy allows.
            figure_release.release(self, fl_ctx, dp_sgd=self.config.dp_sgd.enabled)
        elif event_type == EventType.START_RUN:
            self.site_name = fl_ctx.get_identity_name()
            try:
                local_dir = fl_ctx.get_engine().get_workspace().get_site_config_dir()
                self.setup(find_site_config(local_dir, self.site_name), fl_ctx)
            except Exception as e:  # keep the site alive; every task then reports the failure
                self.setup_error = f"{type(e).__name__}: {e}"
                # The message names data files: log it here only. fire_event=True would hand it to
                # FLARE's error collector, which the server's admins can read.
                self.log_error(fl_ctx, f"[fedgin] {self.site_name} cannot start: {self.setup_error}", fire_event=False)

    def setup(self, site_config: str | Path, fl_ctx: FLContext):
        """Read the site config, load and cache the site's data once, build the trainer."""
        self.site = load_site_config(site_config)
        seed = site_seed(self.config.seed, self.site_name)
        self.config.seed = seed
        start = time.time()
        # Sites that share this machine's cores compute one at a time (fedgin.flare.cpu_turns), loading too.
        turns_lock = turns_lock_path()
        with cpu_turn(turns_lock):
            self.data = load_site_data(
                self.site,
                self.config.organs,
                self.config.spatial_size,
                self.config.model.spatial_dims,
                splits=("training", "validation"),
                background_slice_fraction=self.config.background_slice_fraction,
                seed=seed,
                pixel_spacing=self.config.pixel_spacing,
                context_slices=self.config.context_slices,
            )
        self.trainer = Trainer(self.config)
        on_cpu = self.trainer.device.type == "cpu"
        self.turns_path = turns_lock if on_cpu else None
        cpu = f" ({torch.get_num_threads()} threads{', CPU turns' if self.turns_path else ''})" if on_cpu else ""
        self.log_info(
            fl_ctx,
            f"[fedgin] {self.site_name}: {self.site.modality} site ready on {self.trainer.device}{cpu}, "
            f"{len(self.data.train)} training samples, {len(self.data.validation)} validation volumes, "
            f"loaded in {time.time() - start:.1f} s",
        )
        # Which environment runs the site (local log only): the operator checks their install here.
        self.log_info(fl_ctx, f"[fedgin] {self.site_name}: {runtime_line()}")
        if self.config.dp_sgd.enabled:
            private = self.trainer.private_steps(self.data.train)
            dp = self.config.dp_sgd
            seed = "a secret seed drawn here" if dp.noise_seed is None else "the job's fixed noise_seed (not private)"
            self.log_info(
                fl_ctx,
                f"[fedgin] {self.site_name}: DP-SGD per patient: {private.num_patients} patients, q "
                f"{private.sample_rate:.3g}, {private.steps_per_epoch} steps an epoch, sigma {dp.noise_multiplier:g}, "
                f"clip {dp.max_grad_norm:g}, delta {dp.delta:g}, max_epsilon {dp.max_epsilon}; noise from {seed}",
            )
        missing = self.site.missing_organs(self.config.organs)
        if missing:
            self.log_info(
                fl_ctx,
                f"[fedgin] {self.site_name}: partial labels, no {missing} here "
                f"(loss: {self.config.partial_labels}; validation scores {self.data.scored_organs})",
            )

    # -- tasks -------------------------------------------------------------------------------
    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if self.setup_error is not None:
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        try:
            if task_name == self.train_task_name:
                return self._train(shareable, fl_ctx, abort_signal)
            if task_name == self.validate_task_name:
                return self._validate(shareable, fl_ctx, abort_signal)
            if task_name == self.submit_model_task_name:
                return self._submit_model(fl_ctx)
            self.log_error(fl_ctx, f"[fedgin] unknown task {task_name!r}", fire_event=False)
            return make_reply(ReturnCode.TASK_UNKNOWN)
        except Exception as e:
            self.log_exception(fl_ctx, f"[fedgin] {self.site_name}: task {task_name} failed: {type(e).__name__}: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)

    def _received_weights(self, shareable: Shareable) -> dict:
        dxo = from_shareable(shareable)
        if dxo.data_kind != DataKind.WEIGHTS:
            raise ValueError(f"expected WEIGHTS from the server, got {dxo.data_kind}")
        return shaped_like(dxo.data, self.trainer.model.state_dict())

    def _train(self, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        current_round = shareable.get_header(AppConstants.CURRENT_ROUND, 0)
        num_rounds = shareable.get_header(AppConstants.NUM_ROUNDS, 0)
        min_steps = self._min_steps(shareable)
        spent = self._privacy_spent(fl_ctx, min_steps)
        if spent:
            # The privacy filter (or DP-SGD) released this site's last update within its budget. The
            # server goes on with the other sites while min_clients can still be met (poc/README.md).
            self.log_info(fl_ctx, f"[fedgin] {self.site_name}: round {current_round + 1}: {spent}; not training")
            figure_release.hold(fl_ctx, {BUDGET_SPENT: self._epsilon_spent(fl_ctx)}, current_round + 1)
            return make_reply(ReturnCode.EARLY_TERMINATION)
        global_weights = self._received_weights(shareable)
        self.trainer.set_weights(global_weights)

        with self._cpu_turn(fl_ctx, abort_signal) as turn:
            if abort_signal.triggered:  # aborted while waiting for the turn
                return make_reply(ReturnCode.TASK_ABORTED)
            start = time.time()
            initial = self.trainer.evaluate(self.data.validation, self.data.scored_organs)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            self.trainer.start_round(current_round, num_rounds)
            stats = self.trainer.train_epochs(
                self.data.train, should_abort=lambda: abort_signal.triggered, min_steps=min_steps
            )
            if stats["aborted"]:
                return make_reply(ReturnCode.TASK_ABORTED)
            seconds = time.time() - start
        self.trained = True

        if self.trainer.local_keys:
            self._save_local_norm(fl_ctx)
        # Local (domain-specific) norm weights never leave the site: the update holds the others.
        local = self.trainer.get_shared_weights()
        diff = {k: local[k] - global_weights[k] for k in local}
        initial_metrics = _finite_metrics(initial)
        progress = format_round(
            current_round + 1, num_rounds, self.site_name, initial["mean_dice"], stats["loss"], stats["steps"]
        )
        waited = f", waited {turn.waited_s:.1f} s for a CPU turn" if turn.waited_s >= 0.05 else ""
        self.log_info(fl_ctx, f"[fedgin] {progress} ({seconds:.1f} s){waited}")
        # Held until the result filters passed, then sent as the privacy policy allows.
        figure_release.hold(fl_ctx, round_scalars(initial, stats["loss"], stats["steps"], seconds), current_round + 1)
        meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: stats["steps"]}
        if not self.config.dp_sgd.enabled:  # under DP-SGD the validation metrics stay here too
            meta[MetaKey.INITIAL_METRICS] = initial_metrics
        dxo = DXO(data_kind=DataKind.WEIGHT_DIFF, data=diff, meta=meta)
        if self.config.dp_sgd.enabled:
            self._report_private_round(fl_ctx, dxo, current_round + 1, stats["steps"])
        result = dxo.to_shareable()
        result.set_header(AppConstants.CURRENT_ROUND, current_round)  # result filters see the round (noise seed)
        return result

    def _privacy_spent(self, fl_ctx: FLContext, min_steps: int) -> str | None:
        """Why this site may not train this round for privacy (its filter's or DP-SGD's budget)."""
        spent = budget_spent(ledger_path(fl_ctx, GAUSSIAN)) or budget_spent(ledger_path(fl_ctx, DP_SGD))
        if spent or not self.config.dp_sgd.enabled:
            return spent
        first = self.trainer.private is None
        private = self.trainer.private_steps(self.data.train)
        if first:  # this job's accountant starts where the site's earlier jobs left it
            private.continue_after(dp_sgd_record.earlier_steps(ledger_path(fl_ctx, DP_SGD)))
        spent = dp_sgd_record.over_budget(private, self.trainer.private_round_steps(self.data.train, min_steps))
        if spent:
            dp_sgd_record.mark_spent(ledger_path(fl_ctx, DP_SGD), spent)
        return spent

    @staticmethod
    def _epsilon_spent(fl_ctx: FLContext) -> float:
        """The largest epsilon in this site's ledgers (0 when none says; the server's line shows it)."""
        spent = [0.0]
        for mechanism in (GAUSSIAN, DP_SGD):
            path = ledger_path(fl_ctx, mechanism)
            rounds = read_ledger(path)["rounds"] if path is not None else []
            spent += [r["epsilon"] for r in rounds[-1:] if isinstance(r.get("epsilon"), int | float)]
        return max(spent)

    def _report_private_round(self, fl_ctx: FLContext, dxo: DXO, round_number: int, steps: int) -> None:
        """DP-SGD's (epsilon, delta) of this round: the site's record and log, the streamed figures, the meta."""
        private = self.trainer.private
        path = ledger_path(fl_ctx, DP_SGD)
        entry = dp_sgd_record.record_round(path, self.site_name, private, round_number, steps, fl_ctx.get_job_id())
        epsilon, delta = entry["epsilon"], private.config.delta
        self.log_info(fl_ctx, dp_sgd_record.round_line(private, round_number, steps, epsilon))
        if entry["budget_spent"]:
            self.log_info(fl_ctx, f"[fedgin] privacy: {self.site_name} trained its last DP-SGD round within budget")
        figures = {dp_sgd_record.SCALAR_EPSILON: epsilon, dp_sgd_record.SCALAR_DELTA: delta}
        figure_release.hold(fl_ctx, figures, round_number)
        dxo.set_meta_prop(dp_sgd_record.META_EPSILON, epsilon)
        dxo.set_meta_prop(dp_sgd_record.META_DELTA, delta)

    def _min_steps(self, shareable: Shareable) -> int:
        target = shareable.get_header(TARGET_STEPS_HEADER)
        return self.config.round_min_steps(target if isinstance(target, int) and not isinstance(target, bool) else None)

    @contextmanager
    def _cpu_turn(self, fl_ctx: FLContext, abort_signal: Signal) -> Iterator[Turn]:
        with cpu_turn(self.turns_path, should_abort=lambda: abort_signal.triggered) as turn:
            if self.turns_path and not turn.taken and not abort_signal.triggered:
                self.log_warning(
                    fl_ctx,
                    f"[fedgin] {self.site_name}: no CPU turn after {turn.waited_s:.0f} s; computing anyway",
                    False,
                )
            yield turn

    def _save_local_norm(self, fl_ctx: FLContext) -> None:
        """Keep this site's norm weights in its run folder: with the global model they make the site's model."""
        if fl_ctx.get_engine() is None or fl_ctx.get_job_id() is None:
            return
        path = Path(fl_ctx.get_workspace().get_run_dir(fl_ctx.get_job_id())) / LOCAL_NORM_FILE
        weights = self.trainer.get_weights()
        torch.save({k: torch.as_tensor(weights[k]) for k in sorted(self.trainer.local_keys)}, path)

    def _validate(self, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        weights = self._received_weights(shareable)
        owner = shareable.get_header(AppConstants.MODEL_OWNER, "?")
        own = self.trainer.get_weights()
        try:
            self.trainer.set_weights(weights)
            with self._cpu_turn(fl_ctx, abort_signal):
                metrics = self.trainer.evaluate(self.data.validation, self.data.scored_organs)
        finally:
            self.trainer.set_weights(own)
        if abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        self.log_info(fl_ctx, f"[fedgin] {self.site_name}: model of {owner} val mean Dice {metrics['mean_dice']:.3f}")
        return DXO(data_kind=DataKind.METRICS, data=_finite_metrics(metrics)).to_shareable()

    def _submit_model(self, fl_ctx: FLContext) -> Shareable:
        # The local model would leave as full weights, past filters made for weight diffs: a job
        # may ask for it (cross-site evaluation's submit_model), only the site config can allow it.
        if not self.site.share_local_model:
            self.log_info(fl_ctx, f"[fedgin] {self.site_name}: local model not shared (site config share_local_model)")
            return make_reply(ReturnCode.EMPTY_RESULT)
        if not self.trained:
            return make_reply(ReturnCode.EMPTY_RESULT)
        return DXO(data_kind=DataKind.WEIGHTS, data=self.trainer.get_shared_weights()).to_shareable()


# FLARE's Job API reads a component's arguments from its constructor's signature: name every
# TrainConfig option (fedgin.flare.compat).
advertise_keyword_options(
    SegmentationExecutor.__init__,
    (
        (f.name, None if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "organs"
    ),
)
