#!/usr/bin/env bash
# Builds {{name}}.wasm from *.c: wit-bindgen's C bindings for wit/, Debian's clang with
# wasi-libc (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32), and
# `wasm-tools component new` (cargo install wit-bindgen-cli wasm-tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PATH="${PORTCULLIS_TOOLS:-/var/cache/portcullis}/tools/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wit-bindgen c --out-dir "$tmp" wit --world plugin >/dev/null 2>&1
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Wno-unused-parameter ${CFLAGS:-} \
  -I. -I"$tmp" ./*.c "$tmp/plugin.c" "$tmp/plugin_component_type.o" -Wl,--strip-debug -o "$tmp/core.wasm"
wasm-tools component new "$tmp/core.wasm" -o {{name}}.wasm
echo "built {{name}}.wasm"
