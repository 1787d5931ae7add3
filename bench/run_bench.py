"""Performance bench of fedgin: GIN cost, FLARE overhead, data caching, scale and inference speed.

One command measures every figure and writes ``bench_<device>.md`` (a table per section, with the
targets and whether they are met) and ``bench_<device>.json`` (raw numbers, machine info) to
``--out``; ``device`` is ``cuda`` when a GPU is used, else ``cpu``.

    python bench/run_bench.py                                  # everything (~17 min on 2 idle CPU cores)
    python bench/run_bench.py --only gin,infer                 # some sections
    python bench/run_bench.py --smoke --out /tmp/bench         # tiny sizes: proves the script runs

Sections (see bench/README.md for how to read them):

* ``gin``: batched GIN against one training step of the default model on the same batch, and
  against a per-sample Python loop of ``RandGIN`` (2D 16x1x128^2, 3D 2x1x96^3).
* ``options``: the training step as ``Trainer`` runs it against channels-last weights and, on CUDA,
  without AMP; on CUDA also the batch copy (pageable, pinned + non-blocking, data resident on the GPU).
* ``fl``: FLARE simulator (2 phantom sites, demo configuration) against the same training in one
  plain process, at 2, 8 and 30 rounds and 30 again in the other order; a linear fit splits fixed
  start-up cost and per-round cost; the repeat shows the machine's noise.
* ``data``: site data loaded once per job; rounds/s with and without that cache; peak RSS of a client.
* ``scale``: 2, 4 and 8 simulated sites: wall per round and peak RSS per client process.
* ``infer``: volumes per second of ``Trainer.predict`` + Dice on the phantoms' test volumes.

Timings are medians of repeats after warm-up; ratios come from the same run. Heavy imports happen
inside functions so that the plain-process baseline (``--plain-worker``, started by the ``fl`` and
``data`` sections) pays only for what a plain training script needs, not for FLARE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# The sections live in bench/sections/, one module each, with the helpers they share. Run as a script, this file's
# folder is sys.path[0] already; loaded from elsewhere (the tests), it is put there so that `sections` imports.
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from sections import SECTIONS, section  # noqa: E402
from sections.common import (  # noqa: E402
    CLIENT_MAX_RSS_MB,
    ESTIMATE_S,
    FL_MAX_RATIO,
    FL_MAX_ROUND_OVERHEAD_S,
    GIN_MAX_SHARE,
    REPO,
    SMOKE,
    Sizes,
    machine_info,
)
from sections.context import Context  # noqa: E402
from sections.report import markdown  # noqa: E402


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and rounds: checks the script in minutes")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="where bench_<device>.md/.json go")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--work", default=None, help="work folder (phantoms, FLARE workspaces); default: a temp folder")
    p.add_argument("--keep-work", action="store_true", help="keep the temp work folder")
    p.add_argument("--plain-worker", default=None, help=argparse.SUPPRESS)  # internal: the plain baseline
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    return args


def run_section(ctx: Context, name: str) -> dict:
    """Section ``name``'s figures, its time and the load after it; an error instead if it failed."""
    ctx.log(f"section {name} ...")
    start = time.time()
    try:
        result = section(name).measure(ctx)
    except Exception as e:  # one failed section should not lose the others
        result = {"error": f"{type(e).__name__}: {e}"}
        ctx.log(f"section {name} FAILED: {result['error']}")
    result["elapsed_s"] = round(time.time() - start, 1)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    ctx.log(f"section {name} done in {result['elapsed_s']:.0f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        from sections.plain import plain_worker

        return plain_worker(args.plain_worker)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to torch")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    sizes = SMOKE if args.smoke else Sizes()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fedgin_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, sizes, device, work)
    estimate = sum(ESTIMATE_S["smoke" if args.smoke else "full"][s] for s in args.only)
    ctx.log(
        f"fedgin bench on {device}: sections {','.join(args.only)}{' (smoke sizes)' * args.smoke}; estimated "
        f"~{estimate / 60:.1f} min on 2 idle CPU cores (less on a GPU, more on a busy machine); work in {work}"
    )
    report = {
        "device": device.type,
        "smoke": bool(args.smoke),
        "started": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "sizes": {k: v for k, v in sizes.__dict__.items()},
        "targets": {
            "gin_max_share_of_step": GIN_MAX_SHARE,
            "fl_max_round_overhead_s": FL_MAX_ROUND_OVERHEAD_S,
            "fl_max_ratio_demo": FL_MAX_RATIO,
            "client_max_rss_mb": CLIENT_MAX_RSS_MB,
        },
        "sections": {},
    }
    for name in (s for s in SECTIONS if s in args.only):
        report["sections"][name] = run_section(ctx, name)
    failed = any("error" in result for result in report["sections"].values())
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["elapsed_s"] = round(time.time() - ctx.t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{device.type}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / f"bench_{device.type}.md").write_text(markdown(report))
    ctx.log(f"wrote {out / f'bench_{device.type}.md'} and .json ({report['elapsed_s']:.0f} s in all)")
    if not args.work and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
