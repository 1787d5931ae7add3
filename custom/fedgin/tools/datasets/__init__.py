"""Converters from public datasets' downloaded layouts to fedgin site configs and datalists.

``python -m fedgin prepare {amos,totalsegmentator,chaos,btcv,mmwhs} --src DIR --out DIR``; see
:mod:`fedgin.tools.datasets.commands` and site_configs/README.md (Real datasets).
"""

from fedgin.tools.datasets.common import DatasetError, Options

__all__ = ["DatasetError", "Options", "CONVERTERS"]

# dataset name -> module with convert(src, out, modality, options, site_name, ...)
CONVERTERS = {
    "amos": "fedgin.tools.datasets.amos",
    "totalsegmentator": "fedgin.tools.datasets.totalsegmentator",
    "chaos": "fedgin.tools.datasets.chaos",
    "btcv": "fedgin.tools.datasets.btcv",
    "mmwhs": "fedgin.tools.datasets.mmwhs",
}
