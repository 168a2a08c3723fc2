#!/usr/bin/env bash
# Rill and s2-lite side by side, measured by the official `s2 bench`.
#
#   bench/compare.sh              # the full comparison (~45 min), into bench/RESULTS.md
#   bench/compare.sh --smoke      # each workload once, 5 s, against Rill only
#
# Every run gets a fresh server on a fresh data directory on local disk
# (under target/bench). Runs alternate between the servers, so that the
# machine's noise hits both alike, and each figure is the median of
# --runs runs. s2-lite listens on every interface, so it and its client
# run in a network namespace of their own (`unshare -n`, loopback only);
# Rill is told to listen on 127.0.0.1.
#
# Options:
#   --runs N        runs per workload and server (default 3)
#   --duration S    seconds each `s2 bench` appends for (default 8)
#   --rill PATH     the rill binary (default: a release build of this tree)
#   --out FILE      where the Markdown table goes (default bench/RESULTS.md)
#   --smoke         each workload once, for 5 s, against Rill only (the
#                   test suite runs this to check that the parts work)
set -euo pipefail
# Paths given relative to where it was started, before moving to the
# repository's root.
CALLER_DIR="$(pwd)"
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_DIR/$1" ;; esac; }
cd "$(dirname "$SCRIPT")/.."

# Inside one run (re-invoked, maybe in a namespace): settings come from
# the environment of the invoking script.
if [ "${1:-}" = --internal-run ]; then
  INTERNAL_RUN=1
fi

RUNS=3
DURATION=8
RILL=""
OUT=bench/RESULTS.md
SMOKE=0
while [ -z "${INTERNAL_RUN:-}" ] && [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --rill) RILL="$(absolute "$2")"; shift 2 ;;
    --out) OUT="$(absolute "$2")"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h | --help) sed -n '2,20p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

SERVERS="rill lite"
SIZES="1024 8192"
RATES="1 5 20 50 flat"
# Rates tried, in MiB/s, for the highest one sustained with ack p99 < 50 ms.
LADDER="1 2 5 10 15 20 30 40 50 60 80 100 150 200"
# Unary appends of one 1 KiB record by this many appenders, spread over
# each number of streams (`rill bench --streams`).
APPENDERS=32
SPREADS="1 10000"
# Live readers of one stream written at FANOUT_RATE records/s of 1 KiB
# (`rill bench --readers`).
FANOUTS="1 100 1000"
FANOUT_RATE=100
# Collections and consumers (Rill only: s2-lite has neither): writers of
# batches of upserts over KEYS ids, then paging `/updated`, then
# consuming with a consumer (`rill bench --collection`).
KEYS=100000
READ_PROBE_MIB=512
if [ "$SMOKE" = 1 ]; then
  SERVERS="rill" RUNS=1 DURATION=5 RATES="5 flat" LADDER="5" SPREADS="1 100" FANOUTS="1 10" KEYS=5000
  READ_PROBE_MIB=64
fi
# `s2 bench` has no "as fast as possible": a target well past the disk.
FLAT_OUT=1000
P99_LIMIT_MS=50

if [ -n "${INTERNAL_RUN:-}" ]; then
  S2="$COMPARE_S2" RILL="$COMPARE_RILL" DURATION="$COMPARE_DURATION"
else
  S2="${S2_CLI:-$(bash scripts/install-s2-cli.sh)}"
fi
if [ -z "$RILL" ]; then
  echo "== building rill (release)" >&2
  cargo build --release --locked -q
  RILL="${CARGO_TARGET_DIR:-target}/release/rill"
fi
export COMPARE_S2="$S2" COMPARE_RILL="$RILL" COMPARE_DURATION="$DURATION"

# Runs "$@" in a network namespace of its own with loopback up: as root
# with `unshare -n`, otherwise in a user namespace too.
isolated() {
  local flags=(--net)
  [ "$(id -u)" -eq 0 ] || flags+=(--map-root-user)
  unshare "${flags[@]}" bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' _ "$@"
}

# One server, one load: prints the load's figures on one line (latencies
# in ms; "-" where the output had none). LOAD is `s2bench SIZE RATE`
# ("write_mibps ack_p50 ack_p99 e2e_p50 e2e_p99 catchup_mibps"), `spread
# STREAMS` ("appends_per_sec ack_p50 ack_p99") or `fanout READERS`
# ("delivered_mibps e2e_p50 e2e_p99") or `collection` ("upserts_per_sec
# write_p50 write_p99 paged_per_sec consumed_per_sec").
run_once() {
  local server="$1" dir status
  shift
  dir="$(mktemp -d "$WORK/run.XXXXXX")"
  if [ "$server" = lite ]; then
    isolated bash "$SCRIPT" --internal-run lite "$dir" "$@" || status=$?
  else
    bash "$SCRIPT" --internal-run rill "$dir" "$@" || status=$?
  fi
  rm -rf "$dir"
  return "${status:-0}"
}

# Inside one run (maybe in a namespace): start, wait, load, stop.
internal_run() {
  local server="$1" dir="$2" load="$3" port pid status=0
  shift 3
  if [ "$server" = lite ]; then
    port=8080
    "$S2" lite --local-root "$dir/data" --port "$port" --no-dashboard >"$dir/server.log" 2>&1 &
  else
    port=$((20000 + RANDOM % 20000))
    "$RILL" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  fi
  pid=$!
  export S2_ACCOUNT_ENDPOINT="http://127.0.0.1:$port" S2_BASIN_ENDPOINT="http://127.0.0.1:$port"
  export S2_ACCESS_TOKEN=bench S2_NO_UPDATE_CHECK=1 NO_COLOR=1 HOME="$dir"
  export RILL_ENDPOINT="http://127.0.0.1:$port" RILL_BASIN=bench-basin
  # Creating the basin is the readiness check.
  local tries=0
  until "$S2" create-basin bench-basin >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "compare.sh: $server did not start; its log:" >&2
      cat "$dir/server.log" >&2
      kill "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  case "$load" in
    s2bench)
      local size="$1" target="$2"
      [ "$target" = flat ] && target="$FLAT_OUT"
      "$S2" bench bench-basin --record-size "$size" --target-mibps "$target" \
        --duration "${DURATION}s" --catchup-delay 1s >"$dir/load.out" 2>&1 || failed "s2 bench" || status=1
      ;;
    spread)
      "$RILL" bench --json --streams "$1" --appenders "$APPENDERS" --batch 1 \
        --record-size 1024 --duration "${DURATION}s" >"$dir/load.out" 2>&1 || failed "rill bench --streams" || status=1
      ;;
    fanout)
      "$RILL" bench --json --readers "$1" --rate "$FANOUT_RATE" \
        --record-size 1024 --duration "${DURATION}s" >"$dir/load.out" 2>&1 || failed "rill bench --readers" || status=1
      ;;
    collection)
      "$RILL" bench --json --collection --keys "$KEYS" --appenders "$APPENDERS" --batch 100 \
        --record-size 1024 --duration "${DURATION}s" >"$dir/load.out" 2>&1 || failed "rill bench --collection" || status=1
      ;;
  esac
  # Stopped, and killed if it takes more than 10 s to go.
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  case "$load" in
    s2bench) parse_bench "$dir/load.out" ;;
    spread)
      echo "$(json_number appends_per_sec <"$dir/load.out")" \
        "$(json_number p50 append_latency_ms <"$dir/load.out")" \
        "$(json_number p99 append_latency_ms <"$dir/load.out")"
      ;;
    fanout)
      echo "$(json_number delivered_mib_per_sec <"$dir/load.out")" \
        "$(json_number p50 end_to_end_latency_ms <"$dir/load.out")" \
        "$(json_number p99 end_to_end_latency_ms <"$dir/load.out")"
      ;;
    collection)
      echo "$(json_number upserts_per_sec <"$dir/load.out")" \
        "$(json_number p50 write_latency_ms <"$dir/load.out")" \
        "$(json_number p99 write_latency_ms <"$dir/load.out")" \
        "$(json_number paged_records_per_sec <"$dir/load.out")" \
        "$(json_number consumed_records_per_sec <"$dir/load.out")"
      ;;
  esac
  return "$status"
}

# Says that a load failed, with the end of its output; fails.
failed() {
  echo "compare.sh: $1 against $server failed:" >&2
  tail -20 "$dir/load.out" >&2
  return 1
}

# A number from the one-line JSON on stdin: field $1, inside object $2 if
# given ("-" if absent).
json_number() {
  local text
  text="$(cat)"
  if [ -n "${2:-}" ]; then
    text="$(printf '%s' "$text" | sed -n "s/.*\"$2\":{\([^}]*\)}.*/\1/p")"
  fi
  local value
  value="$(printf '%s' "$text" | sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p")"
  [ -n "$value" ] && awk -v v="$value" 'BEGIN { printf "%.2f", v }' || printf -- "-"
}

# The figures of one `s2 bench` output, latencies in ms.
parse_bench() {
  awk '
    function ms(v) {
      if (v ~ /ns$/) { sub(/ns$/, "", v); return v / 1000000 }
      if (v ~ /µs$|us$/) { sub(/µs$|us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 }
      return "-"
    }
    /^Write:/ { write = $2 }
    /^Catchup:/ { catchup = $2 }
    /^p50 / { ack50 = ms($3); e2e50 = ms($6) }
    /^p99 / { ack99 = ms($3); e2e99 = ms($6) }
    END {
      printf "%s %s %s %s %s %s\n", (write == "" ? "-" : write), (ack50 == "" ? "-" : ack50),
        (ack99 == "" ? "-" : ack99), (e2e50 == "" ? "-" : e2e50), (e2e99 == "" ? "-" : e2e99),
        (catchup == "" ? "-" : catchup)
    }' "$1"
}

# The median of the numbers given ("-" when none are).
median() {
  printf '%s\n' "$@" | grep -v -e '^-$' -e '^$' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "-"; exit }
      if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

if [ -n "${INTERNAL_RUN:-}" ]; then
  shift
  internal_run "$@"
  exit
fi
# Runs get their data directories here: on the repository's disk (where
# users would keep data), one directory per invocation.
mkdir -p target
WORK="$(mktemp -d "$(pwd)/target/bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
if [[ " $SERVERS " == *" lite "* ]] && ! isolated true; then
  echo "compare.sh: cannot make a network namespace for s2-lite (unshare -n, as root or with user namespaces)" >&2
  exit 1
fi
FAILED_RUNS=0

# --- the machine -----------------------------------------------------------
CORES="$(nproc)"
MEMORY="$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
FSYNCS="$(dd if=/dev/zero of="$WORK/fsync-probe" bs=4k count=300 oflag=dsync 2>&1 |
  awk '/copied/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^s,?$/) { printf "%.0f", 300 / $i; exit } }')"
rm -f "$WORK/fsync-probe"
# The disk's buffered read rate: a file written, its pages dropped from
# the page cache (`iflag=nocache`), read back with readahead.
dd if=/dev/zero of="$WORK/read-probe" bs=1M count="$READ_PROBE_MIB" conv=fdatasync status=none
dd if="$WORK/read-probe" iflag=nocache count=0 status=none
READS="$(dd if="$WORK/read-probe" of=/dev/null bs=1M 2>&1 |
  awk -v mib="$READ_PROBE_MIB" '/copied/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^s,?$/) { printf "%.0f", mib / $i; exit } }')"
rm -f "$WORK/read-probe"
RILL_VERSION="$("$RILL" --version)"
S2_VERSION="$("$S2" --version | head -1)"
echo "== $CORES cores, $MEMORY, ~$FSYNCS fsyncs/s (4 KiB, O_DSYNC), reads ~$READS MiB/s; $RILL_VERSION; $S2_VERSION" >&2

declare -A FIGURES # "server key" -> the lines of its runs
# Runs one load $RUNS times on each server (or those in $ONLY), alternating,
# under "server key".
measure() {
  local key="$1" figures
  shift
  for run in $(seq "$RUNS"); do
    for server in ${ONLY:-$SERVERS}; do
      echo "== $server: $key, run $run of $RUNS" >&2
      figures="$(run_once "$server" "$@")" || FAILED_RUNS=$((FAILED_RUNS + 1))
      FIGURES["$server $key"]+="$figures"$'\n'
    done
  done
}
for size in $SIZES; do
  for rate in $RATES; do
    measure "$size $rate" s2bench "$size" "$rate"
  done
done
for count in $SPREADS; do
  measure "spread $count" spread "$count"
done
for count in $FANOUTS; do
  measure "fanout $count" fanout "$count"
done
ONLY=rill measure "collection 1" collection

# The highest rate on the ladder whose run kept ack p99 under the limit and
# wrote at least 90 % of the target (one run per step).
declare -A SUSTAINED
for server in $SERVERS; do
  best="-"
  for rate in $LADDER; do
    echo "== $server: can it sustain $rate MiB/s (1 KiB records)?" >&2
    figures="$(run_once "$server" s2bench 1024 "$rate")" || FAILED_RUNS=$((FAILED_RUNS + 1))
    read -r write _ ack99 _ <<<"$figures"
    if [ "$write" = - ] || [ "$ack99" = - ]; then break; fi
    if awk -v w="$write" -v r="$rate" -v p="$ack99" -v l="$P99_LIMIT_MS" \
      'BEGIN { exit !(w >= 0.9 * r && p < l) }'; then
      best="$rate"
    else
      break
    fi
  done
  SUSTAINED[$server]="$best"
done

# --- the table ---------------------------------------------------------------
median_of() { # the median of field $4 of the runs of "$1 $2 $3"
  local values
  values="$(printf '%s' "${FIGURES["$1 $2 $3"]:-}" | awk -v f="$4" 'NF { print $f }')"
  # shellcheck disable=SC2086
  median $values
}
# "Rill / s2-lite (Rill ÷ s2-lite)" for one figure.
cell() {
  local rill lite
  rill="$(median_of rill "$1" "$2" "$3")"
  lite="$(median_of lite "$1" "$2" "$3")"
  awk -v a="$rill" -v b="$lite" 'BEGIN {
    if (b == "-") { printf "%s", a; exit }
    if (a == "-" || b + 0 == 0) { printf "%s / %s", a, b; exit }
    printf "%s / %s (%.2f)", a, b, a / b
  }'
}
{
  echo "# Rill and s2-lite, side by side"
  echo
  echo "Measured by \`bench/compare.sh\` on $(date -u +%Y-%m-%d): $CORES cores, $MEMORY, the disk ~$FSYNCS fsyncs/s"
  echo "(4 KiB writes with O_DSYNC) and ~$READS MiB/s of buffered reads ($READ_PROBE_MIB MiB not in the page cache). $RILL_VERSION; s2-lite from $S2_VERSION, \`s2 lite --local-root\`"
  echo "(which fsyncs its writes). The load is the official \`s2 bench\` on the same machine (and \`rill bench\`,"
  echo "a client of the S2 API, for many streams and fan-out). Each cell is"
  echo "**Rill / s2-lite (Rill ÷ s2-lite)**, the median of $RUNS alternating runs of ${DURATION} s;"
  echo "latencies in ms, throughput in MiB/s of record bytes (higher is better; for latencies, lower)."
  if [ "$SMOKE" = 1 ]; then
    echo
    echo "**Smoke run**: Rill only, one short run per workload; these figures mean nothing."
  fi
  for size in $SIZES; do
    echo
    echo "## $((size / 1024)) KiB records"
    echo
    echo "| target MiB/s | written MiB/s | ack p50 | ack p99 | end-to-end p50 | end-to-end p99 | catch-up read MiB/s |"
    echo "|---|---|---|---|---|---|---|"
    for rate in $RATES; do
      label="$rate"
      [ "$rate" = flat ] && label="flat out"
      printf '| %s |' "$label"
      for field in 1 2 3 4 5 6; do
        printf ' %s |' "$(cell "$size" "$rate" "$field")"
      done
      echo
    done
  done
  echo
  echo "## $APPENDERS appenders, one 1 KiB record per unary append, spread over many streams"
  echo
  echo "| streams | appends/s | ack p50 | ack p99 |"
  echo "|---|---|---|---|"
  for count in $SPREADS; do
    echo "| $count | $(cell spread "$count" 1) | $(cell spread "$count" 2) | $(cell spread "$count" 3) |"
  done
  echo
  echo "## Fan-out: live readers of one stream written at $FANOUT_RATE records/s of 1 KiB"
  echo
  echo "| readers | delivered MiB/s | end-to-end p50 | end-to-end p99 |"
  echo "|---|---|---|---|"
  for count in $FANOUTS; do
    echo "| $count | $(cell fanout "$count" 1) | $(cell fanout "$count" 2) | $(cell fanout "$count" 3) |"
  done
  echo
  echo "## Collections and consumers (Rill only: s2-lite has neither)"
  echo
  echo "$APPENDERS writers upsert batches of 100 records (1 KiB of data each) over $KEYS ids for ${DURATION} s; then one"
  echo "reader pages through \`/updated\` from the start (1,000 per page), checking each id comes once at its latest"
  echo "version; then $APPENDERS workers receive (up to 100) and ack from a records-feed consumer until every id was acked."
  echo
  echo "| upserts/s | write p50 | write p99 | \`/updated\` records/s | consumed (received + acked) records/s |"
  echo "|---|---|---|---|---|"
  printf '|'
  for field in 1 2 3 4 5; do
    printf ' %s |' "$(cell collection 1 "$field")"
  done
  echo
  echo
  echo "Highest rate on the ladder ($LADDER MiB/s; one run per step, 1 KiB records) written at"
  echo "≥ 90 % of its target with ack p99 under ${P99_LIMIT_MS} ms: Rill **${SUSTAINED[rill]} MiB/s**, s2-lite **${SUSTAINED[lite]:--} MiB/s**."
  if [ "$FAILED_RUNS" -gt 0 ]; then
    echo
    echo "**$FAILED_RUNS runs failed** (their figures are left out; see the messages of the run)."
  fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
if [ "$FAILED_RUNS" -gt 0 ]; then
  echo "compare.sh: $FAILED_RUNS runs failed" >&2
  exit 1
fi
