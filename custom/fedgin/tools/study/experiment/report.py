"""The study's report: Dice per organ × test modality × method (mean ± std over seeds), FedGIN's
gain over FedAvg, FedGIN as a share of centralized training, what partial labels change; written as
Markdown, CSV and JSON, with PNG plots.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedgin.tools.study.experiment.grid import ExperimentConfig, describe_setting

MEAN = "mean"
MODALITIES = ("CT", "MRI")
METHOD_LABELS = {
    "local_ct": "CT only",
    "local_ct_gin": "CT only + GIN",
    "local_mri": "MRI only",
    "centralized": "centralized",
    "centralized_gin": "centralized + GIN",
    "fedavg": "FedAvg",
    "fedgin": "FedGIN",
    "fedgin_marginal": "FedGIN, marginal loss",
    "fedgin_background": "FedGIN, absent = background",
    "fedavg_marginal": "FedAvg, marginal loss",
    "fedavg_background": "FedAvg, absent = background",
    "centralized_randconv": "centralized + RandConv",
    "fedavg_randconv": "FedAvg + RandConv",
    "centralized_amplitude": "centralized + amplitude mix",
    "fedavg_amplitude": "FedAvg + amplitude mix",
    "centralized_gin_ipa": "centralized + GIN-IPA",
    "fedavg_gin_ipa": "FedAvg + GIN-IPA",
    "centralized_local_norm": "centralized + local norm (DSBN)",
    "fedavg_local_norm": "FedAvg + local norm (FedBN)",
}
FAMILY_LABELS = {
    "none": "none",
    "gin": "GIN",
    "randconv": "RandConv",
    "amplitude": "amplitude mix",
    "gin_ipa": "GIN-IPA",
    "local_norm": "domain-specific norm (DSBN / FedBN)",
}
# Method of each (base, family) pair in the augmentation comparison.
FAMILY_METHODS = {
    "centralized": {
        "none": "centralized",
        "gin": "centralized_gin",
        "randconv": "centralized_randconv",
        "amplitude": "centralized_amplitude",
        "gin_ipa": "centralized_gin_ipa",
        "local_norm": "centralized_local_norm",
    },
    "FedAvg": {
        "none": "fedavg",
        "gin": "fedgin",
        "randconv": "fedavg_randconv",
        "amplitude": "fedavg_amplitude",
        "gin_ipa": "fedavg_gin_ipa",
        "local_norm": "fedavg_local_norm",
    },
}
# (new, old, what) pairs compared as relative gain (new - old) / old, as the paper's "498 %" is.
GAINS = (
    ("fedgin", "fedavg", "FedGIN over FedAvg"),
    ("centralized_gin", "centralized", "centralized + GIN over centralized"),
    ("local_ct_gin", "local_ct", "CT only + GIN over CT only"),
    ("fedgin_marginal", "fedgin_background", "FedGIN: marginal loss over absent = background"),
    ("fedavg_marginal", "fedavg_background", "FedAvg: marginal loss over absent = background"),
)
SHARES = (("fedgin", "centralized"), ("fedgin", "centralized_gin"), ("fedavg", "centralized"))


def long_rows(results: Sequence[Mapping]) -> list[dict]:
    """One row per (setting, method, seed, test modality, organ or "mean")."""
    rows = []
    for r in results:
        for modality, organs in r["dice"].items():
            items = list(organs.items()) + [(MEAN, r["mean_dice"].get(modality))]
            for organ, value in items:
                rows.append(
                    {
                        "setting": r["setting"],
                        "method": r["method"],
                        "seed": r["seed"],
                        "test_modality": modality,
                        "organ": organ,
                        "dice": None if value is None or not math.isfinite(value) else round(float(value), 6),
                    }
                )
    return rows


def summarize(rows: Sequence[Mapping]) -> dict:
    """setting -> method -> modality -> organ -> {"mean", "std", "n"} (std: sample std, 0 for one seed)."""
    groups: dict = {}
    for row in rows:
        if row["dice"] is None:
            continue
        key = (row["setting"], row["method"], row["test_modality"], row["organ"])
        groups.setdefault(key, []).append(row["dice"])
    summary: dict = {}
    for (setting, method, modality, organ), values in groups.items():
        arr = np.asarray(values, dtype=float)
        stats = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}
        summary.setdefault(setting, {}).setdefault(method, {}).setdefault(modality, {})[organ] = stats
    return summary


def _organs(summary_setting: Mapping) -> list[str]:
    organs: list[str] = []
    for per_modality in summary_setting.values():
        for per_organ in per_modality.values():
            organs += [o for o in per_organ if o not in organs and o != MEAN]
    return organs + [MEAN]


def _cell(stats: Mapping | None) -> str:
    if not stats:
        return "—"
    text = f"{stats['mean']:.3f}"
    return f"{text} ± {stats['std']:.3f}" if stats["n"] > 1 else text


def _get(summary, setting, method, modality, organ):
    return summary.get(setting, {}).get(method, {}).get(modality, {}).get(organ)


def _ratio_cell(new, old, share: bool) -> str:
    if not new or not old or old["mean"] <= 0:
        return "—"
    if share:
        return f"{100 * new['mean'] / old['mean']:.0f} %"
    return f"{100 * (new['mean'] - old['mean']) / old['mean']:+.0f} %"


def markdown(config: ExperimentConfig, results: Sequence[Mapping], failed: Mapping[str, str], summary: dict) -> str:
    seeds = len(config.seeds)
    lines = [
        f"# FedGIN study on {config.task}: local-only, centralized, FedAvg and FedGIN",
        "",
        f"{len(results)} runs ({seeds} seed(s) each; cells are mean ± sample std over seeds), "
        f"{config.rounds} rounds × {config.local_epochs} local epoch(s) for federated runs, the same number "
        "of epochs for centralized and local-only runs. Dice per 3D test volume on its own grid, averaged "
        "over the test volumes of each modality. Relative gain = (new − old) / old.",
        "",
    ]
    if failed:
        lines += ["**Failed runs** (see their error.txt):", ""] + [f"- `{k}`: {v}" for k, v in failed.items()] + [""]
    for setting in config.settings():
        block = summary.get(setting)
        if not block:
            continue
        methods = [m for m in METHOD_LABELS if m in block]
        n_train = next((r["n_train_cases"] for r in results if r["setting"] == setting), {})
        cases = ", ".join(f"{m} {n}" for m, n in n_train.items())
        lines += [f"## {describe_setting(setting)}", "", f"Training cases: {cases}.", ""]
        for modality in MODALITIES:
            lines += [f"**Test on {modality}**", ""]
            header = ["organ"] + [METHOD_LABELS[m] for m in methods]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for organ in _organs(block):
                cells = [_cell(_get(summary, setting, m, modality, organ)) for m in methods]
                name = f"**{organ}**" if organ == MEAN else organ
                lines.append("| " + " | ".join([name] + cells) + " |")
            lines.append("")
        comparisons = [(n, o, w) for n, o, w in GAINS if n in block and o in block]
        shares = [(n, o) for n, o in SHARES if n in block and o in block]
        if comparisons or shares:
            cols = [f"{w}, {mod}" for _, _, w in comparisons for mod in MODALITIES]
            cols += [f"{METHOD_LABELS[n]} as % of {METHOD_LABELS[o]}, {mod}" for n, o in shares for mod in MODALITIES]
            lines += ["| organ | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
            for organ in _organs(block):
                cells = [
                    _ratio_cell(_get(summary, setting, n, mod, organ), _get(summary, setting, o, mod, organ), False)
                    for n, o, _ in comparisons
                    for mod in MODALITIES
                ]
                cells += [
                    _ratio_cell(_get(summary, setting, n, mod, organ), _get(summary, setting, o, mod, organ), True)
                    for n, o in shares
                    for mod in MODALITIES
                ]
                lines.append("| " + " | ".join([organ] + cells) + " |")
            lines.append("")
        lines += [f"![Dice per organ, {setting}](dice_{setting}.png)", ""]
        if any(r["progress"] for r in results if r["setting"] == setting):
            lines += [f"![Validation Dice per round, {setting}](rounds_{setting}.png)", ""]
    if config.augmentations:
        lines += augmentation_section(config, summary, results)
    lines += [
        "## Training time per run (mean over seeds and settings)",
        "",
        "Federated runs include FLARE's start-up and per-round cost; ms/step is wall time over optimizer steps.",
        "",
        "| method | s per run | ms per step |",
        "|---|---|---|",
    ]
    times: dict[str, list] = {}
    per_step: dict[str, list] = {}
    for r in results:
        times.setdefault(r["method"], []).append(r["train_s"])
        if r.get("steps"):
            per_step.setdefault(r["method"], []).append(1000 * r["train_s"] / r["steps"])
    for m, t in times.items():
        step = f"{np.mean(per_step[m]):.0f}" if m in per_step else "—"
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {np.mean(t):.0f} | {step} |")
    return "\n".join(lines) + "\n"


def augmentation_section(config: ExperimentConfig, summary: dict, results: Sequence[Mapping]) -> list[str]:
    """Each family against no augmentation and against GIN, per organ and test modality."""
    from fedgin.tools.study.experiment.grid import ratio_setting

    setting = ratio_setting(config.augmentation_ratio)
    families = ["none", "gin", *config.augmentations]
    lines = [
        f"## Augmentation families ({describe_setting(setting)})",
        "",
        "Cells: Dice (mean ± std over seeds), then the relative change against no augmentation and against GIN.",
        "",
    ]
    for base, methods in FAMILY_METHODS.items():
        base_families = [f for f in families if f in methods]
        for modality in MODALITIES:
            lines += [f"**{base}, test on {modality}**", ""]
            header = ["organ"] + [FAMILY_LABELS[f] for f in base_families]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            organs = _organs(summary.get(setting, {}))
            for organ in organs:
                none = _get(summary, setting, methods["none"], modality, organ)
                gin = _get(summary, setting, methods["gin"], modality, organ)
                cells = []
                for family in base_families:
                    stats = _get(summary, setting, methods[family], modality, organ)
                    cell = _cell(stats)
                    if stats and family != "none":
                        cell += f" ({_ratio_cell(stats, none, False)} vs none"
                        cell += f", {_ratio_cell(stats, gin, False)} vs GIN)" if family != "gin" else ")"
                    cells.append(cell)
                lines.append("| " + " | ".join([f"**{organ}**" if organ == MEAN else organ] + cells) + " |")
            lines.append("")
    # Extra training cost of each family per optimizer step, from the centralized runs (one process,
    # no FLARE); per run where a run has no step count (results of older versions). Runs trained at
    # other times share the machine differently: bench/run_bench.py (section families) times every
    # family in one go.
    runs = {
        family: [r for r in results if r["method"] == method and r["setting"] == setting]
        for family, method in FAMILY_METHODS["centralized"].items()
    }
    runs = {family: rs for family, rs in runs.items() if rs}
    per_step = all(r.get("steps") for rs in runs.values() for r in rs)
    cost = {
        family: float(np.mean([r["train_s"] * (1000 / r["steps"] if per_step else 1) for r in rs]))
        for family, rs in runs.items()
    }
    if "none" in cost:
        unit = "ms per step" if per_step else "s per run"
        lines += [
            f"Training cost of each family in the centralized runs ({unit}; runs made under other machine",
            "load differ: `bench/run_bench.py --only families` times all families in one run):",
            "",
            f"| family | {unit} | extra vs none |",
            "|---|---|---|",
        ]
        for family in families:
            if family in cost:
                extra = 100 * (cost[family] - cost["none"]) / cost["none"]
                lines.append(f"| {FAMILY_LABELS[family]} | {cost[family]:.0f} | {extra:+.0f} % |")
        lines.append("")
    return lines


def plot_setting(summary_setting: Mapping, setting: str, path: Path) -> None:
    """Grouped bars: one panel per test modality, one group per organ, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHOD_LABELS if m in summary_setting]
    organs = _organs(summary_setting)
    fig, axes = plt.subplots(1, len(MODALITIES), figsize=(6 + 1.2 * len(organs), 4.2), sharey=True)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(organs))
    for ax, modality in zip(axes, MODALITIES, strict=True):
        for j, method in enumerate(methods):
            stats = [summary_setting[method].get(modality, {}).get(o) for o in organs]
            means = [s["mean"] if s else 0.0 for s in stats]
            stds = [s["std"] if s else 0.0 for s in stats]
            ax.bar(
                x + (j - (len(methods) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=METHOD_LABELS[method],
            )
        ax.set_xticks(x, organs, rotation=30, ha="right")
        ax.set_title(f"test on {modality}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(describe_setting(setting))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rounds(results: Sequence[Mapping], setting: str, path: Path) -> None:
    """Validation mean Dice of the global model per round, per site, mean over seeds, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], dict[int, list]] = {}
    for r in results:
        if r["setting"] != setting:
            continue
        for rec in r["progress"]:
            curves.setdefault((r["method"], rec["site"]), {}).setdefault(rec["round"], []).append(rec["val_mean_dice"])
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    # Colour = site, line style = method, so curves of one site are easy to compare.
    sites = sorted({site for _, site in curves})
    methods = [m for m in METHOD_LABELS if any(m == k[0] for k in curves)]
    styles = ["-", "--", ":", "-."]
    for (method, site), per_round in sorted(curves.items()):
        rounds = sorted(per_round)
        ax.plot(
            rounds,
            [np.nanmean(per_round[k]) for k in rounds],
            marker=".",
            color=f"C{sites.index(site)}",
            linestyle=styles[methods.index(method) % len(styles)],
            label=f"{METHOD_LABELS.get(method, method)}, {site}",
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round (global model received)")
    ax.set_ylabel("validation mean Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(describe_setting(setting))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(config: ExperimentConfig, results: Sequence[Mapping], failed: Mapping[str, str], out: Path) -> Path:
    """report.md, results.csv (one row per seed × modality × organ), summary.json and the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    rows = long_rows(results)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["setting", "method", "seed", "test_modality", "organ", "dice"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    (out / "summary.json").write_text(
        json.dumps({"config": config.to_dict(), "summary": summary, "failed": dict(failed)}, indent=2) + "\n"
    )
    for setting, block in summary.items():
        plot_setting(block, setting, out / f"dice_{setting}.png")
        plot_rounds(results, setting, out / f"rounds_{setting}.png")
    (out / "report.md").write_text(markdown(config, results, failed, summary))
    return out
