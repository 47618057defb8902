#!/usr/bin/env bash
# Build skysocket for lua5.4 and run the echo demo: a server on 127.0.0.1:PORT and a
# client that talks to it. Installs lua5.4 when missing (as root).
#   examples/demo.sh [port]        (default 8888; the server keeps running until Ctrl-C)
set -eu
cd "$(dirname "$0")/.."
PORT=${1:-8888}
if ! command -v lua5.4 >/dev/null || ! dpkg -s liblua5.4-dev >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.4 liblua5.4-dev >/dev/null
  else
    echo "please install lua5.4 and liblua5.4-dev"; exit 1
  fi
fi
cargo build --release --no-default-features --features lua54,module
mkdir -p target/lua
cp target/release/libskysocket.so target/lua/skysocket.so
lua5.4 examples/echo.lua "$PORT" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.5
lua5.4 examples/client.lua "$PORT" "hello from skysocket" "second line"
echo "(echo server still running on 127.0.0.1:$PORT — try: nc 127.0.0.1 $PORT; Ctrl-C to stop)"
wait $server
