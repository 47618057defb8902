#!/usr/bin/env bash
# million.sh: the measurements behind BENCHMARKS.md's projection for 1,048,576 held
# connections in one process (this machine caps a process at 20,000 descriptors):
#   1. RSS of the callback and coroutine echo servers configured for 1,048,576 sockets,
#      with no connection (the slot table and maps as configured);
#   2. per held connection at N (default 18,000) idle connections: server RSS growth
#      (loadgen idle), and kernel memory growth (Slab + kernel stacks + page tables
#      from /proc/meminfo, and TCP pages from /proc/net/sockstat) for both ends of
#      every loopback connection, halved for the server's end.
# usage: bench/million.sh [N]
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH")
N=${1:-18000}
LOADGEN="$BENCH/loadgen/target/release/loadgen"
PORT=$((26000 + ($$ % 2000) * 2))
export LUA_CPATH="$REPO/target/lua/?.so;;" LUA_PATH="$REPO/lua/?.lua;$REPO/lua/?/init.lua;;"
export SKYSOCKET_IDLE_MS=0 SKYSOCKET_MAX_SOCKETS=1048576
kmem() { awk '/^(Slab|KernelStack|PageTables):/ {s += $2} END {print s}' /proc/meminfo; }
tcppages() { awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for ex in echo.lua echo_co.lua; do
    PORT=$((PORT + 1))
    (cd "$REPO" && exec taskset -c 0 lua5.4 "examples/$ex" "$PORT") >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
    sleep 0.5
    r0=$(rss "$pid"); k0=$(kmem); t0=$(tcppages)
    taskset -c 1 "$LOADGEN" idle --port "$PORT" --conns "$N" --server-pid "$pid" --settle 4 \
        >"/tmp/million.$$.log" 2>&1 &
    lg=$!
    sleep 3
    # sample while held: wait until loadgen has opened them all (its log says so at the end)
    best_k=0 best_t=0 best_r=0
    while kill -0 "$lg" 2>/dev/null; do
        k=$(kmem); t=$(tcppages); r=$(rss "$pid")
        [ "$k" -gt "$best_k" ] && best_k=$k
        [ "$t" -gt "$best_t" ] && best_t=$t
        [ "$r" -gt "$best_r" ] && best_r=$r
        sleep 0.5
    done
    wait "$lg" || true
    per=$(grep -o 'bytes_per_conn=[0-9.]*' "/tmp/million.$$.log" | cut -d= -f2)
    echo "$ex: max_sockets=1048576 RSS at start ${r0} KiB; peak RSS with $N conns ${best_r} KiB;" \
         "loadgen bytes_per_conn=${per};" \
         "kernel (Slab+KernelStack+PageTables) +$(( (best_k - k0) )) KiB for $N connections (both ends)" \
         "= $(( (best_k - k0) * 1024 / N / 2 )) B per end; TCP buffer pages +$(( best_t - t0 ))"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
rm -f "/tmp/million.$$.log"
