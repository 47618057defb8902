#!/usr/bin/env bash
# bench/http/callgrind.sh: per-request cost of the HTTP hello-world servers, in
# user-space instructions (callgrind Ir) and in system calls (strace -c -f).
#
# Each server (bench/http/hello_skysocket.lua on the chosen interpreters, and nginx
# with one process, configured as in bench/http/run.sh) is run twice under the tool,
# pinned to CPU 0, and driven by bench/http/client.py (CPU 1): CONNS keep-alive
# connections, one GET at a time on each (as wrk sends it), SMALL and then LARGE
# requests in all. Start-up, connection set-up and shutdown cost the same in both
# runs, so (X(LARGE) - X(SMALL)) / (LARGE - SMALL) is the cost per request.
#
# usage: bench/http/callgrind.sh [--servers "lua54 luajit nginx"] [--tool callgrind|strace|both]
#                                [--small N] [--large N] [--conns N] [--out DIR]
#   lua54, lua53, lua51, luajit: skysocket with target/lua-<feat>/skysocket.so
#   (build it first: see bench/README.md); nginx: /usr/sbin/nginx (Debian nginx-light).
# Prints one "CALLGRIND server=… ir_per_req=…" / "STRACE server=… <syscall>=<per req> …"
# line per measurement and a Markdown table at the end.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")/.." && pwd)
REPO=$(dirname "$BENCH")
SERVERS="lua54 luajit nginx"
TOOL=both
SMALL=2000
LARGE=12000
CONNS=100
OUT="$BENCH/results/http-callgrind-$(date +%Y%m%d-%H%M%S)"

while [ $# -gt 0 ]; do
    case "$1" in
        --servers) SERVERS="$2"; shift 2 ;;
        --tool) TOOL="$2"; shift 2 ;;
        --small) SMALL="$2"; shift 2 ;;
        --large) LARGE="$2"; shift 2 ;;
        --conns) CONNS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "callgrind.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
if [ "$LARGE" -le "$SMALL" ]; then
    echo "callgrind.sh: --large must exceed --small" >&2
    exit 1
fi
case "$TOOL" in callgrind) TOOLS=callgrind ;; strace) TOOLS=strace ;; both) TOOLS="callgrind strace" ;;
    *) echo "callgrind.sh: --tool callgrind|strace|both" >&2; exit 1 ;; esac
mkdir -p "$OUT"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# server_cmd NAME PORT -> sets CMD (array) and SKY_CPATH; returns 1 if unknown.
SKY_CPATH=
server_cmd() {
    local feat interp
    case "$1" in
        lua54) feat=lua54; interp=lua5.4 ;;
        lua53) feat=lua53; interp=lua5.3 ;;
        lua51) feat=lua51; interp=lua5.1 ;;
        luajit) feat=luajit; interp=luajit ;;
        nginx)
            mkdir -p "$OUT/nginx-$2/logs"
            cat >"$OUT/nginx-$2/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
error_log $OUT/nginx-$2/logs/error.log;
pid $OUT/nginx-$2/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
            CMD=(nginx -p "$OUT/nginx-$2" -c "$OUT/nginx-$2/nginx.conf")
            return 0 ;;
        *) return 1 ;;
    esac
    if [ ! -e "$REPO/target/lua-$feat/skysocket.so" ]; then
        echo "callgrind.sh: $REPO/target/lua-$feat/skysocket.so missing (build it first)" >&2
        return 1
    fi
    SKY_CPATH="$REPO/target/lua-$feat/?.so;;"
    CMD=("$interp" "$REPO/bench/http/hello_skysocket.lua" "$2")
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

# measure TOOL NAME N -> prints the Ir total (callgrind) or "name=count ..." (strace)
measure() {
    local tool=$1 name=$2 n=$3 port
    port=$(free_port)
    server_cmd "$name" "$port" || return 1
    local res="$OUT/$tool.$name.$n.out" log="$OUT/$tool.$name.$n.log"
    local wrap
    if [ "$tool" = callgrind ]; then
        wrap=(valgrind --tool=callgrind "--callgrind-out-file=$res")
    else
        wrap=(strace -c -f -o "$res")
    fi
    LUA_CPATH="$SKY_CPATH" LUA_PATH="$REPO/lua/?.lua;;" \
        taskset -c 0 "${wrap[@]}" "${CMD[@]}" >"$log" 2>&1 &
    local pid=$!
    if ! wait_port "$port" "$pid" 180; then
        echo "callgrind.sh: $name did not accept on port $port (see $log)" >&2
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    local rc=0
    taskset -c 1 timeout 1800 python3 "$BENCH/http/client.py" "$port" "$n" "$CONNS" 1700 \
        >>"$log" 2>&1 || rc=$?
    # strace: signal its tracee (strace then writes its table and exits)
    local target=$pid
    if [ "$tool" = strace ]; then target=$(pgrep -P "$pid" | head -1); target=${target:-$pid}; fi
    kill -TERM "$target" 2>/dev/null || true
    local end=$((SECONDS + 120))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "callgrind.sh: client failed (exit $rc) for $name, $n requests (see $log)" >&2
        return 1
    fi
    if [ "$tool" = callgrind ]; then
        local total
        total=$(grep -E '^(summary|totals):' "$res" 2>/dev/null | tail -1 | awk '{print $2}')
        [ -n "$total" ] || { echo "callgrind.sh: no totals in $res" >&2; return 1; }
        echo "$total"
    else
        # strace -c table: "% time seconds usecs/call calls [errors] syscall"
        awk '$1 ~ /^[0-9.]+$/ && NF >= 5 { print $NF "=" $4 }' "$res" | tr '\n' ' '
    fi
}

ROWS=()
SROWS=()
for s in $SERVERS; do
    server_cmd "$s" 0 >/dev/null || { echo "callgrind.sh: skipping $s" >&2; continue; }
    for t in $TOOLS; do
        echo "== $s: $SMALL and $LARGE requests under $t" >&2
        if ! a=$(measure "$t" "$s" "$SMALL") || ! b=$(measure "$t" "$s" "$LARGE"); then
            ROWS+=("| $s | $t FAILED (see $OUT) | | |")
            continue
        fi
        if [ "$t" = callgrind ]; then
            per=$(awk -v a="$a" -v b="$b" -v m="$SMALL" -v n="$LARGE" \
                'BEGIN { printf "%.0f", (b - a) / (n - m) }')
            echo "CALLGRIND server=$s conns=$CONNS small=$SMALL large=$LARGE ir_small=$a ir_large=$b ir_per_req=$per"
            ROWS+=("| $s | $per | $a | $b |")
        else
            line=$(awk -v a="$a" -v b="$b" -v m="$SMALL" -v n="$LARGE" 'BEGIN {
                na = split(a, xa, " "); nb = split(b, xb, " ")
                for (i = 1; i <= na; i++) { split(xa[i], kv, "="); ca[kv[1]] = kv[2] }
                tot = 0
                for (i = 1; i <= nb; i++) {
                    split(xb[i], kv, "="); if (kv[1] == "total") continue
                    d = (kv[2] - ca[kv[1]]) / (n - m)
                    if (d >= 0.005) { printf "%s=%.2f ", kv[1], d; tot += d }
                }
                printf "total=%.2f", tot }')
            echo "STRACE server=$s conns=$CONNS small=$SMALL large=$LARGE $line"
            SROWS+=("| $s | $line |")
        fi
    done
done

echo
if [ ${#ROWS[@]} -gt 0 ]; then
    echo "User-space instructions (callgrind Ir) per request, $CONNS keep-alive conns,"
    echo "difference of $LARGE and $SMALL requests:"
    echo
    echo "| server | Ir per request | Ir total ($SMALL) | Ir total ($LARGE) |"
    echo "|---|---:|---:|---:|"
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
fi
if [ ${#SROWS[@]} -gt 0 ]; then
    echo "System calls per request (strace -c -f), difference of $LARGE and $SMALL requests:"
    echo
    echo "| server | calls per request |"
    echo "|---|---|"
    for r in "${SROWS[@]}"; do echo "$r"; done
fi
