#!/usr/bin/env bash
# Where Rill's CPU time goes under the official `s2 bench` flat out, and
# under its catch-up read: `perf` profiles of the server, as flame graphs
# and as the functions that take the most of it.
#
#   bench/profile.sh                # into bench/profiles/
#   bench/profile.sh --out DIR
#
# One release server on a fresh data directory (under target/), one
# `s2 bench` of 1 KiB records flat out for 8 s; `perf record` samples the
# server (499 Hz, DWARF call graphs) during the appends and again during
# the catch-up read that follows. For each phase it writes
# PHASE.svg (a flame graph, by inferno, installed pinned under ~/.cache)
# and PHASE.txt (the bench's figures, and the functions by the share of
# samples they appear in). Needs `perf` (Debian's linux-perf).
set -euo pipefail
CALLER_DIR="$(pwd)"
cd "$(dirname "$0")/.."
OUT=bench/profiles
case "${1:-}" in
  --out)
    [ -n "${2:-}" ] || { echo "profile.sh: --out needs a directory" >&2; exit 2; }
    OUT="$(cd "$CALLER_DIR" && mkdir -p "$2" && cd "$2" && pwd)"
    ;;
  "") ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

INFERNO_VERSION=0.12.3
INFERNO="${RILL_TOOLS_DIR:-$HOME/.cache/rill/tools}/inferno-$INFERNO_VERSION"
if [ ! -x "$INFERNO/bin/inferno-flamegraph" ]; then
  echo "== installing inferno $INFERNO_VERSION into $INFERNO (first time only)" >&2
  cargo install --locked "inferno@$INFERNO_VERSION" --root "$INFERNO" >&2
fi
S2="${S2_CLI:-$(bash scripts/install-s2-cli.sh)}"
echo "== building rill (release, with debug info)" >&2
cargo build --release --locked -q
RILL="${CARGO_TARGET_DIR:-target}/release/rill"

mkdir -p target
WORK="$(mktemp -d "$(pwd)/target/profile.XXXXXX")"
SERVER="" BENCH=""
cleanup() {
  [ -n "$BENCH" ] && kill "$BENCH" 2>/dev/null
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$((20000 + RANDOM % 20000))
"$RILL" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER=$!
export S2_ACCOUNT_ENDPOINT="http://127.0.0.1:$PORT" S2_BASIN_ENDPOINT="http://127.0.0.1:$PORT"
export S2_ACCESS_TOKEN=profile S2_NO_UPDATE_CHECK=1 NO_COLOR=1 HOME="$WORK"
until "$S2" create-basin bench-basin >/dev/null 2>&1; do
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done

# Samples the server until the file $2 exists (or 30 s), into $1.
sample() {
  perf record -q -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$1" 2>"$1.log" &
  local perf=$! waited=0
  until [ -e "$2" ] || [ "$waited" -ge 300 ]; do sleep 0.1; waited=$((waited + 1)); done
  if ! kill -INT "$perf" 2>/dev/null; then
    echo "profile.sh: perf stopped early (kernel.perf_event_paranoid?); it said:" >&2
    cat "$1.log" >&2
    exit 1
  fi
  wait "$perf" 2>/dev/null || true
}

DURATION=8
echo "== s2 bench flat out, 1 KiB records, ${DURATION} s; then the catch-up read" >&2
("$S2" bench bench-basin --record-size 1024 --target-mibps 1000 --duration "${DURATION}s" \
  --catchup-delay 2s >"$WORK/bench.out" 2>&1; touch "$WORK/bench.done") &
BENCH=$!
# The appends: from 1 s in (past the start) to 1 s before their end.
sleep 1
(sleep $((DURATION - 2)); touch "$WORK/appends.done") &
sample "$WORK/flat-out.data" "$WORK/appends.done"
# The catch-up read starts once the appends end and the delay is over:
# sampling starts before (an idle server takes no samples).
sleep 1
sample "$WORK/catch-up.data" "$WORK/bench.done"
wait "$BENCH" || { cat "$WORK/bench.out" >&2; exit 1; }

for phase in flat-out catch-up; do
  perf script -i "$WORK/$phase.data" 2>/dev/null |
    "$INFERNO/bin/inferno-collapse-perf" >"$WORK/$phase.folded"
  "$INFERNO/bin/inferno-flamegraph" --title "rill serve: s2 bench 1 KiB, $phase" \
    <"$WORK/$phase.folded" >"$OUT/$phase.svg"
  {
    echo "# rill serve under s2 bench (1 KiB records, flat out): $phase"
    echo
    { grep -E '^(Write|Catchup):|^p50 |^p99 ' "$WORK/bench.out" || true; } | sed 's/^/    /'
    echo
    echo "Threads by their share of the server's samples:"
    echo
    awk '{ count = $NF; total += count; split($0, frames, ";"); share[frames[1]] += count }
      END { for (t in share) printf "%6.2f%%  %s\n", 100 * share[t] / total, t }' \
      "$WORK/$phase.folded" | sort -rn | sed 's/^/    /'
    echo
    echo "Where the samples were taken (self time), the 25 largest:"
    echo
    awk '{ count = $NF; total += count; $NF = ""; n = split($0, frames, ";")
      leaf = frames[n]; sub(/ +$/, "", leaf); share[leaf] += count }
      END { for (f in share) printf "%6.2f%%  %s\n", 100 * share[f] / total, substr(f, 1, 150) }' \
      "$WORK/$phase.folded" | sort -rn | sed -n '1,25p' | sed 's/^/    /'
    echo
    echo "Rill's, the storage's and HTTP/2's functions by the share of samples they are"
    echo "on the stack of (inclusive), the 30 largest:"
    echo
    awk '{ count = $NF; $NF = ""; n = split($0, frames, ";"); total += count
      delete seen
      for (i = 2; i <= n; i++) {
        f = frames[i]; sub(/ +$/, "", f)
        if (f !~ /^<?(rill|rill_protocol|fjall|lsm_tree|h2|hyper|prost)::/ || f in seen) continue
        seen[f] = 1; share[f] += count
      }
    }
    END { for (f in share) printf "%6.2f%%  %s\n", 100 * share[f] / total, substr(f, 1, 150) }' \
      "$WORK/$phase.folded" | sort -rn | sed -n '1,30p' | sed 's/^/    /'
  } >"$OUT/$phase.txt"
  echo "== $OUT/$phase.svg, $OUT/$phase.txt" >&2
done
