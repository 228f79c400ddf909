#!/usr/bin/env bash
# The whole test suite: lint (ruff), layer contracts (import-linter), pytest on SQLite
# and the real PostgreSQL / Mosquitto / NATS of the machine, browser tests in Debian's
# headless Chromium. Services that are down are started; if one cannot be reached the
# run fails (tests never skip a missing service).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh
if [[ ! -x /usr/bin/chromium ]]; then
    echo "test: installing Debian chromium for the browser tests" >&2
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
[[ -x /usr/bin/chromium ]] || { echo "test: /usr/bin/chromium is required" >&2; exit 1; }
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -q "$@"
