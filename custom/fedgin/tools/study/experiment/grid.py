"""The FedGIN study as a grid of runs: settings (MRI:CT label ratios, zero MRI labels, partial labels)
× methods × seeds.

Methods (same model, loss, optimizer, epochs, evaluation; only where the data sits differs):

- ``local_ct`` / ``local_mri``: one model per modality, trained on that modality's sites alone;
- ``centralized`` (and ``centralized_gin``): all sites' training data pooled in one process;
- ``fedavg``: the FLARE job without GIN; ``fedgin``: the FLARE job with GIN;
- zero-MRI-labels setting: only CT trains (``local_ct`` without and ``local_ct_gin`` with GIN),
  MRI is only evaluated;
- partial-labels setting: FedGIN and FedAvg where the MRI sites lack some organs, trained with the
  marginal loss (``fedgin_marginal``, ``fedavg_marginal``) or with those organs taught as background
  (``fedgin_background``, ``fedavg_background``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

METHODS = ("local_ct", "local_mri", "centralized", "centralized_gin", "fedavg", "fedgin")
# centralized_gin is an option (--methods): it costs as much as a federated run.
DEFAULT_METHODS = ("local_ct", "local_mri", "centralized", "fedavg", "fedgin")
ZERO_MRI_METHODS = ("local_ct", "local_ct_gin")
# FedAvg too: at the grid's budget FedGIN does not learn the small organs a CHAOS-like site lacks
# (pancreas, gallbladder), FedAvg does, so its pair shows what teaching them as background costs.
PARTIAL_METHODS = ("fedgin_marginal", "fedgin_background", "fedavg_marginal", "fedavg_background")
# Methods that use GIN; every other one trains on plain intensities unless it names its family.
WITH_GIN = ("centralized_gin", "fedgin", "local_ct_gin", "fedgin_marginal", "fedgin_background")
# Augmentation families compared against none and GIN (centralized and FedAvg): method names
# centralized_<family> and fedavg_<family>.
# "local_norm" is domain-specific normalization: norm weights per site, kept at the site (FedBN)
# or, pooled in one process, one set per training site (DSBN, fedgin.seg.pooled_domain_norm).
AUGMENTATION_FAMILIES = ("randconv", "amplitude", "gin_ipa", "local_norm")


def augmentation_methods(families) -> tuple[str, ...]:
    return tuple(f"{base}_{family}" for family in families for base in ("centralized", "fedavg"))


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    setting: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting}/{self.method}/seed{self.seed}"

    @property
    def federated(self) -> bool:
        return self.method.startswith("fed")

    @property
    def augmentation(self) -> str:
        """The intensity augmentation family this run trains with."""
        for family in AUGMENTATION_FAMILIES:
            if self.method.endswith(f"_{family}"):
                return family
        return "gin" if self.method in WITH_GIN else "none"

    @property
    def gin(self) -> bool:
        return self.augmentation == "gin"


@dataclass
class ExperimentConfig:
    """What the grid runs. The defaults are the full phantom study; :meth:`quick` is a smoke grid.

    Attributes:
        task: "abdomen" or "heart" (picks the jobs ``fed{gin,avg}_<task>``).
        ratios: MRI:CT training-case ratios as 1:k, given as k (1 → 1:1, 5 → 1:5).
        zero_mri: also run the setting where MRI has no labels at all (CT trains alone).
        partial_organs: organs the MRI sites do not label in the partial-labels setting (empty: skip).
        partial_methods: the methods of that setting (a part of :data:`PARTIAL_METHODS`).
        partial_ratio: the ratio (k) used for the partial-labels setting.
        methods: methods of the ratio settings.
        seeds: training seeds (model initialization, batch order, GIN draws); data stay fixed.
        rounds: federated rounds; centralized and local runs train ``rounds × local_epochs`` epochs.
        local_epochs: epochs per round.
        training: overrides of the job's executor args (spatial_size, model, batch_size, lr, ...).
        phantom_cases: training/validation/test cases per phantom site (only when the grid makes
            its own phantoms).
        phantom_size: phantom grid scale (1.0: 96×96×40 CT, 80×80×30 MRI; 0.75: 72×72×30, 60×60×22).
        augmentations: families compared against no augmentation and GIN, for centralized and
            FedAvg, in the ``augmentation_ratio`` setting (empty: no comparison).
        augmentation_ratio: the MRI:CT ratio (k) of that comparison; it joins ``ratios``.
    """

    task: str = "abdomen"
    ratios: tuple[int, ...] = (1, 2, 5)
    zero_mri: bool = True
    partial_organs: tuple[str, ...] = ("pancreas", "gallbladder")
    partial_ratio: int = 2
    partial_methods: tuple[str, ...] = PARTIAL_METHODS
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 20
    local_epochs: int = 1
    training: dict = field(default_factory=lambda: {"spatial_size": [64, 64]})
    phantom_cases: dict = field(default_factory=lambda: {"CT": [10, 2, 4], "MR": [10, 2, 4]})
    phantom_size: float = 0.75
    augmentations: tuple[str, ...] = ()
    augmentation_ratio: int = 2

    @classmethod
    def quick(cls, task: str = "abdomen") -> ExperimentConfig:
        """Every method and setting once, small: one seed, one ratio, few rounds, tiny slices."""
        return cls(
            task=task,
            ratios=(2,),
            seeds=(0,),
            rounds=8,
            training={"spatial_size": [48, 48]},
            phantom_cases={"CT": [6, 1, 3], "MR": [6, 1, 3]},
            phantom_size=0.75,
        )

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if any(int(k) < 1 for k in self.ratios):
            raise ValueError(f"ratios are k of MRI:CT = 1:k with k >= 1, got {list(self.ratios)}")
        unknown = sorted(set(self.partial_methods) - set(PARTIAL_METHODS))
        if unknown:
            raise ValueError(f"unknown partial-labels method(s) {unknown}; known: {list(PARTIAL_METHODS)}")
        bad = sorted(set(self.augmentations) - set(AUGMENTATION_FAMILIES))
        if bad:
            raise ValueError(f"unknown augmentation famil(ies) {bad}; known: {list(AUGMENTATION_FAMILIES)}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("rounds and local_epochs must be >= 1")

    def with_overrides(self, **changes) -> ExperimentConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def ratio_list(self) -> list[int]:
        ratios = [int(k) for k in self.ratios]
        if self.augmentations and self.augmentation_ratio not in ratios:
            ratios.append(int(self.augmentation_ratio))
        return ratios

    def methods_for(self, k: int) -> list[str]:
        """Methods of the 1:k setting: the grid's, plus the augmentation comparison in its setting."""
        methods = list(self.methods)
        if self.augmentations and k == self.augmentation_ratio:
            extra = ["centralized", "centralized_gin", "fedavg", "fedgin", *augmentation_methods(self.augmentations)]
            methods += [m for m in extra if m not in methods]
        return methods

    def settings(self) -> list[str]:
        names = [ratio_setting(k) for k in self.ratio_list()]
        if self.zero_mri:
            names.append("mri0")
        if self.partial_organs:
            names.append(partial_setting(self.partial_ratio))
        return names

    def runs(self) -> list[Run]:
        """Every run of the grid, cheapest settings first so partial results come early."""
        runs = []
        for seed in self.seeds:
            for k in self.ratio_list():
                runs += [Run(ratio_setting(k), m, seed) for m in self.methods_for(k)]
            if self.zero_mri:
                runs += [Run("mri0", m, seed) for m in ZERO_MRI_METHODS]
            if self.partial_organs:
                runs += [Run(partial_setting(self.partial_ratio), m, seed) for m in self.partial_methods]
        return runs

    def fingerprint(self, run: Run) -> str:
        """Hash of everything that decides a run's result: a finished run is reused only if it matches."""
        relevant = self.to_dict()
        for key in ("ratios", "seeds", "methods", "partial_methods", "zero_mri", "augmentations", "augmentation_ratio"):
            relevant.pop(key)  # the grid's extent, not this run's content
        if not run.setting.startswith("partial"):
            relevant.pop("partial_organs")
            relevant.pop("partial_ratio")
        blob = json.dumps({"config": relevant, "run": asdict(run)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ratio_setting(k: int) -> str:
    return f"mri1_ct{int(k)}"


def partial_setting(k: int) -> str:
    return f"partial_mri1_ct{int(k)}"


def setting_ratio(setting: str) -> int | None:
    """k of an MRI:CT 1:k setting; None for the zero-MRI setting."""
    if setting == "mri0":
        return None
    return int(setting.rsplit("_ct", 1)[1])


def describe_setting(setting: str) -> str:
    if setting == "mri0":
        return "zero MRI labels (CT trains alone; MRI only evaluated)"
    k = setting_ratio(setting)
    text = f"MRI:CT training cases 1:{k}"
    return f"{text}, MRI sites with partial labels" if setting.startswith("partial") else text
