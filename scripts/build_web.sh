#!/usr/bin/env bash
# Build step of the dashboard: fetch the browser libraries with npm and copy the
# files the page and /docs need into src/openvpp/web/static/vendor/, so that
# nothing is loaded from a CDN at run time.
#
#   bash scripts/build_web.sh           # install (npm ci) if needed, then copy
#   bash scripts/build_web.sh --force   # reinstall node_modules and recopy
#
# Idempotent: when node_modules matches the lock and the vendor files are
# up to date it only checks and returns. Needs node and npm on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$ROOT/web"
NM="$WEB/node_modules"
VENDOR="$ROOT/src/openvpp/web/static/vendor"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

die() { echo "build_web: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js (Debian: apt-get install -y nodejs npm)"
[[ -f "$WEB/package.json" ]] || die "missing $WEB/package.json"

# swagger-ui-dist depends on @scarf/scarf, whose install script reports usage
# over the network; never run it.
export SCARF_ANALYTICS=false

stamp="$NM/.openvpp-lock.sha256"
want_stamp=""
if [[ -f "$WEB/package-lock.json" ]]; then
    want_stamp="$(cat "$WEB/package.json" "$WEB/package-lock.json" | sha256sum | cut -d' ' -f1)"
fi

if [[ $FORCE == 1 || ! -d "$NM" || -z "$want_stamp" || "$(cat "$stamp" 2>/dev/null || true)" != "$want_stamp" ]]; then
    cd "$WEB"
    if [[ -f package-lock.json ]]; then
        echo "build_web: npm ci in web/"
        npm ci --no-audit --no-fund --ignore-scripts
    else
        echo "build_web: no package-lock.json, npm install in web/"
        npm install --no-audit --no-fund --ignore-scripts
        want_stamp="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
    fi
    echo "$want_stamp" > "$stamp"
    cd "$ROOT"
else
    echo "build_web: web/node_modules is up to date with the lock"
fi

# source (relative to node_modules) -> destination (relative to vendor/)
FILES=(
    "echarts/dist/echarts.min.js:echarts.min.js"
    "echarts/LICENSE:echarts.LICENSE.txt"
    "swagger-ui-dist/swagger-ui-bundle.js:swagger-ui/swagger-ui-bundle.js"
    "swagger-ui-dist/swagger-ui.css:swagger-ui/swagger-ui.css"
    "swagger-ui-dist/favicon-32x32.png:swagger-ui/favicon-32x32.png"
    "swagger-ui-dist/LICENSE:swagger-ui/LICENSE.txt"
)

copied=0
for pair in "${FILES[@]}"; do
    src="$NM/${pair%%:*}"
    dst="$VENDOR/${pair#*:}"
    [[ -f "$src" ]] || die "expected $src after npm install; is the package version right?"
    if [[ ! -f "$dst" ]] || ! cmp -s "$src" "$dst"; then
        mkdir -p "$(dirname "$dst")"
        cp "$src" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        copied=$((copied + 1))
    fi
done

# versions, so the app can show what it serves
{
    printf 'echarts %s\n' "$(node -p "require('$NM/echarts/package.json').version" 2>/dev/null || echo unknown)"
    printf 'swagger-ui-dist %s\n' "$(node -p "require('$NM/swagger-ui-dist/package.json').version" 2>/dev/null || echo unknown)"
} > "$VENDOR/VERSIONS.txt.tmp.$$"
mv -f "$VENDOR/VERSIONS.txt.tmp.$$" "$VENDOR/VERSIONS.txt"

echo "build_web: $copied file(s) updated in ${VENDOR#"$ROOT"/}"
