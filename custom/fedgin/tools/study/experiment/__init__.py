"""The FedGIN study: a grid of local-only, centralized, FedAvg and FedGIN runs, and its report."""

from fedgin.tools.study.experiment.grid import ExperimentConfig, Run
from fedgin.tools.study.experiment.runner import run_grid

__all__ = ["ExperimentConfig", "Run", "run_grid"]
