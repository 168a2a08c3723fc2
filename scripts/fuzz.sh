#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets in fuzz/ (cargo-fuzz, libFuzzer),
# each for SECONDS, and says how many inputs each tried. CI runs every
# target briefly; a long run is one command:
#
#   scripts/fuzz.sh 3600                  # every target, an hour each
#   scripts/fuzz.sh 600 http_requests     # one target, ten minutes
#
# Runs on the stable toolchain without a sanitizer (-s none): Rill has no
# unsafe code of its own, and what the targets look for is panics, server
# errors and round trips that do not hold. The corpus grows across runs
# under ~/.cache/rill/fuzz-corpus; a crash leaves its input in
# fuzz/artifacts/TARGET/ (replay: cargo fuzz run -s none TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.13.1
TOOLS="${RILL_TOOLS_DIR:-$HOME/.cache/rill/tools}/cargo-fuzz-$VERSION"
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz $VERSION into $TOOLS (first time only)" >&2
  cargo install --locked "cargo-fuzz@$VERSION" --root "$TOOLS" >&2
fi
export PATH="$TOOLS/bin:$PATH"

SECONDS_EACH="${1:-60}"
if ! [[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS: a positive number)" >&2
  exit 2
fi
[ "$#" -gt 0 ] && shift
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  LIST="$(cargo fuzz list)"
  read -r -a TARGETS <<<"$(echo $LIST)"
fi
if [ "${#TARGETS[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

echo "building the fuzz targets (instrumented; the first build takes minutes)" >&2
cargo fuzz build -s none -O >&2
for target in "${TARGETS[@]}"; do
  corpus="$HOME/.cache/rill/fuzz-corpus/$target"
  mkdir -p "$corpus"
  log="$(mktemp)"
  if ! cargo fuzz run -s none -O "$target" "$corpus" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target failed: see above, and fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 || true)"
  if [ -z "$runs" ]; then
    tail -20 "$log"
    echo "fuzz target $target ran, but said nothing of what it ran" >&2
    exit 1
  fi
  echo "$target: $runs(s) (corpus: $(find "$corpus" -type f | wc -l) inputs)"
  rm -f "$log"
done
