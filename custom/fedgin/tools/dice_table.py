"""Dice tables a person can read: Markdown and plain text from evaluation results."""

from __future__ import annotations

from collections.abc import Mapping


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def dice_table(results: Mapping[str, dict], title: str | None = None) -> str:
    """A Markdown table: one row per organ, one column per test set.

    Args:
        results: test-set name -> result of :func:`fedgin.seg.evaluation.evaluate_model`.
        title: optional heading line.
    """
    organs: list[str] = []
    for result in results.values():
        for organ in result["organs"]:
            if organ not in organs:
                organs.append(organ)
    names = list(results)
    header = ["organ"] + [f"{n} ({results[n]['modality']}, {results[n]['n_volumes']} vol)" for n in names]
    rows = [header, ["---"] * len(header)]
    for organ in organs:
        rows.append([organ] + [_fmt(results[n]["dice"].get(organ)) for n in names])
    rows.append(["**mean**"] + [f"**{_fmt(results[n]['mean_dice'])}**" for n in names])
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    if title:
        lines = [f"### {title}", ""] + lines
    return "\n".join(lines) + "\n"
