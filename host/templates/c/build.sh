#!/usr/bin/env bash
# Builds {{name}}.wasm from the C files of this folder: bindings of the evhost WIT world by
# `evhost bindgen c`, a wasm32-wasi reactor module by clang with wasi-libc, and the component
# by `evhost componentize` (which adds the WASI preview 1 adapter of the host's wasmtime).
#
#   ./build.sh [OUTPUT]        # default OUTPUT: {{name}}.wasm next to this script
#
# Needs clang and wasm-ld for wasm32 with wasi-libc; on Debian 12:
#   sudo apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32
# Environment: CC (default clang-19, else clang), WASI_SYSROOT (default /usr, where Debian's
# wasi-libc puts include/wasm32-wasi and lib/wasm32-wasi), EVHOST (the evhost binary, default
# `evhost` on PATH), CFLAGS (added to the compiler's flags).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/{{name}}.wasm}")"
evhost="${EVHOST:-evhost}"
sysroot="${WASI_SYSROOT:-/usr}"
if [ -z "${CC:-}" ]; then
  if command -v clang-19 >/dev/null 2>&1; then CC=clang-19; else CC=clang; fi
fi

missing() {
  echo "error: $1" >&2
  echo "on Debian 12: sudo apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32" >&2
  exit 1
}
command -v "$CC" >/dev/null 2>&1 || missing "no C compiler \`$CC\` (set CC to a clang with the wasm32 target)"
[ -f "$sysroot/include/wasm32-wasi/stdlib.h" ] || [ -f "$sysroot/include/stdlib.h" ] ||
  missing "no wasi-libc under $sysroot (set WASI_SYSROOT)"
command -v "$evhost" >/dev/null 2>&1 || { echo "error: no evhost binary \`$evhost\` (set EVHOST)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$evhost" bindgen c --out "$work/bindings" >/dev/null
# shellcheck disable=SC2086 # CFLAGS is a list of flags
"$CC" --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor -O2 -Wall -Wextra ${CFLAGS:-} \
  -I"$work/bindings" -I"$here" "$here"/*.c \
  "$work/bindings/plugin.c" "$work/bindings/plugin_component_type.o" \
  -o "$work/module.wasm"
# componentize writes OUTPUT.partial and renames it: a watching host never sees half a file.
"$evhost" componentize "$work/module.wasm" --out "$out" >/dev/null
echo "built $out ($(du -h "$out" | cut -f1))"
