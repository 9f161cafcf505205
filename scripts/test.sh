#!/usr/bin/env bash
# Set up and run the whole test suite (a real etcd is started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
scripts/system-deps.sh
scripts/gemini-cli.sh
scripts/genai-js.sh
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python -m ruff check services tests bench scripts clients
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
