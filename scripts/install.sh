#!/usr/bin/env bash
# Install openvpp into ./.venv on a fresh machine: Python packages from PyPI,
# the dashboard's browser libraries from npm (shipped inside the package).
#   bash scripts/install.sh          # runtime + test tools
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "openvpp needs Python >= 3.11"'
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import openvpp, fastapi, sqlalchemy, highspy, duckdb, playwright" \
    || { echo "install: Python packages are missing after pip install" >&2; exit 1; }
if ! command -v npm >/dev/null 2>&1; then
    echo "install: npm not found; installing Debian's nodejs and npm" >&2
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
bash scripts/build_web.sh
echo "install: done (.venv/bin/openvpp)"
