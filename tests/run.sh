#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Rust engine tests (epoll and poll
# backends), the Lua suite on every interpreter, the examples, and luarocks installs.
# Installs the Debian packages it needs when they are missing (as root).
#
#   tests/run.sh            everything
#   tests/run.sh --quick    lua5.4 only (no matrix, no luarocks)
#
# Ends with "N passed, N failed" counting every Rust and Lua test case, and exits
# non-zero if any step failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

PKGS="lua5.4 liblua5.4-dev lua5.3 liblua5.3-dev lua5.1 liblua5.1-0-dev luajit libluajit-5.1-dev luarocks openssl curl ca-certificates redis-server redis-tools"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "missing packages:$missing (run as root or install them)"; exit 1
  fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
steps_failed=""
cases_passed=0
cases_failed=0

# Count cases from cargo's "test result:" lines and the Lua runner's closing line.
count() {
  local pf
  pf=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i }; cargo = 1 }
            /^[0-9]+ passed, [0-9]+ failed$/ { lp = $1; lf = $3 }
            END { if (cargo) print p + 0, f + 0; else print lp + 0, lf + 0 }' "$1")
  cases_passed=$((cases_passed + ${pf% *}))
  cases_failed=$((cases_failed + ${pf#* }))
}

step() {
  local name=$1; shift
  local log="$LOG/$(echo "$name" | tr -c 'a-zA-Z0-9' _).log"
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "PASS  $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $name ($((SECONDS - t0)) s)"
    tail -n 60 "$log" | sed 's/^/    | /'
    steps_failed="$steps_failed\n  $name"
  fi
  count "$log"
}

step "cargo fmt --check" cargo fmt --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
# The in-process Lua suite (tests/lua_inprocess.rs, a debug build) runs in the Lua 5.5
# step only: the four real interpreters below run the same files on epoll, and the
# engine tests run on both backends. (Keeps the whole run under 15 minutes.)
step "cargo test (epoll)" cargo test -- --skip lua_suite_in_process
step "cargo test (poll backend)" cargo test --features poll-backend -- --skip lua_suite_in_process
if [ $QUICK = 0 ]; then
  step "cargo test (vendored Lua 5.5)" env CARGO_TARGET_DIR="$ROOT/target/t-lua55" \
    cargo test --no-default-features --features lua55,vendored,tls
fi

# Build the loadable module for one interpreter into target/lua-<feature>/skysocket.so.
build_module() {
  local feat=$1
  CARGO_TARGET_DIR="$ROOT/target/m-$feat" cargo build --release --no-default-features --features "$feat,module,tls" &&
    mkdir -p "$ROOT/target/lua-$feat" &&
    cp "$ROOT/target/m-$feat/release/libskysocket.so" "$ROOT/target/lua-$feat/skysocket.so"
}

lua_suite() {
  local interp=$1 feat=$2
  # SKYSOCKET_TEST_HOOKS=1: the module exports its panic hooks (test_panic.lua).
  SKYSOCKET_TEST_HOOKS=1 LUA_CPATH="$ROOT/target/lua-$feat/?.so;;" LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" \
    timeout 600 "$interp" tests/lua/runner.lua tests/lua/test_*.lua
}

# The socket tests again with the engine shared (a service started first, so the
# socket thread polls and every message reaches the root as mail): the path every
# program with services takes.
lua_suite_shared() {
  local interp=$1 feat=$2
  SKYSOCKET_TEST_SHARED=1 SKYSOCKET_TEST_HOOKS=1 LUA_CPATH="$ROOT/target/lua-$feat/?.so;;" \
    LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" \
    timeout 600 "$interp" tests/lua/runner.lua \
      tests/lua/test_{core,sockets,co,buffer,channel,tls,redis,resp,websocket,skynet,hostile,panic,fuzz}.lua
}

examples_test() {
  local feat=$1 interp=$2
  LUA_CPATH="$ROOT/target/lua-$feat/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" \
    bash tests/examples.sh "$interp"
}

if [ $QUICK = 1 ]; then
  matrix="lua5.4:lua54"
else
  matrix="lua5.4:lua54 lua5.3:lua53 lua5.1:lua51 luajit:luajit"
fi
for pair in $matrix; do
  interp=${pair%%:*}; feat=${pair##*:}
  step "build module ($feat)" build_module "$feat"
  step "lua suite ($interp)" lua_suite "$interp" "$feat"
  step "lua suite, shared engine ($interp)" lua_suite_shared "$interp" "$feat"
  step "examples ($interp)" examples_test "$feat" "$interp"
done

rock_smoke() {
  local luaver=$1 interp=$2; shift 2
  local tree; tree=$(mktemp -d)
  luarocks --lua-version "$luaver" make --tree "$tree" rockspec/skysocket-dev-1.rockspec "$@" &&
    env LUA_CPATH="$tree/lib/lua/$luaver/?.so;;" LUA_PATH="$tree/share/lua/$luaver/?.lua;;" \
      "$interp" tests/smoke.lua
  local rc=$?
  rm -rf "$tree"
  return $rc
}
if [ $QUICK = 0 ]; then
  step "luarocks install (5.4)" rock_smoke 5.4 lua5.4
  step "luarocks install (5.3)" rock_smoke 5.3 lua5.3
  step "luarocks install (5.1)" rock_smoke 5.1 lua5.1
  step "luarocks install (luajit)" rock_smoke 5.1 luajit LUA=/usr/bin/luajit LUA_INCDIR=/usr/include/luajit-2.1
fi

echo
if [ -n "$steps_failed" ]; then
  printf "failed steps:%b\n" "$steps_failed"
else
  echo "all steps passed"
fi
echo "$cases_passed passed, $cases_failed failed"
[ -z "$steps_failed" ]
