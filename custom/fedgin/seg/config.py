"""What a job decides about training: the options of the model, GIN and the trainer, with the
shipped defaults (chosen on the real development set; fedgin's jobs are built from them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from fedgin.seg.augmentation import check_augmentation
from fedgin.seg.data.geometry import ModelGrid
from fedgin.seg.dp_sgd import CROSS_SAMPLE_AUGMENTATIONS, DPSGDConfig
from fedgin.seg.losses import PARTIAL_LABEL_MODES
from fedgin.seg.model import DEFAULT_CHANNELS, DEFAULT_NUM_RES_UNITS, DEFAULT_STRIDES, SegmentationUNet

LR_SCHEDULES = ("constant", "cosine", "poly")


@dataclass
class GINConfig:
    """GIN's options (Ouyang et al. 2022 defaults), used when ``augmentation`` is "gin" or "gin_ipa"."""

    n_layers: int = 4
    interm_channels: int = 2
    kernel_sizes: tuple[int, ...] = (1, 3)
    alpha_range: tuple[float, float] = (0.0, 1.0)

    def kwargs(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "interm_channels": self.interm_channels,
            "kernel_sizes": tuple(self.kernel_sizes),
            "alpha_range": tuple(self.alpha_range),
        }


@dataclass
class ModelConfig:
    spatial_dims: int = 2
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    strides: tuple[int, ...] = DEFAULT_STRIDES
    num_res_units: int = DEFAULT_NUM_RES_UNITS
    dropout: float = 0.0
    affine_norm: bool = False


@dataclass
class TrainConfig:
    """Everything a job decides about training; the site decides nothing but its data.

    The defaults are the shipped ones, chosen on the real development set (docs/results-real-scans.md,
    "Results on real scans"): fedgin's jobs are built from them (``fedgin.flare.job_definitions``).
    """

    organs: list[str]
    # 192 x 192 slices: real-set CT Dice 0.773 against 0.733 at 128 x 128 (seeds 0-1, bench/results/fed_ablation).
    spatial_size: tuple[int, ...] = (192, 192)
    # In-plane spacing (mm) every volume is resampled to, then cropped to the body; training takes
    # random spatial_size windows, prediction a sliding window (fedgin.seg.data.geometry). None:
    # every slice resized to spatial_size whatever its field of view.
    pixel_spacing: tuple[float, float] | None = None
    # Overlap of neighbouring sliding windows (spacing scheme), MONAI's SlidingWindowInferer.
    sliding_window_overlap: float = 0.25
    # 2.5D: each axial slice goes in with this many neighbouring slices on either side as extra
    # input channels (0: the slice alone). 2D jobs only.
    context_slices: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    gin: GINConfig = field(default_factory=GINConfig)
    local_epochs: int = 1
    # A round's local work is local_epochs epochs, continued (fresh shuffles) up to at least this
    # many optimizer steps: a small site then pulls on the average as hard as a large one (FedAvg
    # weighs updates by steps). 0: epochs only.
    min_local_steps: int = 0
    # Train at least as many steps as the busiest site did last round (the server's StepBalancer
    # sends the number; fedgin.flare.step_balance), so every site's update weighs alike in FedAvg.
    match_site_steps: bool = True
    batch_size: int = 16
    lr: float = 5e-4
    # Learning rate over the run (federated rounds, or epochs of a centralized/local run), set at
    # the start of each: "constant", "cosine" (to 0 at the end) or "poly" (nnU-Net's (1 - t)^0.9).
    lr_schedule: str = "constant"
    weight_decay: float = 1e-4
    eval_batch_size: int = 32
    background_slice_fraction: float = 0.1
    # Share of each epoch's samples drawn organ-first (an organ the site labels, then a slice that
    # holds it; fedgin.seg.data.sampling), the rest uniformly; 0: every kept slice once per epoch.
    # DP-SGD ignores it: its accountant needs its own Poisson sampling of patients.
    # With dice_batch, real-set CT pancreas 0.265 / 0.141 and gallbladder 0.124 / 0.000 against
    # 0.044 / 0.000 and 0.000 / 0.000 without, MRI spleen learnt through CT 0.250 / 0.123 against
    # 0.137 / 0.069 (seeds 0 / 1, 20 rounds, bench/results/fed_ablation_transfer).
    organ_sampling: float = 0.5
    # Dice over the whole batch per class (nnU-Net's batch Dice) instead of per sample: a slice
    # without the pancreas then adds no empty-organ Dice term of its own. DP-SGD ignores it (per-sample Dice).
    dice_batch: bool = True
    # Organs a site does not label: "marginal" merges them into its background in the loss,
    # "background" teaches them as background there (the naive baseline).
    partial_labels: str = "marginal"
    # Weight of conditional distillation (ConDistFL; fedgin.seg.distillation) from the global model a
    # round starts from, on the classes a sample does not label: the site keeps what the others
    # taught it. Ramped from 1 % of it in the first round to all of it in the last, as ConDistFL
    # does; 0: off. Only sites with unlabelled organs pay for it (one more forward pass a step).
    # DP-SGD ignores it. At 1.0: MRI spleen learnt through CT 0.383 / 0.253, CT pancreas 0.422 /
    # 0.315 against 0 (seeds 0 / 1; CT gallbladder 0.001 / 0.000, about 10 minutes more a 20-round run).
    distillation_weight: float = 1.0
    distillation_temperature: float = 2.0
    # Intensity augmentation family (fedgin.seg.augmentation.AUGMENTATIONS): "gin" (FedGIN), "none"
    # (FedAvg), "randconv", ... Options go to the family's batch function ("gin" uses ``gin``'s).
    augmentation: str = "gin"
    augmentation_options: dict = field(default_factory=dict)
    # Weight of the consistency loss between the views of multi-view families (GIN-IPA: 10).
    consistency_weight: float = 10.0
    # Domain-specific normalization (FedBN style): the norm layers' scale and shift (affine instance
    # norm) stay at each site; only the other weights are sent and averaged.
    local_norm: bool = False
    # Record-level differential privacy: DP-SGD with the patient as the unit (fedgin.seg.dp_sgd).
    dp_sgd: DPSGDConfig = field(default_factory=DPSGDConfig)
    amp: bool = True
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        raw = dict(raw)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        if "organs" not in raw or not raw["organs"]:
            raise ValueError("training options need a non-empty 'organs' list")
        model = raw.pop("model", {}) or {}
        gin = raw.pop("gin", {}) or {}
        dp_sgd = raw.pop("dp_sgd", {}) or {}
        if "enabled" in gin:
            raise ValueError("gin.enabled is not an option: `augmentation` chooses GIN ('gin') or none ('none')")
        nested = (("model", model, ModelConfig), ("gin", gin, GINConfig), ("dp_sgd", dp_sgd, DPSGDConfig))
        for name, sub, kind in nested:
            bad = sorted(set(sub) - set(kind.__dataclass_fields__))
            if bad:
                raise ValueError(f"unknown {name} option(s) {bad}; known: {sorted(kind.__dataclass_fields__)}")
        cfg = cls(model=ModelConfig(**model), gin=GINConfig(**gin), dp_sgd=DPSGDConfig(**dp_sgd), **raw)
        cfg.dp_sgd.check()
        if cfg.dp_sgd.enabled and cfg.augmentation in CROSS_SAMPLE_AUGMENTATIONS:
            raise ValueError(
                f"augmentation {cfg.augmentation!r} mixes the samples of a batch (patients): not allowed with dp_sgd"
            )
        if cfg.local_norm:
            cfg.model.affine_norm = True  # local norm layers need parameters to keep
        check_augmentation(cfg.augmentation, cfg.augmentation_options)
        if cfg.partial_labels not in PARTIAL_LABEL_MODES:
            raise ValueError(f"partial_labels must be one of {PARTIAL_LABEL_MODES}, got {cfg.partial_labels!r}")
        if cfg.distillation_weight < 0 or cfg.distillation_temperature <= 0:
            raise ValueError(
                "distillation_weight must be >= 0 and distillation_temperature > 0, got "
                f"{cfg.distillation_weight} and {cfg.distillation_temperature}"
            )
        if not 0.0 <= cfg.organ_sampling <= 1.0:
            raise ValueError(f"organ_sampling must be in [0, 1], got {cfg.organ_sampling}")
        if cfg.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {cfg.lr_schedule!r}")
        if cfg.min_local_steps < 0 or cfg.local_epochs < 1:
            raise ValueError(
                f"local_epochs must be >= 1 and min_local_steps >= 0, got {cfg.local_epochs}, {cfg.min_local_steps}"
            )
        if len(cfg.spatial_size) != cfg.model.spatial_dims:
            raise ValueError(
                f"spatial_size {list(cfg.spatial_size)} does not match spatial_dims {cfg.model.spatial_dims}"
            )
        ModelGrid.of(cfg)  # checks pixel_spacing
        if isinstance(cfg.context_slices, bool) or not isinstance(cfg.context_slices, int) or cfg.context_slices < 0:
            raise ValueError(f"context_slices must be a whole number >= 0, got {cfg.context_slices!r}")
        if cfg.context_slices and cfg.model.spatial_dims != 2:
            raise ValueError("context_slices (2.5D) is for 2D jobs; a 3D job sees the whole volume")
        if cfg.pixel_spacing is not None:
            cfg.pixel_spacing = tuple(float(v) for v in cfg.pixel_spacing)
        if not 0 <= cfg.sliding_window_overlap < 1:
            raise ValueError(f"sliding_window_overlap must be in [0, 1), got {cfg.sliding_window_overlap}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def augmentation_kwargs(self) -> dict:
        """Options of the augmentation's batch function; GIN's come from ``gin`` unless overridden."""
        kind = self.augmentation
        base = self.gin.kwargs() if kind in ("gin", "gin_ipa") else {}
        return {**base, **self.augmentation_options}

    def lr_at(self, index: int, total: int) -> float:
        """The learning rate of round (or epoch) ``index`` of ``total`` (0-based) under ``lr_schedule``;
        ``lr`` when the total is unknown (0)."""
        if self.lr_schedule == "constant" or total <= 0:
            return self.lr
        t = min(max(index, 0), total) / total
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.lr * (1.0 - t) ** 0.9

    def round_min_steps(self, busiest_site_steps: int | None) -> int:
        """A federated round's least optimizer steps: ``min_local_steps``, raised to the busiest site's
        steps of the last round (the StepBalancer's target) when ``match_site_steps``."""
        if busiest_site_steps is None or not self.match_site_steps:
            return self.min_local_steps
        return max(self.min_local_steps, int(busiest_site_steps))

    @property
    def num_classes(self) -> int:
        return len(self.organs) + 1

    def model_args(self) -> dict:
        """The :class:`~fedgin.seg.model.SegmentationUNet` arguments of this config (the server's
        initial model and every site's model are built from them)."""
        m = self.model
        return {
            "num_classes": self.num_classes,
            "spatial_dims": m.spatial_dims,
            "channels": list(m.channels),
            "strides": list(m.strides),
            "num_res_units": m.num_res_units,
            "dropout": m.dropout,
            "init_seed": self.seed,
            "affine_norm": m.affine_norm,
            "in_channels": 1 + 2 * self.context_slices,
        }

    def build_model(self) -> SegmentationUNet:
        return SegmentationUNet(**self.model_args())
