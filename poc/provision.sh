#!/usr/bin/env bash
# Startup kits for the federation in poc/project.yml:  poc/provision.sh /path/outside/the/repo
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: poc/provision.sh OUT_DIR [PROJECT_YML]" >&2; exit 2; }
exec python -m fedgin provision --out "$1" ${2:+--project "$2"}
