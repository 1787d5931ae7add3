#!/usr/bin/env python3
"""The privacy/utility curve of DP-SGD: test Dice against epsilon per patient, from fed_ablation runs.

Reads ``results.jsonl`` files of ``bench/fed_ablation.py`` (DP-SGD runs record each site's
``dp_sgd_epsilon``; a run without it is the no-DP reference) and writes ``OUT/privacy_utility.md``
(one row per run: sigma, epsilon per site, mean Dice per site, as % of the no-DP run) and
``OUT/privacy_utility.png`` (mean Dice against epsilon, one line per site, the no-DP level dashed):

    python bench/privacy_utility.py --results bench/results/dp_sgd/results.jsonl \\
        --reference "res192" --out bench/results/dp_sgd
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]


def sigma_of(run: dict) -> float | None:
    dp = run.get("training", {}).get("dp_sgd", {})
    return float(dp.get("noise_multiplier", 1.0)) if dp.get("enabled") else None


def table(runs: list[dict], reference: dict, sites: list[str]) -> list[str]:
    lines = [
        "| run | sigma | " + " | ".join(f"{s} epsilon | {s} mean Dice" for s in sites) + " |",
        "|---|---|" + "---|---|" * len(sites),
    ]
    rows = [(reference, None)] + sorted(((r, sigma_of(r)) for r in runs), key=lambda x: x[1])
    for run, sigma in rows:
        cells = []
        for site in sites:
            dice = run["test"][site]["mean_dice"]
            base = reference["test"][site]["mean_dice"]
            eps = run.get("dp_sgd_epsilon", {}).get(site)
            eps_text = "no DP" if sigma is None else ("∞" if eps is None or math.isinf(eps) else f"{eps:.3g}")
            share = "" if sigma is None else f" ({100 * dice / base:.0f} %)"
            cells += [eps_text, f"{dice:.3f}{share}"]
        name = run["variant"]
        lines.append(f"| {name} | {'-' if sigma is None else f'{sigma:g}'} | " + " | ".join(cells) + " |")
    return lines


def plot(runs: list[dict], reference: dict, sites: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, site in enumerate(sites):
        points = sorted(
            (r["dp_sgd_epsilon"][site], r["test"][site]["mean_dice"])
            for r in runs
            if math.isfinite(r.get("dp_sgd_epsilon", {}).get(site, math.inf))
        )
        color = f"C{i}"
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color, label=f"{site}, DP-SGD")
        ax.axhline(reference["test"][site]["mean_dice"], color=color, ls="--", label=f"{site}, no DP")
    ax.set_xscale("log")
    ax.axvline(8, color="grey", lw=0.8)
    ax.set_xlabel("epsilon per patient (delta 1e-5), after 20 rounds")
    ax.set_ylabel("test mean Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("DP-SGD on the real development set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", action="append", required=True, help="fed_ablation results.jsonl (repeatable)")
    p.add_argument("--reference", required=True, help="variant name of the no-DP run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = [r for r in load(args.results) if r["seed"] == args.seed]
    reference = next(r for r in runs if r["variant"] == args.reference)
    private = [r for r in runs if sigma_of(r) is not None]
    sites = list(reference["test"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = table(private, reference, sites)
    (out / "privacy_utility.md").write_text("\n".join(lines) + "\n")
    plot(private, reference, sites, out / "privacy_utility.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
