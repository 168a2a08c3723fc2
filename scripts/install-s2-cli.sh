#!/usr/bin/env bash
# Installs the pinned official S2 CLI (used by tests/s2_cli_compat.rs) under
# ~/.cache, once, and prints the path of the `s2` binary.
# With --installed: prints the path only if it is installed already (exit 1
# if not), installing nothing.
set -euo pipefail
VERSION=0.43.4
ROOT="${RILL_TOOLS_DIR:-$HOME/.cache/rill/tools}/s2-cli-$VERSION"
if [ "${1:-}" = "--installed" ]; then
  [ -x "$ROOT/bin/s2" ] || exit 1
elif [ ! -x "$ROOT/bin/s2" ]; then
  echo "installing s2-cli $VERSION into $ROOT (first time only; this takes a while)" >&2
  cargo install --locked "s2-cli@$VERSION" --root "$ROOT" >&2
fi
echo "$ROOT/bin/s2"
