#!/usr/bin/env bash
# Builds fraud-check.wasm: app.py and rules.py, against the evhost WIT world, with componentize-py.
#
#   ./build.sh [OUTPUT]        # default OUTPUT: fraud-check.wasm next to this script
#
# The first run creates a virtualenv (.venv here, or $VENV) with the pinned requirements.txt
# from PyPI. Environment: VENV (virtualenv dir), WIT (WIT dir, default ../../wit),
# PYTHON (interpreter that creates the virtualenv, default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/fraud-check.wasm}")"
# Written under another name, then renamed: a watching host never sees half a file.
partial="$out.partial"
venv="${VENV:-$here/.venv}"
wit="${WIT:-$here/../../wit}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/componentize-py" ] || ! cmp -s "$here/requirements.txt" "$venv/evhost-requirements.txt"; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/evhost-requirements.txt"
fi

# Only the plugin's own modules go into the component: build from a clean source folder.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp "$here/app.py" "$here/rules.py" "$src/"
cd "$src"
env -u VIRTUAL_ENV "$venv/bin/componentize-py" -q -d "$wit" -w plugin componentize app -p "$src" -o "$partial"
mv -f "$partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
