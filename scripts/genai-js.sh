#!/usr/bin/env bash
# The official JS client @google/genai, pinned, installed into .tools/genai-js (git-ignored) for the e2e test
# that opens a Live session through the edge with it (tests/e2e/test_live.py). Idempotent: a no-op (one file
# read) when the pinned version is there. Without node/npm that test says why it skips.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="3.6.1"
PREFIX=".tools/genai-js"
STAMP="$PREFIX/node_modules/@google/genai/package.json"
if [ -f "$STAMP" ] && grep -q "\"version\": \"$VERSION\"" "$STAMP"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "note: npm not found; the @google/genai Live e2e test will skip" >&2
  exit 0
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "@google/genai@$VERSION" >/dev/null
