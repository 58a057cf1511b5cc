#!/usr/bin/env bash
# Builds {{name}}.wasm from plugin.js with @bytecodealliance/componentize-js 0.23 (found in
# $PORTCULLIS_NPM_DIR, default /var/cache/portcullis/npm, else `npm install` here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
node componentize.mjs --wit wit --out {{name}}.wasm plugin.js 2>/dev/null
echo "built {{name}}.wasm"
