#!/usr/bin/env bash
# spin.sh: how pingpong throughput at 1,000 connections falls as the server's user
# time per message grows. The callback echo (bench/servers/echo_spin.lua) does N empty
# loop iterations per message on top of its own work; each N runs alternately with the
# C epoll server (same run.py invocation), REPEAT times. With Ir per iteration (printed
# first, from callgrind) this gives the instruction budget per message a server can
# spend and stay within a ratio of C: what the coroutine path's floor is held against
# in BENCHMARKS.md.
#   bench/floor/spin.sh [--lua lua5.4] [--module-dir DIR] [--repeat 2] [--duration 4] [N...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LUA=lua5.4 MODDIR="$REPO/target/lua" REPEAT=2 DURATION=4
while [ $# -gt 0 ]; do
    case "$1" in
        --lua) LUA=$2; shift 2 ;;
        --module-dir) MODDIR=$(cd "$2" && pwd); shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        *) break ;;
    esac
done
SPINS=("${@:-0 100 200 400 800}")
# shellcheck disable=SC2206
SPINS=(${SPINS[@]})

# Instructions per empty loop iteration on this interpreter.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 1000000 3000000; do
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$n" "$LUA" -e "for _ = 1, $n do end" 2>/dev/null
done
total() { grep -E "^(summary|totals):" "$1" | head -1 | awk '{print $2}'; }
per_iter=$(( ($(total "$tmp/cg.3000000") - $(total "$tmp/cg.1000000")) / 2000000 ))
echo "$LUA: $per_iter Ir per empty loop iteration"
echo
echo "| spin N | extra Ir/msg | msg/s | C msg/s (same run) | ratio to C | srv user µs/msg | srv CPU µs/msg | loadgen CPU % |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in "${SPINS[@]}"; do
    for _ in $(seq "$REPEAT"); do
        out=$(python3 "$REPO/bench/run.py" --lua "$LUA" --servers sky-spin,c --cases pp1000 --rounds 1 \
            --duration "$DURATION" --module-dir "$MODDIR" --no-build --sky-env "SKYSOCKET_SPIN=$n" 2>/dev/null)
        spin_row=$(grep "callback + spin" <<<"$out")
        c_row=$(grep "C epoll" <<<"$out")
        python3 - "$n" "$per_iter" "$spin_row" "$c_row" <<'PY'
import sys
n, per, s, c = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split("|"), sys.argv[4].split("|")
num = lambda cell: float(cell.split()[0].replace(",", ""))
rate, crate = num(s[3]), num(c[3])
print(f"| {n} | {n * per:,} | {rate:,.0f} | {crate:,.0f} | {rate / crate:.2f} | {s[7].strip()} | {s[6].strip()} | {s[8].strip()} |")
PY
    done
done
