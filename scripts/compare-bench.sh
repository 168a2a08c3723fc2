#!/usr/bin/env bash
# `rill bench` next to the official `s2 bench`, both against the same
# release-built Rill server on loopback, at the same target rates.
#
#   scripts/compare-bench.sh [SECONDS]     (default 10 per run)
#
# Each tool appends 1 KiB records through a pipelined session while reading
# them back live, and checks what it reads. The figures to compare: append
# throughput, ack latency and end-to-end latency (s2 bench reports its
# latencies per record; rill bench reports ack latency per append).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-10}"
PORT=18474
BASIN=bench-compare
DATA="$(mktemp -d)"
stop() {
    if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$DATA"
}
trap stop EXIT

cargo build --release --locked --quiet
RILL=target/release/rill
S2="$(bash scripts/install-s2-cli.sh)"

"$RILL" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" 2>/dev/null &
SERVER=$!
export RILL_ENDPOINT="http://127.0.0.1:$PORT" RILL_BASIN="$BASIN"
for _ in $(seq 50); do "$RILL" basins create "$BASIN" >/dev/null 2>&1 && break; sleep 0.1; done

s2() {
    S2_ACCOUNT_ENDPOINT="$RILL_ENDPOINT" S2_BASIN_ENDPOINT="$RILL_ENDPOINT" \
        S2_ACCESS_TOKEN=unused S2_NO_UPDATE_CHECK=1 NO_COLOR=1 HOME="$DATA" "$S2" "$@"
}

# A 1 KiB body meters 1032 bytes (8 bytes of overhead); s2 bench sizes
# records by metered bytes.
for mibps in 1 10 50; do
    rate=$(( mibps * 1024 * 1024 / 1032 ))
    echo "=== target $mibps MiB/s ($rate records/s of 1 KiB), ${SECS}s"
    echo "--- rill bench --rate $rate"
    "$RILL" bench --rate "$rate" --duration "${SECS}s" --record-size 1024
    echo "--- s2 bench -t $mibps (reference)"
    s2 bench "$BASIN" -b 1032 -t "$mibps" -d "${SECS}s" -w 1s 2>&1 | grep -v '^\s*$' | tail -n 40
    echo
done
echo "=== flat out, ${SECS}s"
echo "--- rill bench (no --rate)"
"$RILL" bench --duration "${SECS}s" --record-size 1024
