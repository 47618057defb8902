#!/usr/bin/env bash
# bench/redis/run.sh: skysocket.redis against redis-benchmark (the C ceiling), same
# redis-server, same run. GET and SET, 50 concurrent clients, unpipelined and pipelined
# 16 deep; then the client's user-space instructions per request under callgrind.
#
#   bench/redis/run.sh [--rounds R] [--requests N] [--no-callgrind] [--callgrind-only]
#                      [--ops "get set"] [--lua lua5.4]
#
# redis-server runs on CPU 0 (taskset), the client being measured on CPU 1. Every round
# runs each case once for each client, interleaved; the table shows medians.
#   redis-benchmark -c 50 -P D           50 connections, D commands in flight on each
#   skysocket shared                     50 coroutines on ONE redis.new() connection
#                                        (DEPTH>1: each sends db:pipeline of D commands)
#   skysocket conns                      50 coroutines, one connection each
# Callgrind: the client runs a fixed number of requests twice (SMALL, LARGE);
# (Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL) is the per-request cost without start-up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=3
REQUESTS=400000
CALLGRIND=1
THROUGHPUT=1
CG_OPS=get
LUA=lua5.4
FEAT=lua54
SMALL=20000
LARGE=60000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --no-callgrind) CALLGRIND=0; shift ;;
    --callgrind-only) THROUGHPUT=0; shift ;;
    --ops) CG_OPS=$2; shift 2 ;;
    --lua) LUA=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
case "$LUA" in lua5.4) FEAT=lua54 ;; lua5.3) FEAT=lua53 ;; lua5.1) FEAT=lua51 ;; luajit) FEAT=luajit ;; esac
SO="$REPO/target/lua-$FEAT/skysocket.so"
if [ ! -e "$SO" ]; then
  (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target/m-$FEAT" cargo build --release --quiet \
    --no-default-features --features "$FEAT,module" &&
    mkdir -p "$REPO/target/lua-$FEAT" && cp "$REPO/target/m-$FEAT/release/libskysocket.so" "$SO")
fi
export LUA_CPATH="$REPO/target/lua-$FEAT/?.so;;"
export LUA_PATH="$REPO/lua/?.lua;$REPO/lua/?/init.lua;;"

DIR=$(mktemp -d /tmp/skysocket-redis-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
  [ -f "$DIR/redis.pid" ] && kill -KILL "$(cat "$DIR/redis.pid")" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
(taskset -c 0 timeout -s KILL 3600 redis-server --port "$PORT" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" &)
for _ in $(seq 100); do
  redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis-cli -p "$PORT" ping | grep -q PONG || { echo "redis-server did not start" >&2; exit 1; }
echo "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT (CPU 0); clients on CPU 1; $LUA" >&2

RES="$DIR/results.txt"
: >"$RES"
[ "$THROUGHPUT" = 1 ] || ROUNDS=0
for r in $(seq "$ROUNDS"); do
  for op in get set; do
    for depth in 1 16; do
      rb=$(taskset -c 1 redis-benchmark -h 127.0.0.1 -p "$PORT" -c 50 -n "$REQUESTS" -P "$depth" \
        -t "$op" --csv 2>/dev/null | awk -F'"' 'NR == 2 { print $4 }')
      echo "$op $depth redis-benchmark $rb" >>"$RES"
      for mode in shared conns; do
        rps=$(taskset -c 1 timeout 600 "$LUA" "$HERE/client.lua" "$PORT" "$op" 50 "$depth" "$REQUESTS" "$mode" |
          sed -n 's/.* rps=\([0-9]*\).*/\1/p')
        echo "$op $depth $mode $rps" >>"$RES"
      done
      echo "round $r $op depth $depth: $(grep "^$op $depth " "$RES" | tail -3 | awk '{printf "%s=%s ", $3, $4}')" >&2
    done
  done
done

if [ "$THROUGHPUT" = 1 ]; then
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo
echo "Requests/s, medians of $ROUNDS rounds ($REQUESTS requests per case), 50 clients:"
echo
echo "| command | depth | redis-benchmark | skysocket shared (1 conn) | ratio | skysocket conns (50 conns) | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for op in get set; do
  for depth in 1 16; do
    rb=$(awk -v o="$op" -v d="$depth" '$1 == o && $2 == d && $3 == "redis-benchmark" { print $4 }' "$RES" | median)
    sh=$(awk -v o="$op" -v d="$depth" '$1 == o && $2 == d && $3 == "shared" { print $4 }' "$RES" | median)
    cn=$(awk -v o="$op" -v d="$depth" '$1 == o && $2 == d && $3 == "conns" { print $4 }' "$RES" | median)
    awk -v o="$op" -v d="$depth" -v rb="$rb" -v sh="$sh" -v cn="$cn" 'BEGIN {
      printf "| %s | %d | %.0f | %.0f | %.2f | %.0f | %.2f |\n", toupper(o), d, rb, sh, sh / rb, cn, cn / rb }'
  done
done
fi

if [ "$CALLGRIND" = 1 ]; then
  echo
  echo "Client user-space instructions per request (callgrind, $LUA, (Ir($LARGE) - Ir($SMALL)) / $((LARGE - SMALL))):"
  echo
  echo "| command | client | depth | Ir per request |"
  echo "|---|---|---:|---:|"
  for op in $CG_OPS; do
    for mode in shared conns; do
      for depth in 1 16; do
        ir=()
        for n in $SMALL $LARGE; do
          taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$op.$mode.$depth.$n" \
            "$LUA" "$HERE/client.lua" "$PORT" "$op" 50 "$depth" "$n" "$mode" >/dev/null 2>&1
          ir+=("$(grep -E '^(summary|totals):' "$DIR/cg.$op.$mode.$depth.$n" | tail -1 | awk '{print $2}')")
        done
        echo "| $(echo "$op" | tr a-z A-Z) | skysocket $mode | $depth | $(( (ir[1] - ir[0]) / (LARGE - SMALL) )) |"
      done
    done
  done
fi
