"""Studies: the demo, the FedGIN experiment grid and its report, training outside FLARE (baselines)."""
