#!/usr/bin/env bash
# Builds {{name}}.wasm (rustup target add wasm32-wasip2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate_name}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
