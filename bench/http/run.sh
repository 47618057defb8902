#!/usr/bin/env bash
# HTTP hello-world benchmark: wrk -c 100 -d 10 against skysocket.http (lua5.4 and
# LuaJIT), lua-http (lua5.1, cqueues) and nginx (one worker), each server pinned to
# CPU 0 and wrk (2 threads) to CPU 1. Loopback only, free ports, every server killed
# at the end. Needs: wrk, nginx-light, lua-http (Debian packages).
#   bench/http/run.sh [duration_s]
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
DUR=${1:-10}
OUT=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bench() {
  local name=$1 port=$2; shift 2
  taskset -c 0 "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
  local body; body=$(curl -s "http://127.0.0.1:$port/")
  [ "$body" = "Hello, World!" ] || { echo "$name: bad body '$body'"; kill $pid; return; }
  # server CPU time (user + system, all its threads) spent during the wrk run
  local spid; spid=$(pgrep -P $pid | head -1); [ -n "$spid" ] || spid=$pid
  local c0; c0=$(awk '{print $14 + $15}' /proc/$spid/stat)
  taskset -c 1 wrk -t 2 -c 100 -d "$DUR" --latency "http://127.0.0.1:$port/" >"$OUT/$name.wrk"
  local c1; c1=$(awk '{print $14 + $15}' /proc/$spid/stat)
  kill $pid; wait $pid 2>/dev/null
  local rps p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$OUT/$name.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$OUT/$name.wrk")
  local cpu_us; cpu_us=$(awk -v c=$((c1 - c0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", c / hz * 1e6 / n }')
  printf "| %s | %s | %s | %s |\n" "$name" "$rps" "$p99" "$cpu_us"
}
echo "| server | requests/s | p99 latency | server CPU µs/request |"
echo "|---|---|---|---|"
P=$(free_port)
bench "skysocket.http (lua5.4)" "$P" env LUA_CPATH="$ROOT/target/lua-lua54/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" lua5.4 bench/http/hello_skysocket.lua "$P"
P=$(free_port)
bench "skysocket.http (LuaJIT)" "$P" env LUA_CPATH="$ROOT/target/lua-luajit/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" luajit bench/http/hello_skysocket.lua "$P"
# Debian 12 ships lua-http's dependency lua-fifo for 5.1/5.2 only: run it on lua5.1.
if lua5.1 -e 'require "http.server"' 2>/dev/null; then
  P=$(free_port)
  bench "lua-http 0.4 (lua5.1, cqueues)" "$P" lua5.1 bench/http/hello_luahttp.lua "$P"
fi
if command -v nginx >/dev/null; then
  P=$(free_port)
  mkdir -p "$OUT/nginx/logs"
  cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $OUT/nginx/logs/error.log;
pid $OUT/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$P;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
  bench "nginx 1.22 (1 worker)" "$P" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
fi
rm -rf "$OUT"
