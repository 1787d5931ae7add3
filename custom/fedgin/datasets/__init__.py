"""Converters from public datasets' downloaded layouts to fedgin site configs and datalists.

``python -m fedgin prepare {amos,totalsegmentator,chaos,btcv,mmwhs} --src DIR --out DIR``; see
:mod:`fedgin.datasets.cli` and site_configs/README.md (Real datasets).
"""

from fedgin.datasets.common import DatasetError, Options

__all__ = ["DatasetError", "Options", "CONVERTERS"]

# dataset name -> module with convert(src, out, modality, options, site_name, ...)
CONVERTERS = {
    "amos": "fedgin.datasets.amos",
    "totalsegmentator": "fedgin.datasets.totalsegmentator",
    "chaos": "fedgin.datasets.chaos",
    "btcv": "fedgin.datasets.btcv",
    "mmwhs": "fedgin.datasets.mmwhs",
}
