#!/usr/bin/env bash
# Installs the pinned Tansu broker (an Apache-licensed, Kafka-compatible
# broker on crates.io; used by tests/sink_kafka.rs and benches/sinks.rs for the Kafka
# sink) under ~/.cache, once, and prints the path of the `tansu` binary.
# Built with its SQLite storage engine, so that a broker restarted by a
# test keeps its topics.
# With --installed: prints the path only if it is installed already (exit 1
# if not), installing nothing.
set -euo pipefail
VERSION=0.6.0
ROOT="${RILL_TOOLS_DIR:-$HOME/.cache/rill/tools}/tansu-$VERSION"
if [ "${1:-}" = "--installed" ]; then
  [ -x "$ROOT/bin/tansu" ] || exit 1
elif [ ! -x "$ROOT/bin/tansu" ]; then
  echo "installing tansu $VERSION into $ROOT (first time only; this takes a while)" >&2
  cargo install --locked "tansu@$VERSION" --features libsql --root "$ROOT" >&2
fi
echo "$ROOT/bin/tansu"
