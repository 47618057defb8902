#!/usr/bin/env bash
# TLS benchmarks: full handshakes per second (new connection each, no resumption) and
# bulk echo MB/s on one connection, against these servers, each pinned to one core:
#   skysocket      examples/tls_echo.lua (coroutine API, lua5.4, release module)
#   skysocket-cb   bench/servers/tls_echo_cb.lua (callback API, lua5.4, release module)
#   rustls         tlsbench server (raw rustls echo in one epoll loop): the ceiling
#   rustls-threads tlsbench tserver (raw rustls, blocking thread per connection)
#   luasec         bench/servers/echo_luasec.lua (lua5.4 + Debian lua-sec, one
#                  connection at a time: its best case for the sequential client)
#   luasec-select  bench/servers/echo_luasec_select.lua (the same with LuaSocket's
#                  select and non-blocking handshakes: overlapping handshakes)
# Handshakes are measured twice: sequentially (one client, verifying: latency-bound)
# and from CONC client threads at once with the client's checks off (`noverify`: the
# server does the same work, the client less, so the server's core is the limit).
# Usage: bench/tls/run.sh [HS_SECONDS] [BULK_MIB] [ROUNDS] [CONC] [SERVERS]
# Needs: openssl, taskset, lua5.4 (+ lua-sec for the LuaSec row), the module built at
# target/lua-lua54/skysocket.so (see tests/run.sh build_module).
set -eu
cd "$(dirname "$0")/../.."
ROOT=$PWD
HS=${1:-5}; MIB=${2:-512}; ROUNDS=${3:-3}; CONC=${4:-8}
SERVERS=${5:-"skysocket skysocket-cb rustls rustls-threads luasec luasec-select"}
BIN=$ROOT/target/tlsbench/release/tlsbench
(cd bench/tls && CARGO_TARGET_DIR=$ROOT/target/tlsbench cargo build --release -q)
tmp=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
(cd "$tmp" &&
  openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj '/CN=bench CA' &&
  openssl req $ec -keyout server.key -out server.csr -subj '/CN=localhost' &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext &&
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile leaf.ext -out server.pem) >"$tmp/mint.log" 2>&1
export LUA_CPATH="$ROOT/target/lua-lua54/?.so;;" LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"

start() { # name cmd... ; sets $port
  local out=$tmp/$1.out; shift
  taskset -c 0 "$@" >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.05; done
  port=$(grep -o 'listening on [^ ]*:[0-9]*' "$out" | head -1 | sed 's/.*://')
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# CPU time (user + system, clock ticks) the server process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

printf '| server | handshakes/s, sequential | handshakes/s, %s at once | server CPU µs / handshake (at once) | bulk MB/s (each way) | server CPU ms / 100 MB echoed |\n|---|---|---|---|---|---|\n' "$CONC"
for s in $SERVERS; do
  case $s in
    skysocket) start $s lua5.4 examples/tls_echo.lua "$tmp/server.pem" "$tmp/server.key" 0 ;;
    skysocket-cb) start $s lua5.4 bench/servers/tls_echo_cb.lua "$tmp/server.pem" "$tmp/server.key" 0 ;;
    rustls) start $s "$BIN" server 0 "$tmp/server.pem" "$tmp/server.key" ;;
    rustls-threads) start $s "$BIN" tserver 0 "$tmp/server.pem" "$tmp/server.key" ;;
    luasec|luasec-select)
      if ! lua5.4 -e 'require "ssl"' 2>/dev/null; then echo "| $s | (lua-sec not installed) | | | | |"; continue; fi
      f=bench/servers/echo_luasec.lua; [ $s = luasec-select ] && f=bench/servers/echo_luasec_select.lua
      start $s lua5.4 $f "$tmp/server.pem" "$tmp/server.key" 0 ;;
  esac
  pid=${pids[-1]}
  hs=(); hc=(); bw=(); hcpu=(); bcpu=()
  for _ in $(seq 1 "$ROUNDS"); do
    hs+=("$(taskset -c 1 "$BIN" hs "$port" "$tmp/ca.pem" "$HS" | sed 's/.*: \([0-9]*\) .*/\1/')")
    t0=$(ticks "$pid")
    line=$(taskset -c 1 "$BIN" hs "$port" "$tmp/ca.pem" "$HS" "$CONC" noverify)
    t1=$(ticks "$pid")
    n=$(echo "$line" | sed 's/handshakes \([0-9]*\) .*/\1/')
    hc+=("$(echo "$line" | sed 's/.*: \([0-9]*\) .*/\1/')")
    hcpu+=("$(( (t1 - t0) * 1000000 / HZ / (n > 0 ? n : 1) ))")
    t0=$(ticks "$pid")
    bw+=("$(taskset -c 1 "$BIN" bulk "$port" "$tmp/ca.pem" "$MIB" | sed 's/.*: \([0-9]*\) MB.*/\1/')")
    t1=$(ticks "$pid")
    bcpu+=("$(( (t1 - t0) * 1000 / HZ * 100 * 1000000 / (MIB * 1048576) ))")
  done
  echo "| $s | $(printf '%s\n' "${hs[@]}" | median) (${hs[*]}) | $(printf '%s\n' "${hc[@]}" | median) (${hc[*]}) | $(printf '%s\n' "${hcpu[@]}" | median) | $(printf '%s\n' "${bw[@]}" | median) (${bw[*]}) | $(printf '%s\n' "${bcpu[@]}" | median) |"
  kill "${pids[-1]}" 2>/dev/null || true
done
