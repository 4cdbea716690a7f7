#!/usr/bin/env bash
# Builds {{name}}.wasm, a WebAssembly component for evhost, with ComponentizeJS.
#
#   ./build.sh [OUTPUT]        # default OUTPUT: {{name}}.wasm next to this script
#
# The first run installs the toolchain pinned in package-lock.json from npm (`npm ci`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/{{name}}.wasm}")"
# Written under another name, then renamed: a watching host never sees half a file.
partial="$out.partial"
cd "$here"

# (Re)install when node_modules is missing or older than the lock file.
if [ ! -x node_modules/.bin/componentize-js ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# The host offers no wasi:http: leave out the fetch-event and http features.
node_modules/.bin/componentize-js src/plugin.js --wit wit --world-name plugin \
  --disable http fetch-event --out "$partial"
mv -f "$partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
