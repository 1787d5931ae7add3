"""Converters from public datasets' downloaded layouts to fedgin site configs and datalists.

``python -m fedgin prepare {amos,totalsegmentator,chaos,btcv,mmwhs} --src DIR --out DIR``; see
:mod:`fedgin.tools.data.commands` and site_configs/README.md (Real datasets).
"""

from fedgin.tools.data.datasets.common import DatasetError, Options

__all__ = ["DatasetError", "Options", "CONVERTERS"]

# dataset name -> module with convert(src, out, modality, options, site_name, ...)
CONVERTERS = {
    "amos": "fedgin.tools.data.datasets.amos",
    "totalsegmentator": "fedgin.tools.data.datasets.totalsegmentator",
    "chaos": "fedgin.tools.data.datasets.chaos",
    "btcv": "fedgin.tools.data.datasets.btcv",
    "mmwhs": "fedgin.tools.data.datasets.mmwhs",
}
