#!/usr/bin/env bash
# Builds {{name}}.wasm, a WebAssembly component for evhost, with componentize-py.
#
#   ./build.sh [OUTPUT]        # default OUTPUT: {{name}}.wasm next to this script
#
# The first run creates a virtualenv (.venv here, or $VENV) with the pinned requirements.txt
# from PyPI. Every *.py file here except test_*.py goes into the component.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/{{name}}.wasm}")"
# Written under another name, then renamed: a watching host never sees half a file.
partial="$out.partial"
venv="${VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/componentize-py" ] || ! cmp -s "$here/requirements.txt" "$venv/evhost-requirements.txt"; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/evhost-requirements.txt"
fi

src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
find "$here" -maxdepth 1 -name '*.py' ! -name 'test_*.py' -exec cp {} "$src/" \;
cd "$src"
env -u VIRTUAL_ENV "$venv/bin/componentize-py" -q -d "$here/wit" -w plugin componentize app -p "$src" -o "$partial"
mv -f "$partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
