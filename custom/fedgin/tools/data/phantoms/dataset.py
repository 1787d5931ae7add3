"""Write a multi-site phantom data set: NIfTI cases, Decathlon datalists and
site configs.

Layout (``site`` = e.g. ``site-ct``, ``prefix`` = ``ct`` / ``mri``)::

    out_dir/phantom_dataset.json                 provenance (task, seed, specs)
    out_dir/<site>/imagesTr/<prefix>_000.nii.gz
    out_dir/<site>/labelsTr/<prefix>_000.nii.gz
    out_dir/<site>/datalist.json                 {"training": [...], "validation": [...], "test": [...]}
    out_dir/<site>/site_config.json              {"site_name", "modality", "data_root", "datalist", "labels", ...}

Every label file holds every organ; a site with ``unlabelled`` organs leaves them out of its
config's ``labels`` (training treats them as not annotated: partial labels) and lists all of them
in ``eval_labels``, so its validation and test splits score the organs it learns only through the
other sites.

Cases of a site are numbered 0 … n-1: training first, then validation, then
test.  Case *i* of a site is drawn from its own random stream derived from
``(seed, task, site name, i)``, so it does not depend on how many cases are
generated nor on the order / process they are generated in, and a seed
reproduces the files byte for byte (nibabel writes gzip with mtime 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from fedgin.tools.files import write_json

from .anatomy import ORGANS, TASKS
from .case import DEFAULT_GRID, LABEL_IDS, make_case, normalize_modality

__all__ = [
    "PhantomSiteSpec",
    "default_site_specs",
    "scale_site_specs",
    "case_rng",
    "save_nifti",
    "generate_phantom_dataset",
]


@dataclass(frozen=True)
class PhantomSiteSpec:
    """One site of the phantom data set.

    ``modality``: ``"CT"`` or ``"MR"``.  ``shape`` / ``spacing`` (mm) /
    ``orientation`` (nibabel axis code, e.g. ``"RAS"``, ``"LPS"``) define the
    voxel grid.  ``label_ids`` (organ → id in this site's files) defaults to
    :data:`~fedgin.tools.data.phantoms.case.LABEL_IDS` ``[task][modality]``; ``prefix``
    (file name prefix) defaults to ``"ct"`` / ``"mri"``.  ``unlabelled``: organs
    the site's training does not label (partial labels; scored through ``eval_labels``).
    """

    name: str
    modality: str
    n_train: int
    n_val: int
    n_test: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str = "RAS"
    label_ids: Mapping[str, int] | None = None
    prefix: str | None = None
    unlabelled: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "modality", normalize_modality(self.modality))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if len(self.shape) != 3 or len(self.spacing) != 3:
            raise ValueError("shape and spacing must have 3 entries")
        if min(self.n_train, self.n_val, self.n_test) < 0:
            raise ValueError("case counts must be >= 0")
        if self.label_ids is not None:
            object.__setattr__(self, "label_ids", dict(self.label_ids))
        object.__setattr__(self, "unlabelled", tuple(self.unlabelled))

    @property
    def file_prefix(self) -> str:
        return self.prefix or ("ct" if self.modality == "CT" else "mri")

    @property
    def n_cases(self) -> int:
        return self.n_train + self.n_val + self.n_test

    def labels_for(self, task: str) -> dict[str, int]:
        """Organ → label id for ``task``, in the project's organ order."""
        ids = self.label_ids if self.label_ids is not None else LABEL_IDS[task][self.modality]
        return {organ: int(ids[organ]) for organ in ORGANS[task] if organ in ids}

    def with_counts(self, n_train: int, n_val: int, n_test: int) -> PhantomSiteSpec:
        return replace(self, n_train=n_train, n_val=n_val, n_test=n_test)

    def scaled(self, size: float = 1.0, max_cases: int | None = None) -> PhantomSiteSpec:
        """Same field of view on a grid ``size`` times as fine per axis
        (``size`` < 1 → fewer, larger voxels), and with at most ``max_cases``
        cases per split (each split keeps at least one case if it had one)."""
        shape = tuple(max(4, int(round(n * size))) for n in self.shape)
        spacing = tuple(s * n / m for s, n, m in zip(self.spacing, self.shape, shape, strict=True))
        counts = [self.n_train, self.n_val, self.n_test]
        if max_cases is not None:
            counts = [min(c, max_cases) for c in counts]
        return replace(self, shape=shape, spacing=spacing, n_train=counts[0], n_val=counts[1], n_test=counts[2])


# As in the paper and in the public MRI sets (CHAOS): the MRI site labels no pancreas or gallbladder.
MRI_UNLABELLED = {"abdomen": ("pancreas", "gallbladder"), "heart": ()}


def default_site_specs(task: str = "abdomen") -> list[PhantomSiteSpec]:
    """site-ct (CT, RAS, 12/3/5 cases, every organ labelled) and site-mri (MR, LPS, 3/3/5 cases,
    abdomen: no pancreas or gallbladder labels for training, all organs scored)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    ct_shape, ct_spacing, ct_orient = DEFAULT_GRID["CT"]
    mr_shape, mr_spacing, mr_orient = DEFAULT_GRID["MR"]
    return [
        PhantomSiteSpec("site-ct", "CT", 12, 3, 5, ct_shape, ct_spacing, ct_orient),
        PhantomSiteSpec("site-mri", "MR", 3, 3, 5, mr_shape, mr_spacing, mr_orient, unlabelled=MRI_UNLABELLED[task]),
    ]


def scale_site_specs(
    specs: Sequence[PhantomSiteSpec], size: float = 1.0, max_cases: int | None = None
) -> list[PhantomSiteSpec]:
    """:meth:`PhantomSiteSpec.scaled` applied to every site (e.g. tiny data for tests)."""
    return [s.scaled(size, max_cases) for s in specs]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def case_rng(seed: int, task: str, site_name: str, index: int) -> np.random.Generator:
    """Independent random stream of case ``index`` of ``site_name``."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(_stable_int(task), _stable_int(site_name), int(index)))
    return np.random.default_rng(ss)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``data`` with ``affine`` in both qform and sform (code 1, scanner), mm units."""
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(data.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, str(path))
    return Path(path)


def _split_of(spec: PhantomSiteSpec, index: int) -> str:
    if index < spec.n_train:
        return "training"
    if index < spec.n_train + spec.n_val:
        return "validation"
    return "test"


def _write_case(args) -> tuple[int, dict[str, str]]:
    task, spec, seed, index, site_dir = args
    rng = case_rng(seed, task, spec.name, index)
    image, label, affine = make_case(
        task,
        spec.modality,
        rng,
        shape=spec.shape,
        spacing=spec.spacing,
        label_ids=spec.labels_for(task),
        orientation=spec.orientation,
    )
    fname = f"{spec.file_prefix}_{index:03d}.nii.gz"
    site_dir = Path(site_dir)
    save_nifti(image, affine, site_dir / "imagesTr" / fname)
    save_nifti(label, affine, site_dir / "labelsTr" / fname)
    return index, {"image": f"imagesTr/{fname}", "label": f"labelsTr/{fname}"}


def generate_phantom_dataset(
    task: str,
    out_dir: str | Path,
    seed: int = 0,
    sites: Sequence[PhantomSiteSpec] | None = None,
    *,
    size: float = 1.0,
    max_cases: int | None = None,
    num_workers: int = 1,
) -> dict[str, Path]:
    """Generate the phantom data set of ``task`` (``"abdomen"`` / ``"heart"``)
    under ``out_dir``.

    ``sites`` defaults to :func:`default_site_specs`; ``size`` / ``max_cases``
    shrink every site (see :meth:`PhantomSiteSpec.scaled`); ``num_workers`` > 1
    generates cases in parallel processes (same bytes as serial).  Existing
    files of the same names are overwritten.  Returns site name → path of its
    ``site_config.json``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    specs = list(sites) if sites is not None else default_site_specs(task)
    if size != 1.0 or max_cases is not None:
        specs = scale_site_specs(specs, size, max_cases)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate site names: {names}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = []
    for spec in specs:
        unknown = set(spec.labels_for(task)) ^ set(ORGANS[task])
        if unknown:
            raise ValueError(f"site {spec.name}: label_ids must name exactly the organs {ORGANS[task]}")
        if set(spec.unlabelled) - set(ORGANS[task]) or set(spec.unlabelled) >= set(ORGANS[task]):
            raise ValueError(f"site {spec.name}: unlabelled must be some, not all, of the organs {ORGANS[task]}")
        site_dir = out_dir / spec.name
        (site_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
        (site_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
        jobs += [(task, spec, int(seed), i, str(site_dir)) for i in range(spec.n_cases)]

    if num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(_write_case, jobs, chunksize=1))
    else:
        results = [_write_case(j) for j in jobs]

    configs: dict[str, Path] = {}
    pos = 0
    for spec in specs:
        site_dir = out_dir / spec.name
        datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
        for index, entry in results[pos : pos + spec.n_cases]:
            datalist[_split_of(spec, index)].append(entry)
        pos += spec.n_cases
        write_json(site_dir / "datalist.json", datalist)
        labels = spec.labels_for(task)
        config = {
            "site_name": spec.name,
            "modality": spec.modality,
            "data_root": ".",
            "datalist": "datalist.json",
            "labels": {o: i for o, i in labels.items() if o not in spec.unlabelled},
        }
        if spec.unlabelled:
            config["eval_labels"] = labels
        write_json(site_dir / "site_config.json", config)
        configs[spec.name] = site_dir / "site_config.json"

    write_json(
        out_dir / "phantom_dataset.json",
        {
            "task": task,
            "seed": int(seed),
            "organs": ORGANS[task],
            "sites": [{**asdict(s), "label_ids": s.labels_for(task), "prefix": s.file_prefix} for s in specs],
        },
    )
    return configs
