#!/usr/bin/env bash
# The Lua suite (test_core, test_sockets, test_fuzz at a reduced iteration count, test_tls
# with small transfers) under
# valgrind memcheck with lua5.4 and the release module. Fails on any memory error or
# on a definite/indirect leak; "possibly lost" and "still reachable" blocks are reported
# but not fatal (see tests/valgrind.supp for why).
#
#   tests/valgrind.sh                 # SKYSOCKET_FUZZ_ITERS defaults to 2000 here
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)"; exit 1; }
cargo build --release --no-default-features --features lua54,module,tls
mkdir -p target/lua && cp target/release/libskysocket.so target/lua/skysocket.so
export SKYSOCKET_FUZZ_ITERS=${SKYSOCKET_FUZZ_ITERS:-2000}
export TLS_CONNS=${TLS_CONNS:-4} TLS_MIB=${TLS_MIB:-0.25} # small TLS transfers under valgrind
LUA_CPATH="$PWD/target/lua/?.so;;" LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" \
  valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect,possible --suppressions=tests/valgrind.supp \
    --num-callers=30 \
    lua5.4 tests/lua/runner.lua tests/lua/test_core.lua tests/lua/test_sockets.lua tests/lua/test_fuzz.lua \
    tests/lua/test_tls.lua
