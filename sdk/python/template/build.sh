#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py with componentize-py (pip install componentize-py==0.25.1).
# The interpreter and the imports are pre-initialized at build time into the component.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cpy="${PORTCULLIS_TOOLS:-/var/cache/portcullis}/venv/bin/componentize-py"
[ -x "$cpy" ] || cpy=componentize-py
"$cpy" -d wit -w plugin componentize app -p . -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm"
