#!/usr/bin/env bash
# redis-benchmark against examples/resp.lua (lua5.4) with TCP_NODELAY on (the default)
# and off (configure{nodelay=false}), beside a real redis-server, in one run.
#   bench/resp_server.sh [requests]      (default 100000; -c 50, -P 1 and -P 16)
# Needs Debian's redis-server and redis-tools, and target/lua-lua54/skysocket.so
# (tests/run.sh builds it).
set -eu
cd "$(dirname "$0")/.."
N=${1:-100000}
export LUA_CPATH="$PWD/target/lua-lua54/?.so;;" LUA_PATH="$PWD/lua/?.lua;;"
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_resp() { # $1 = log, rest = extra interpreter args; sets $port
  : >"$1"
  lua5.4 "${@:2}" examples/resp.lua 0 >"$1" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$1" && break; sleep 0.05; done
  port=$(grep -o 'listening on [^ ]*:[0-9]*' "$1" | head -1 | sed 's/.*://')
}
bench() { # $1 = label, $2 = port
  for p in 1 16; do
    redis-benchmark -p "$2" -c 50 -n "$N" -P "$p" -t ping,set,get -q 2>/dev/null |
      tr '\r' '\n' | grep -E "requests per second" | sed "s/^/$1 P=$p  /"
  done
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done

start_resp "$tmp/on.log"
on=$port
start_resp "$tmp/off.log" -e 'require("skysocket").configure { nodelay = false }'
off=$port
bench "redis-server       " "$rport"
bench "resp.lua nodelay=on " "$on"
bench "resp.lua nodelay=off" "$off"
