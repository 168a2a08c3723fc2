#!/usr/bin/env bash
# Installs what tests/durable_streams.rs runs against Rill: the Durable
# Streams conformance suite and the official TypeScript client, pinned by
# conformance/durable-streams/package-lock.json, with Node from Debian
# packages (vitest 4 needs Node 20 or later). npm's cache is kept under
# ~/.cache. Prints the directory the tests run in.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/conformance/durable-streams"

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq nodejs >&2
  # Debian's nodejs comes without npm; NodeSource's has it.
  command -v npm >/dev/null || $SUDO apt-get install -y -qq npm >&2
fi
if [ "$(node_major)" -lt 20 ]; then
  echo "Node $(node --version) is too old for the conformance suite (vitest 4 needs 20 or later)" >&2
  exit 1
fi
# Reinstalled only when the lock file changed since the last install.
STAMP="$DIR/node_modules/.rill-lock"
if ! cmp -s "$DIR/package-lock.json" "$STAMP" 2>/dev/null; then
  echo "installing the Durable Streams conformance suite into $DIR/node_modules" >&2
  npm_config_cache="$HOME/.cache/rill/npm" npm ci --prefix "$DIR" --no-audit --no-fund >&2
  cp "$DIR/package-lock.json" "$STAMP"
fi
echo "$DIR"
