#!/bin/sh
# Scaling benchmark (issue 13): pingpong, CONNS connections, against the same handler
# (WORK_US microseconds of Lua per message) in one state and on AGENTS agent services.
#   bench/service/scaling.sh [LUA] [WORK_US] [CONNS] [SECS] [AGENTS] [ROUNDS]
# Needs target/lua/skysocket.so (or LUA_CPATH) and bench/loadgen built
# (cargo build --release --manifest-path bench/loadgen/Cargo.toml).
set -e
LUA=${1:-lua5.4}; WORK=${2:-50}; CONNS=${3:-1000}; SECS=${4:-5}; AGENTS=${5:-8}; ROUNDS=${6:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LG=$ROOT/bench/loadgen/target/release/loadgen
[ -x "$LG" ] || cargo build -q --release --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
export LUA_CPATH="${LUA_CPATH:-$ROOT/target/lua/?.so;;}"
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run_one() {
  mode=$1; port=$(free_port); log=$(mktemp)
  "$LUA" "$ROOT/bench/service/scaling.lua" "$mode" "$port" "$WORK" "$AGENTS" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.1; done
  out=$("$LG" pingpong --port "$port" --conns "$CONNS" --size 64 --duration "$SECS" --server-pid "$pid" 2>&1 | grep RESULT)
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  field() { echo "$out" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  echo "$mode work=${WORK}us conns=$CONNS msgs_per_s=$(field msgs_per_s) p50_us=$(field p50_us) server_cpu_s=$(field srv_cpu_s) loadgen_cpu_pct=$(field lg_cpu_pct) ($(head -1 "$log"))"
  rm -f "$log"
}
# One calibration for every run (the loop's speed varies with the machine's load).
SCALING_ITERS=$("$LUA" -e '
  local function work(n) local x = 0 for i = 1, n do x = x + i % 7 end return x end
  local n, best = 400000, math.huge
  for _ = 1, 7 do local t = os.clock() work(n) best = math.min(best, os.clock() - t) end
  print(math.floor(n * ('"$WORK"' / 1e6) / best))')
export SCALING_ITERS
echo "calibrated: $SCALING_ITERS iterations = ${WORK} us of Lua work per message"
for r in $(seq "$ROUNDS"); do
  run_one single
  run_one agents
done
