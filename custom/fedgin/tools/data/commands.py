"""Commands that prepare data: ``phantoms`` (synthetic sites) and ``prepare`` (``python -m fedgin prepare
DATASET --src DIR --out DIR [options]``: a public dataset's site configs); each command's parser
(``add_*``) beside its handler (``cmd_*``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import time

from fedgin.tools import cli_options
from fedgin.tools.data.datasets import CONVERTERS
from fedgin.tools.data.datasets.common import CLASS_MODES, TASKS, Options

HELP = {
    "amos": "AMOS22 CT and/or MRI (imagesTr/labelsTr/imagesVa/labelsVa), files used in place",
    "totalsegmentator": "TotalSegmentator CT v2 or MRI release (s0000/ct.nii.gz + segmentations/): merged label maps",
    "chaos": "CHAOS MRI (T2-SPIR or T1-DUAL) or CT, DICOM + PNG masks converted to NIfTI",
    "btcv": "BTCV / Synapse CT (RawData/Training/img + label, or dataset_0.json), files used in place",
    "mmwhs": "MM-WHS CT and/or MRI whole heart or substructures (ct_train/, mr_train/), files used in place",
}
DEFAULT_TASK = {"mmwhs": "heart"}


def cmd_phantoms(args) -> int:
    from fedgin.tools.data.phantoms import generate_phantom_dataset

    start = time.time()
    configs = generate_phantom_dataset(
        args.task, args.out, seed=args.seed, size=args.size, max_cases=args.max_cases, num_workers=args.workers
    )
    for name, path in configs.items():
        print(f"{name}: {path}")
    print(f"phantoms written to {args.out} in {time.time() - start:.1f} s")
    return 0


def add_phantoms(sub) -> None:
    p = sub.add_parser("phantoms", help="write a synthetic CT/MRI phantom dataset with site configs")
    p.add_argument("--task", choices=cli_options.TASKS, default="abdomen")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=float, default=1.0, help="grid scale per axis (0.5: half the voxels per axis)")
    p.add_argument("--max-cases", type=int, default=None, help="at most this many cases per split")
    p.add_argument("--workers", type=int, default=2, help="processes writing cases")
    p.set_defaults(func=cmd_phantoms)


def _split_value(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def cmd_prepare(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    module = importlib.import_module(CONVERTERS[args.dataset])
    options = Options(
        task=args.task or DEFAULT_TASK.get(args.dataset, "abdomen"),
        classes=args.classes,
        val=args.val,
        test=args.test,
        seed=args.seed,
        max_cases=args.max_cases,
    )
    extra = {"sequence": args.sequence} if args.dataset == "chaos" else {}
    written = module.convert(args.src, args.out, args.modality, options, args.site_name, **extra)
    for name, path in written.items():
        print(f"{name}: {path}")
    print("Pass each as --site NAME=SITE_CONFIG to `python -m fedgin simulate` (or install it as the site's config).")
    return 0


def add_prepare(subparsers) -> None:
    """Register ``prepare`` with one sub-command per dataset on the fedgin parser's ``subparsers``."""
    p = subparsers.add_parser("prepare", help="site configs + datalists for a public dataset in its downloaded layout")
    datasets = p.add_subparsers(dest="dataset", required=True)
    for name in CONVERTERS:
        q = datasets.add_parser(name, help=HELP[name], description=HELP[name])
        q.add_argument("--src", required=True, help="the dataset folder as downloaded and unpacked")
        q.add_argument("--out", required=True, help="output folder; one sub-folder per site")
        q.add_argument(
            "--modality",
            type=str.upper,
            choices=("CT", "MR"),
            default=None,
            help="default: every modality the dataset has (AMOS, MM-WHS), detected (TotalSegmentator), MR (CHAOS)",
        )
        q.add_argument("--task", choices=TASKS, default=None, help=f"default: {DEFAULT_TASK.get(name, 'abdomen')}")
        q.add_argument(
            "--classes",
            choices=CLASS_MODES,
            default="whole",
            help="heart task: one heart class, or the MM-WHS substructures",
        )
        q.add_argument(
            "--val",
            type=_split_value,
            default=0.1,
            help="validation fraction (<1) or count (>=1) when the dataset has no labelled validation "
            "split (default: %(default)s)",
        )
        q.add_argument("--test", type=_split_value, default=0.2, help="the same for test (default: %(default)s)")
        q.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-cases")
        q.add_argument("--max-cases", type=int, default=None, help="at most this many cases per split")
        q.add_argument("--site-name", default=None, help="site name (one modality only)")
        if name == "chaos":
            q.add_argument(
                "--sequence",
                choices=("t2spir", "t1dual_in", "t1dual_out"),
                default="t2spir",
                help="MR sequence (default: %(default)s)",
            )
    p.set_defaults(func=cmd_prepare)
