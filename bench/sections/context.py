"""The bench run's context: options, sizes, device, work folder, phantom sites and a progress printer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .common import Sizes


class Context:
    """Options, device, work folder, phantoms (made on first use) and a progress printer."""

    def __init__(self, args, sizes: Sizes, device, work: Path):
        self.args, self.sizes, self.device, self.work = args, sizes, device, work
        self.t0 = time.time()
        self._phantoms: dict[str, dict[str, Path]] = {}
        self.flare_runs: list[dict] = []  # every simulator run, for the data section's figures

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.0f} s] {message}", flush=True)

    def phantoms(self) -> dict[str, Path]:
        """The default phantom sites (site-ct, site-mri), generated once."""
        if "default" not in self._phantoms:
            from fedgin.tools.data.phantoms import generate_phantom_dataset

            self.log("generating the phantom sites ...")
            self._phantoms["default"] = generate_phantom_dataset(
                "abdomen",
                self.work / "phantoms",
                seed=0,
                size=self.sizes.phantom_size,
                max_cases=self.sizes.phantom_max_cases,
                num_workers=os.cpu_count() or 1,
            )
        return self._phantoms["default"]

    def scale_phantoms(self, n: int) -> dict[str, Path]:
        """``n`` small phantom sites, half CT and half MR (the largest n is generated once)."""
        if "scale" not in self._phantoms:
            from fedgin.tools.data.phantoms import PhantomSiteSpec, generate_phantom_dataset
            from fedgin.tools.data.phantoms.case import DEFAULT_GRID

            n_train, n_val = self.sizes.scale_cases
            specs = []
            for i in range(max(self.sizes.scale_sites)):
                modality = "CT" if i % 2 == 0 else "MR"
                shape, spacing, orientation = DEFAULT_GRID[modality]
                name = f"site-{i + 1:02d}-{modality.lower()}"
                spec = PhantomSiteSpec(name, modality, n_train, n_val, 0, shape, spacing, orientation)
                specs.append(spec.scaled(self.sizes.scale_phantom_size))
            self.log(f"generating {len(specs)} small phantom sites ...")
            self._phantoms["scale"] = generate_phantom_dataset(
                "abdomen", self.work / "phantoms_scale", seed=0, sites=specs, num_workers=os.cpu_count() or 1
            )
        return dict(list(self._phantoms["scale"].items())[:n])
