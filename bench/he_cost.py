#!/usr/bin/env python3
"""What encrypted aggregation (FLARE's TenSEAL CKKS path, ``build_job(he=True)``) costs per round.

    python bench/he_cost.py                          # both parts, the demo (~30 min on 2 busy cores)
    python bench/he_cost.py --poc-rounds 0           # the in-process part only (~12 min)
    python bench/he_cost.py --smoke --out /tmp/he    # tiny model and data: proves the script runs

Part 1, in one process: the demo's two phantom sites run ``--rounds`` FedAvg rounds of the demo
configuration (``fedgin_abdomen``, 96 x 96 slices, the job's U-Net) three times from the same start: plain
(FedAvg of the numpy updates), a control (plain FedAvg with each round's global model perturbed
uniformly within that round's CKKS error: is a difference at the end HE's or rounding's?) and
through FLARE's own HE components, with FOBS serialization
between site and server as on the wire: ``HEModelEncryptor`` at each site, ``fobs`` both ways,
``HEInTimeAccumulateWeightedAggregator`` + ``HEModelShareableGenerator`` at the server,
``HEModelDecryptor`` + the executor's reshape at the sites. Each trajectory follows its own global
model. Per round: the bytes of one update and of the global model as sent, the seconds to encrypt
an update (site), to read it (server: FOBS), to aggregate two (server), to update the global model
(server) and to decrypt it (site); and the largest difference between the decrypted global model
and plain FedAvg of the same updates. At the end, Dice of both final models on each site's test
split. No privacy filter: it changes nothing of HE's cost.

Part 2 (``--poc-rounds N``): the ``fedgin_abdomen`` job in FLARE's POC mode (real processes) for N
rounds, plain and with ``--he``: the steady round's wall time (server log) and test Dice.

Writes ``OUT/he_cost.json`` (raw figures, machine) and ``OUT/he_cost.md`` (default OUT: bench/results/he).
Timings are medians over rounds; the machine's load average is recorded with them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "custom"))
sys.path.insert(0, str(BENCH))

from sections.common import machine_info, median, rounded  # noqa: E402

JOB = REPO / "jobs" / "fedgin_abdomen"
DEMO = {"spatial_size": [96, 96]}  # fedgin.tools.study.commands.DEMO_OVERRIDES
SMOKE = {"spatial_size": [32, 32], "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "he"))
    p.add_argument("--rounds", type=int, default=20, help="in-process FedAvg rounds (default: %(default)s, the demo's)")
    p.add_argument("--poc-rounds", type=int, default=20, help="rounds of each POC run; 0: no POC part (default: 20)")
    p.add_argument("--phantom-size", type=float, default=1.0, help="phantom grid scale (default: the demo's 1.0)")
    p.add_argument("--max-cases", type=int, default=None, help="at most this many phantom cases per split")
    p.add_argument("--smoke", action="store_true", help="tiny model and phantoms, 1 round, no POC")
    p.add_argument("--work", default=None, help="work folder (phantoms, POC), kept; default: a temporary one, deleted")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.poc_rounds, args.phantom_size, args.max_cases = 1, 0, 0.5, 1
    return args


class HEChain:
    """FLARE's HE components, wired as a job with ``he=True`` runs them, keys from FLARE's HEBuilder."""

    def __init__(self, work: Path):
        from fedgin.tools.federation.he import CLIENT_CONTEXT, SERVER_CONTEXT, new_contexts
        from nvflare.apis.event_type import EventType
        from nvflare.apis.utils.decomposers import flare_decomposers
        from nvflare.app_common.decomposers import common_decomposers
        from nvflare.app_opt.he.intime_accumulate_model_aggregator import HEInTimeAccumulateWeightedAggregator
        from nvflare.app_opt.he.model_decryptor import HEModelDecryptor
        from nvflare.app_opt.he.model_encryptor import HEModelEncryptor
        from nvflare.app_opt.he.model_shareable_generator import HEModelShareableGenerator
        from nvflare.fuel.sec.security_content_service import SecurityContentManager, SecurityContentService

        # FLARE's decomposers, as a FLARE process registers them: without them FOBS registers a generic one for
        # Shareable that sticks for the process and drops its items (the FLARE API then fails to connect).
        flare_decomposers.register()
        common_decomposers.register()
        startup = work / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        server, client = new_contexts()
        (startup / SERVER_CONTEXT).write_bytes(server)
        (startup / CLIENT_CONTEXT).write_bytes(client)
        # Where FLARE's components load the contexts from (a kit's startup/); unsigned: not secure mode.
        # Restored once they are loaded: the admin API of part 2 reads its kit through the same service.
        previous = SecurityContentService.security_content_manager
        SecurityContentService.security_content_manager = SecurityContentManager(str(startup))
        self.context_bytes = {"server": len(server), "client": len(client)}
        self.server_ctx = self.ctx("server")
        self.encryptor = HEModelEncryptor(weigh_by_local_iter=True)
        self.aggregator = HEInTimeAccumulateWeightedAggregator(weigh_by_local_iter=False)
        self.generator = HEModelShareableGenerator()
        self.decryptor = HEModelDecryptor()
        for component in (self.encryptor, self.aggregator, self.generator, self.decryptor):
            component.handle_event(EventType.START_RUN, self.server_ctx)
        SecurityContentService.security_content_manager = previous

    @staticmethod
    def ctx(identity: str, current_round: int = 0):
        from fedgin.tools.federation.he import component_context

        return component_context(identity, current_round)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def he_round(chain: HEChain, server_model, updates: dict, steps: dict, r: int, shapes) -> tuple[dict, object, dict]:
    """One round through the HE chain: (decrypted global weights, the server's model, figures)."""
    from fedgin.flare.executor import shaped_like
    from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.app_common.app_constant import AppConstants
    from nvflare.fuel.utils import fobs

    fig = {"encrypt_s": [], "read_update_s": [], "update_bytes": [], "plain_update_bytes": []}
    server_ctx = chain.ctx("server", r)
    for site in sorted(updates):
        dxo = DXO(DataKind.WEIGHT_DIFF, dict(updates[site]), meta={MetaKey.NUM_STEPS_CURRENT_ROUND: steps[site]})
        fig["plain_update_bytes"].append(len(fobs.dumps(dxo.to_shareable())))
        encrypted, seconds = timed(chain.encryptor.process, dxo.to_shareable(), chain.ctx("server", r))
        wire = fobs.dumps(encrypted)
        received, read_s = timed(fobs.loads, wire)  # the server rebuilds every vector and its context
        received.set_peer_props({ReservedKey.IDENTITY_NAME: site})
        received.add_cookie(AppConstants.CONTRIBUTION_ROUND, r)
        if not chain.aggregator.accept(received, server_ctx):
            raise RuntimeError(f"the HE aggregator refused {site}'s update")
        fig["encrypt_s"].append(seconds)
        fig["read_update_s"].append(read_s)
        fig["update_bytes"].append(len(wire))
    aggregate, fig["aggregate_s"] = timed(chain.aggregator.aggregate, server_ctx)
    server_ctx.set_prop(AppConstants.GLOBAL_MODEL, server_model, private=True, sticky=False)
    server_model, fig["update_global_s"] = timed(chain.generator.shareable_to_learnable, aggregate, server_ctx)
    task = fobs.dumps(chain.generator.learnable_to_shareable(server_model, server_ctx))
    fig["global_bytes"] = len(task)
    start = time.perf_counter()
    data = from_shareable(chain.decryptor.process(fobs.loads(task), chain.ctx("server", r))).data
    weights = shaped_like(data, shapes)
    fig["decrypt_s"] = time.perf_counter() - start
    return weights, server_model, fig


def fedavg(global_weights: dict, updates: dict, steps: dict) -> dict:
    total = sum(steps.values())
    return {
        k: global_weights[k] + sum(steps[s] * updates[s][k] for s in sorted(updates)) / total for k in global_weights
    }


def local_round(trainers: dict, data: dict, global_weights: dict, r: int, rounds: int) -> tuple[dict, dict]:
    updates, steps = {}, {}
    for name, trainer in trainers.items():
        trainer.set_weights(global_weights)
        trainer.start_round(r, rounds)
        steps[name] = trainer.train_epochs(data[name].train)["steps"]
        local = trainer.get_weights()
        updates[name] = {k: local[k] - global_weights[k] for k in local}
    return updates, steps


def in_process(sites: dict, training: dict, rounds: int, work: Path, log) -> dict:
    """Part 1 (see the module docstring)."""
    from fedgin.flare.executor import site_seed
    from fedgin.flare.job_definitions import training_options
    from fedgin.seg.config import TrainConfig
    from fedgin.seg.data.site_data import load_site_data
    from fedgin.seg.site_config import load_site_config
    from fedgin.seg.training import Trainer, dice_per_volume, summarize_dice
    from nvflare.app_common.abstract.model import make_model_learnable

    config = TrainConfig.from_dict(training_options("abdomen", True, training))
    model = config.build_model()
    shapes = model.state_dict()
    initial = {k: v.numpy().copy() for k, v in shapes.items()}
    chain = HEChain(work)
    trainers, data = {"plain": {}, "he": {}, "control": {}}, {}
    for name, path in sites.items():
        site_config = copy.deepcopy(config)
        site_config.seed = site_seed(config.seed, name)
        data[name] = load_site_data(
            load_site_config(path),
            config.organs,
            config.spatial_size,
            config.model.spatial_dims,
            splits=("training", "test"),
            background_slice_fraction=config.background_slice_fraction,
            seed=site_config.seed,
            pixel_spacing=config.pixel_spacing,
            context_slices=config.context_slices,
        )
        for way in trainers:
            trainers[way][name] = Trainer(copy.deepcopy(site_config))
    plain, he, server_model, per_round = dict(initial), dict(initial), make_model_learnable(dict(initial), {}), []
    control, rng = dict(initial), np.random.default_rng(0)
    for r in range(rounds):
        updates, steps = local_round(trainers["plain"], data, plain, r, rounds)
        plain, plain_s = timed(fedavg, plain, updates, steps)
        updates, steps = local_round(trainers["he"], data, he, r, rounds)
        expected = fedavg(he, updates, steps)
        he, server_model, fig = he_round(chain, server_model, updates, steps, r, shapes)
        fig["plain_aggregate_s"] = plain_s
        fig["max_abs_error"] = float(max(np.max(np.abs(he[k] - expected[k])) for k in expected))
        fig["max_abs_weight"] = float(max(np.max(np.abs(expected[k])) for k in expected))
        fig["max_abs_diff_plain_vs_he_trajectory"] = float(max(np.max(np.abs(he[k] - plain[k])) for k in plain))
        # The control: plain FedAvg plus a perturbation as large as this round's CKKS error, everywhere.
        updates, steps = local_round(trainers["control"], data, control, r, rounds)
        control = fedavg(control, updates, steps)
        err = fig["max_abs_error"]
        control = {k: (v + rng.uniform(-err, err, v.shape)).astype(v.dtype) for k, v in control.items()}
        fig["max_abs_diff_plain_vs_control_trajectory"] = float(
            max(np.max(np.abs(control[k] - plain[k])) for k in plain)
        )
        per_round.append(fig)
        size = fig["update_bytes"][0] / 2**20
        log(f"  round {r + 1}/{rounds}: an update is {size:.1f} MiB encrypted; error {fig['max_abs_error']:.1e}")
    scorer = trainers["plain"][next(iter(sites))]
    dice = {}
    for way, weights in (("plain", plain), ("he", he), ("control", control)):
        scorer.set_weights(weights)
        dice[way] = {}
        for name, d in data.items():
            summary = summarize_dice(dice_per_volume(scorer, d.test), config.organs, d.scored_organs)
            dice[way][name] = summary["mean_dice"]
    return {
        "parameters": sum(v.numel() for v in shapes.values()),
        "layers": len(shapes),
        "context_bytes": chain.context_bytes,
        "rounds": per_round,
        "dice": dice,
    }


def poc_part(sites: dict, training: dict, rounds: int, work: Path, log) -> dict:
    """Part 2: the job in POC mode, plain and with --he, each by the documented command in a child process."""
    import subprocess

    from sections.flare_runs import parse_simulator_log, round_walls

    out = {}
    for way in ("plain", "he"):
        log(f"  POC {way}: {rounds} rounds ...")
        ws = work / f"poc_{way}"
        cmd = [sys.executable, "-m", "fedgin", "poc", "run", str(JOB), "--rounds", str(rounds), "--workspace", str(ws)]
        cmd += [a for name, path in sites.items() for a in ("--site", f"{name}={path}")]
        cmd += [a for key, value in training.items() for a in ("--set", f"{key}={json.dumps(value)}")]
        cmd += ["--he"] if way == "he" else []
        start = time.time()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "custom"), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        wall = time.time() - start
        (log_file,) = (ws / "results").glob("*/workspace/log.txt")
        walls = round_walls(parse_simulator_log(log_file))
        dice = json.loads((ws / "results" / "dice.json").read_text())
        out[way] = {
            "wall_s": rounded(wall, 1),
            "round_s": {str(k + 1): rounded(v, 2) for k, v in sorted(walls.items())},
            "steady_round_s": rounded(median(v for k, v in walls.items() if k >= 1), 2),
            "test_dice": {site: rounded(d["mean_dice"], 6) for site, d in dice.items()},
        }
    return out


def summarize(part1: dict) -> dict:
    """Medians over rounds of part 1's figures (per site where a figure is per site)."""
    rounds = part1["rounds"]

    def med(key):
        return median(v for fig in rounds for v in (fig[key] if isinstance(fig[key], list) else [fig[key]]))

    keys = ("encrypt_s", "read_update_s", "aggregate_s", "update_global_s", "decrypt_s", "plain_aggregate_s")
    out = {k: rounded(med(k), 4) for k in keys}
    out |= {k: int(med(k)) for k in ("update_bytes", "plain_update_bytes", "global_bytes")}
    out["plain_global_bytes"] = out["plain_update_bytes"]  # the same arrays, as WEIGHTS
    out["max_abs_error"] = max(fig["max_abs_error"] for fig in rounds)
    out["max_abs_weight"] = max(fig["max_abs_weight"] for fig in rounds)
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def markdown(report: dict) -> str:
    p1, s = report["in_process"], report["in_process"]["median"]
    lines = [
        "# Encrypted aggregation: cost per round",
        "",
        f"`{report['command']}` on {report['started']}; "
        f"{report['machine']['cpu_count']} CPU cores, load average {report['machine']['load_average_at_start']} "
        f"at the start (a busy machine: the timings are upper bounds). nvflare {report['machine']['nvflare']}, "
        f"tenseal {report['tenseal']}; CKKS as FLARE's HEBuilder makes it (N 8192, coefficient moduli 60/40/40 "
        "bits, scale 2^40, symmetric key).",
        "",
        f"Model: the demo U-Net, {p1['parameters']:,} parameters in {p1['layers']} layers; the demo's 2 phantom "
        f"sites ({report['phantoms']}), "
        f"{len(p1['rounds'])} FedAvg rounds (medians over rounds; per update: over both sites).",
        "",
        "| per round | plain | HE | |",
        "|---|---|---|---|",
        f"| one site's update as sent (FOBS) | {_mib(s['plain_update_bytes'])} | {_mib(s['update_bytes'])} | "
        f"x{s['update_bytes'] / s['plain_update_bytes']:.0f} |",
        f"| the global model as sent to each site | {_mib(s['plain_global_bytes'])} | {_mib(s['global_bytes'])} | "
        f"x{s['global_bytes'] / s['plain_global_bytes']:.0f} |",
        f"| site: encrypt its update | | {s['encrypt_s']:.2f} s | |",
        f"| server: read one update (FOBS) | | {s['read_update_s']:.2f} s | |",
        f"| server: aggregate 2 updates | {s['plain_aggregate_s']:.3f} s | {s['aggregate_s']:.2f} s | |",
        f"| server: update the global model | | {s['update_global_s']:.2f} s | |",
        f"| site: decrypt the global model | | {s['decrypt_s']:.2f} s | |",
        "",
        f"Precision: the decrypted global model differs from plain FedAvg of the same updates by at most "
        f"{s['max_abs_error']:.1e} (largest weight {s['max_abs_weight']:.2f}). HE contexts: "
        f"{_mib(p1['context_bytes']['client'])} per site (with the secret key), "
        f"{_mib(p1['context_bytes']['server'])} at the server.",
        "",
        "| test Dice of the final global model | " + " | ".join(p1["dice"]["plain"]) + " |",
        "|---" * (len(p1["dice"]["plain"]) + 1) + "|",
    ]
    names = {"plain": "plain", "he": "HE", "control": "plain + noise of the CKKS error's size (control)"}
    for way in [w for w in names if w in p1["dice"]]:
        cells = " | ".join(f"{v:.5f}" for v in p1["dice"][way].values())
        lines.append(f"| {names[way]} trajectory | {cells} |")
    last = p1["rounds"][-1]
    lines += [
        "",
        f"Each trajectory follows its own global model: training amplifies the CKKS rounding, and after "
        f"{len(p1['rounds'])} rounds the HE model's weights differ from the plain one's by up to "
        f"{last['max_abs_diff_plain_vs_he_trajectory']:.1e}"
        + (
            f", the control's (plain FedAvg, each round perturbed uniformly within that round's CKKS error) by "
            f"{last['max_abs_diff_plain_vs_control_trajectory']:.1e}."
            if "max_abs_diff_plain_vs_control_trajectory" in last
            else "."
        ),
    ]
    if report.get("poc"):
        poc = report["poc"]
        lines += [
            "",
            f"POC mode (real processes, `fedgin_abdomen`, demo configuration, {len(poc['plain']['round_s'])} rounds):",
            "",
            "| | whole POC flow | steady round | test Dice |",
            "|---|---|---|---|",
        ]
        for way in ("plain", "he"):
            dice = ", ".join(f"{k} {v:.5f}" for k, v in poc[way]["test_dice"].items())
            lines.append(f"| {way} | {poc[way]['wall_s']:.0f} s | {poc[way]['steady_round_s']:.2f} s | {dice} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import tenseal
    import torch
    from fedgin.tools.data.phantoms import generate_phantom_dataset

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fedgin_he_"))
    training = SMOKE if args.smoke else DEMO
    report = {
        "smoke": args.smoke,
        "started": datetime.now().isoformat(timespec="seconds"),
        "tenseal": tenseal.__version__,
    }
    report["machine"] = machine_info(torch.device("cpu"))
    report["command"] = " ".join(["python bench/he_cost.py", *(argv if argv is not None else sys.argv[1:])])
    log(f"phantoms (size {args.phantom_size}, at most {args.max_cases or 'all'} cases per split) in {work} ...")
    report["phantoms"] = f"seed 0, size {args.phantom_size}, cases per split: {args.max_cases or 'all'}"
    sites = generate_phantom_dataset(
        "abdomen", work / "data", seed=0, size=args.phantom_size, max_cases=args.max_cases, num_workers=2
    )
    log(f"part 1: {args.rounds} FedAvg rounds in process, plain and through FLARE's HE components ...")
    report["in_process"] = in_process(sites, training, args.rounds, work, log)
    report["in_process"]["median"] = summarize(report["in_process"])
    if args.poc_rounds:
        log(f"part 2: POC mode, {args.poc_rounds} rounds, plain and --he ...")
        report["poc"] = poc_part(sites, training, args.poc_rounds, work, log)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "he_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "he_cost.md").write_text(markdown(report))
    log(f"written {out / 'he_cost.md'} and he_cost.json")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
