#!/usr/bin/env bash
# Builds webhook-formatter.wasm: src/plugin.js (and what it imports), against the evhost WIT
# world, with ComponentizeJS (StarlingMonkey).
#
#   ./build.sh [OUTPUT]        # default OUTPUT: webhook-formatter.wasm next to this script
#
# The first run installs the pinned toolchain of package-lock.json from npm (`npm ci`, into
# node_modules here). Environment: WIT (WIT dir, default ../../wit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/webhook-formatter.wasm}")"
# Written under another name, then renamed: a watching host never sees half a file.
partial="$out.partial"
wit="$(realpath "${WIT:-$here/../../wit}")"
cd "$here"

# (Re)install when node_modules is missing or older than the lock file.
if [ ! -x node_modules/.bin/componentize-js ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# The host offers no wasi:http: leave out the fetch-event and http features.
node_modules/.bin/componentize-js src/plugin.js --wit "$wit" --world-name plugin \
  --disable http fetch-event --out "$partial"
mv -f "$partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
