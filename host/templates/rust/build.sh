#!/usr/bin/env bash
# Builds {{name}}.wasm, a WebAssembly component for evhost.
#
#   ./build.sh [OUTPUT]        # default OUTPUT: {{name}}.wasm next to this script
#
# Needs Rust with the wasm32-wasip2 target (rustup target add wasm32-wasip2); crates come from
# crates.io. Honours CARGO_TARGET_DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/{{name}}.wasm}")"
# Written under another name, then renamed: a watching host never sees half a file.
partial="$out.partial"
cd "$here"
cargo build --release --target wasm32-wasip2
target="${CARGO_TARGET_DIR:-$here/target}"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$partial"
mv -f "$partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
