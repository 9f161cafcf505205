#!/usr/bin/env bash
# Set up and run the whole test suite (a real etcd is started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
# The npm clients (gemini-cli, @google/genai) install beside the Python set-up: neither touches the other.
(scripts/gemini-cli.sh && scripts/genai-js.sh) &
npm_clients=$!
scripts/setup.sh dev
scripts/system-deps.sh
wait "$npm_clients"
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python -m ruff check services tests bench scripts clients
# mypy runs beside the tests (one core of two; the tests mostly wait on their servers) and fails the run too.
mypy_log="$(mktemp)"
.venv/bin/python -m mypy >"$mypy_log" 2>&1 &
mypy_check=$!
status=0
.venv/bin/python -m pytest "$@" || status=$?
if ! wait "$mypy_check"; then
  cat "$mypy_log"
  status=1
fi
rm -f "$mypy_log"
exit "$status"
