#!/usr/bin/env bash
# The real gemini-cli, pinned, installed into .tools/npm (git-ignored) for the e2e
# test that runs `gemini -p` against the demo stack. Idempotent: a no-op (one
# file read) when the pinned version is already there. Without node/npm the test
# that needs it says why it skips.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="0.61.0"
PREFIX=".tools/npm"
STAMP="$PREFIX/node_modules/@google/gemini-cli/package.json"
if [ -f "$STAMP" ] && grep -q "\"version\": \"$VERSION\"" "$STAMP"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "note: npm not found; the gemini-cli e2e test will skip" >&2
  exit 0
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "@google/gemini-cli@$VERSION" >/dev/null
