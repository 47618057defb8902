#!/usr/bin/env bash
# cputime.sh: server CPU per echoed message, split into system and user time, for a
# long fixed pingpong workload (better resolution than run.py's 5 s rounds).
#
# For each round and each server (interleaved): start the server on CPU 0, warm up
# for 1 s, read utime/stime from /proc/PID/stat, run `loadgen pingpong --messages N`
# on CPU 1, read them again. Prints one Markdown row per server with the medians.
#
# usage: bench/cputime.sh [--servers "c sky-cb luv"] [--conns 64] [--messages 200000]
#                         [--rounds 3]
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH")
SERVERS="c sky-cb luv"
CONNS=64
MESSAGES=200000
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --servers) SERVERS="$2"; shift 2 ;;
        --conns) CONNS="$2"; shift 2 ;;
        --messages) MESSAGES="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "cputime.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
LOADGEN="$BENCH/loadgen/target/release/loadgen"
cargo build --release --quiet --manifest-path "$BENCH/loadgen/Cargo.toml"
mkdir -p "$BENCH/build"
gcc -O2 -Wall -o "$BENCH/build/echo_epoll" "$BENCH/servers/echo_epoll.c"
export LUA_CPATH="$REPO/target/lua/?.so;;"
export LUA_PATH="$REPO/lua/?.lua;$REPO/lua/?/init.lua;;"
TICK=$(getconf CLK_TCK)
PORT=$((25000 + ($$ % 2000) * 2))

cmd_of() {
    case "$1" in
        c) echo "$BENCH/build/echo_epoll" ;;
        sky-cb) echo "lua5.4 $REPO/examples/echo.lua" ;;
        sky-co) echo "lua5.4 $REPO/examples/echo_co.lua" ;;
        luv) echo "lua5.4 $BENCH/servers/echo_luv.lua" ;;
        cqueues) echo "lua5.4 $BENCH/servers/echo_cqueues.lua" ;;
        *) echo "cputime.sh: unknown server $1" >&2; exit 1 ;;
    esac
}

# One measurement: prints "msgs_per_s sys_us_per_msg user_us_per_msg".
measure() {
    local port=$((PORT++))
    (cd "$REPO" && exec taskset -c 0 $(cmd_of "$1") "$port") >/dev/null 2>&1 &
    local pid=$!
    local i
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    taskset -c 1 "$LOADGEN" pingpong --port "$port" --conns "$CONNS" --duration 1 >/dev/null
    local a b rate
    a=$(awk '{print $14, $15}' "/proc/$pid/stat")
    rate=$(taskset -c 1 "$LOADGEN" pingpong --port "$port" --conns "$CONNS" \
        --messages "$MESSAGES" --duration 120 | grep -o 'msgs_per_s=[0-9]*' | cut -d= -f2)
    b=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    awk -v a="$a" -v b="$b" -v n="$MESSAGES" -v t="$TICK" -v r="$rate" 'BEGIN {
        split(a, x, " "); split(b, y, " ");
        printf "%s %.2f %.2f\n", r, (y[2] - x[2]) / t / n * 1e6, (y[1] - x[1]) / t / n * 1e6 }'
}

declare -A RES
for r in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        echo "round $r/$ROUNDS: $s" >&2
        RES[$s]+="$(measure "$s")"$'\n'
    done
done
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "| server | msg/s | system µs/msg | user µs/msg | total µs/msg |"
echo "|---|---:|---:|---:|---:|"
for s in $SERVERS; do
    rows=${RES[$s]}
    m=$(echo -n "$rows" | awk '{print $1}' | median)
    sy=$(echo -n "$rows" | awk '{print $2}' | median)
    us=$(echo -n "$rows" | awk '{print $3}' | median)
    to=$(echo -n "$rows" | awk '{print $2 + $3}' | median)
    echo "| $s | $m | $sy | $us | $to |"
done
echo
echo "$CONNS conns x 64 B, $MESSAGES round trips per round, medians of $ROUNDS rounds (interleaved)."
