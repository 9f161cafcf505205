#!/usr/bin/env bash
# Set up and start the whole stack locally: etcd, keyring, edge, admin (and with --demo the Gemini simulator).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh etcd
exec .venv/bin/python -m services.devstack "$@"
