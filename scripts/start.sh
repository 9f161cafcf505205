#!/usr/bin/env bash
# Set up and start the whole stack locally: etcd, keyring, edge, admin (and with --demo the Gemini simulator),
# all on mutual TLS with a local CA and certificates made once in var/tls (services/devstack/certs.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh etcd
exec .venv/bin/python -m services.devstack "$@"
