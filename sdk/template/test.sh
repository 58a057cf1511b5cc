#!/usr/bin/env bash
# Runs {{name}}.wasm in the real sandbox on tests/request.json with tests/config.json and
# compares the verdict with tests/expected.json. Add cases as more request/expected pairs.
# `portcullis` is $PORTCULLIS, else the one on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
got=$("${PORTCULLIS:-portcullis}" plugin test {{name}}.wasm --request tests/request.json --config tests/config.json)
if [ "$got" != "$(cat tests/expected.json)" ]; then
  printf 'FAIL: expected\n%s\ngot\n%s\n' "$(cat tests/expected.json)" "$got" >&2
  exit 1
fi
echo "ok: {{name}} gives the expected verdict"
