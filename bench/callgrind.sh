#!/usr/bin/env bash
# callgrind.sh: user-space instructions per echoed message for each server.
#
# For every server it runs the server twice under
#   taskset -c 0 valgrind --tool=callgrind
# and drives it with a fixed pingpong workload (64 conns x 64 B) of SMALL and
# then LARGE round trips (loadgen pingpong --messages N, pinned to CPU 1).
# Start-up, connection set-up and shutdown cost the same in both runs, so
#   (Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL)
# is the instruction count per echoed message (one 64 B read + write), in
# user space only (callgrind does not see the kernel).
#
# usage: bench/callgrind.sh [--repo DIR] [--servers "luv c sky-cb sky-co"]
#                           [--small N] [--large N] [--conns N] [--out DIR]
#                           [--lua INTERPRETER]   (skysocket's servers; default lua5.4)
#                           [--module-dir DIR]    (where skysocket.so is; default REPO/target/lua)
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH")
SERVERS="sky-cb sky-co luv c"
SMALL=20000
LARGE=60000
CONNS=64
LUA=lua5.4
MODDIR=
OUT="$BENCH/results/callgrind-$(date +%Y%m%d-%H%M%S)"
# A base port per invocation, so two runs at once (or a leftover server) do not meet.
PORT=$((20000 + ($$ % 4000) * 2))

while [ $# -gt 0 ]; do
    case "$1" in
        --repo) REPO=$(cd "$2" && pwd); shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --small) SMALL="$2"; shift 2 ;;
        --large) LARGE="$2"; shift 2 ;;
        --conns) CONNS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --lua) LUA="$2"; shift 2 ;;
        --module-dir) MODDIR=$(cd "$2" && pwd); shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "callgrind.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
if [ "$LARGE" -le "$SMALL" ]; then
    echo "callgrind.sh: --large must exceed --small" >&2
    exit 1
fi

LOADGEN="$BENCH/loadgen/target/release/loadgen"
mkdir -p "$OUT" "$BENCH/build"
cargo build --release --quiet --manifest-path "$BENCH/loadgen/Cargo.toml"
gcc -O2 -Wall -o "$BENCH/build/echo_epoll" "$BENCH/servers/echo_epoll.c"

# server_cmd NAME -> sets CMD (array), DIR and FILE; returns 1 if unknown.
server_cmd() {
    case "$1" in
        sky-cb) FILE="$REPO/examples/echo.lua"; DIR="$REPO"; CMD=("$LUA" examples/echo.lua) ;;
        sky-co) FILE="$REPO/examples/echo_co.lua"; DIR="$REPO"; CMD=("$LUA" examples/echo_co.lua) ;;
        luv) FILE="$BENCH/servers/echo_luv.lua"; DIR="$BENCH"; CMD=(lua5.4 "$FILE") ;;
        cqueues) FILE="$BENCH/servers/echo_cqueues.lua"; DIR="$BENCH"; CMD=(lua5.4 "$FILE") ;;
        c) FILE="$BENCH/build/echo_epoll"; DIR="$BENCH"; CMD=("$FILE") ;;
        *) return 1 ;;
    esac
}

# wait_port PORT PID SECONDS
wait_port() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# measure NAME N PORT -> prints the Ir total of one callgrind run
measure() {
    local name=$1 n=$2 port=$3
    local cg="$OUT/callgrind.$name.$n.out" log="$OUT/$name.$n.log"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "callgrind.sh: port $port is already taken by another process" >&2
        return 1
    fi
    (
        cd "$DIR"
        export LUA_CPATH="${MODDIR:-$REPO/target/lua}/?.so;;"
        export LUA_PATH="$REPO/lua/?.lua;$REPO/lua/?/init.lua;;"
        # The examples' idle timeouts off, as run.py does (SKYSOCKET_IDLE_MS=60000 in
        # the caller's environment measures the timed-read path instead).
        export SKYSOCKET_IDLE_MS="${SKYSOCKET_IDLE_MS:-0}"
        exec taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$cg" \
            "${CMD[@]}" "$port"
    ) >"$log" 2>&1 &
    local pid=$!
    if ! wait_port "$port" "$pid" 180; then
        echo "callgrind.sh: $name did not accept on port $port (see $log)" >&2
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    local rc=0
    taskset -c 1 timeout 1800 "$LOADGEN" pingpong --port "$port" --conns "$CONNS" --size 64 \
        --messages "$n" --duration 1500 --connect-timeout 300 >>"$log" 2>&1 || rc=$?
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 120))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "callgrind.sh: loadgen failed (exit $rc) for $name, $n messages (see $log)" >&2
        return 1
    fi
    local total
    total=$(grep -E '^(summary|totals):' "$cg" 2>/dev/null | tail -1 | awk '{print $2}')
    if [ -z "$total" ]; then
        echo "callgrind.sh: no totals in $cg" >&2
        return 1
    fi
    echo "$total"
}

ROWS=()
for s in $SERVERS; do
    if ! server_cmd "$s"; then
        echo "callgrind.sh: unknown server $s" >&2
        exit 1
    fi
    if [ ! -e "$FILE" ]; then
        echo "SKIP $s: $FILE does not exist yet" >&2
        ROWS+=("| $s | pending ($FILE not found) | | |")
        continue
    fi
    echo "== $s: $SMALL and $LARGE round trips under callgrind" >&2
    PORT=$((PORT + 2))
    if a=$(measure "$s" "$SMALL" "$PORT") && b=$(measure "$s" "$LARGE" "$((PORT + 1))"); then
        per=$(awk -v a="$a" -v b="$b" -v m="$SMALL" -v n="$LARGE" \
            'BEGIN { printf "%.0f", (b - a) / (n - m) }')
        echo "   Ir($SMALL)=$a Ir($LARGE)=$b -> $per instructions/message" >&2
        echo "CALLGRIND server=$s conns=$CONNS small=$SMALL large=$LARGE ir_small=$a ir_large=$b ir_per_msg=$per"
        ROWS+=("| $s | $per | $a | $b |")
    else
        ROWS+=("| $s | FAILED (see $OUT) | | |")
    fi
done

echo
echo "User-space instructions (callgrind Ir) per echoed 64 B message, $CONNS conns,"
echo "difference of $LARGE and $SMALL round trips:"
echo
echo "| server | Ir per message | Ir total ($SMALL) | Ir total ($LARGE) |"
echo "|---|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "$r"; done
