#!/usr/bin/env bash
# A site's install: torch, then fedgin's runtime dependencies and nothing else (no extras).
# The same commands build the container image (Dockerfile) and CI's fresh-venv site test
# (tests/tools/federation/test_site_install.py), so what a site runs is what was tested.
#
#   poc/site_install.sh [FEDGIN_SOURCE]        # into the Python environment whose pip is on PATH
#
# TORCH_VERSION (default 2.13.0) and TORCH_INDEX_URL pick the build: unset, pip's own index (the CPU
# build on this kind of machine); https://download.pytorch.org/whl/cpu or .../whl/cu128 elsewhere.
set -euo pipefail
src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
torch_version="${TORCH_VERSION:-2.13.0}"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  python -m pip install --no-cache-dir "torch==${torch_version}" --index-url "${TORCH_INDEX_URL}"
else
  python -m pip install --no-cache-dir "torch==${torch_version}"
fi
python -m pip install --no-cache-dir "${src}"
# The site's code imports (a missing runtime dependency fails the build here, not in the first job).
python -c "import fedgin.flare.executor, fedgin.flare.privacy, fedgin.seg.training; print('fedgin site install: ok')"
