#!/usr/bin/env bash
# One command for a whole POC federation on this machine:
#   poc/run_poc.sh [JOB] [--site NAME=CONFIG ...] [--rounds N] [--workspace DIR]
# Defaults: jobs/fedgin_abdomen on the demo's phantom sites (run `python -m fedgin demo` or
# `python -m fedgin phantoms --out workspace/demo/data` first).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-jobs/fedgin_abdomen}"
[ $# -gt 0 ] && shift
if [[ " $* " != *" --site "* ]]; then
  set -- --site site-ct=site_configs/site-ct.json --site site-mri=site_configs/site-mri.json "$@"
fi
exec python -m fedgin poc run "$job" "$@"
