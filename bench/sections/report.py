"""The bench's Markdown report: the machine and load, then each section's table (or why it failed)."""

from __future__ import annotations

from . import section


def markdown(report: dict) -> str:
    m, s = report["machine"], report["sections"]
    lines = [
        f"# fedgin bench ({report['device']}{', smoke sizes: checks the script, measures nothing' * report['smoke']})",
        "",
        f"{report['started']}; {m['cpu_count']} CPU cores ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
        f"device {m['device']}{' (' + m['device_name'] + ')' if m['device_name'] else ''}; torch {m['torch']}, "
        f"MONAI {m['monai']}, NVFLARE {m['nvflare']}, Python {m['python']}. Load average at start "
        f"{m['load_average_at_start']}, at end {report['load_average_at_end']} (the bench's own processes count: "
        "8 simulated sites at the end of the scale section raise it).",
        "",
        "Medians of repeats after warm-up; ratios compare figures of this one run. Raw numbers: the JSON file.",
        "",
    ]
    # Only the load before the bench started tells of other work on the machine.
    if m["load_average_at_start"][0] >= m["cpu_count"]:
        lines += [
            f"**Warning: the load average was {m['load_average_at_start'][0]:.1f} on {m['cpu_count']} cores when the "
            "bench started: the machine was busy and these timings are not representative** (torch's OpenMP threads "
            "stall when other processes hold the cores; small operations then slow down many-fold).",
            "",
        ]
    for name, sec in s.items():
        if "error" in sec:
            lines += [f"## {name}", "", f"failed: `{sec['error']}`", ""]
            continue
        lines += section(name).markdown(sec) + [f"({sec['elapsed_s']:.0f} s)", ""]
    return "\n".join(lines)
