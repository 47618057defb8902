#!/usr/bin/env bash
# WebSocket echo: messages/s (round trips) of skysocket.websocket's echo server vs
# Python's websockets echo server, same client (skysocket, LuaJIT), 50 connections ×
# 2,000 messages of 64 bytes. Server on CPU 0, client on CPU 1.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
load() {
  local name=$1 port=$2
  sleep 0.5
  local t0; t0=$(date +%s.%N)
  LUA_CPATH="$ROOT/target/lua-luajit/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" taskset -c 1 luajit bench/http/ws_load.lua "$port" 50 2000 64
  local t1; t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n=100000 -v name="$name" 'BEGIN { printf "| %s | %.0f |\n", name, n / (b - a) }'
}
echo "| server | messages/s |"
echo "|---|---|"
P=$(free_port)
LUA_CPATH="$ROOT/target/lua-lua54/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" taskset -c 0 lua5.4 bench/http/ws_echo_server.lua "$P" & S=$!
load "skysocket.websocket (lua5.4)" "$P"; kill $S
P=$(free_port)
LUA_CPATH="$ROOT/target/lua-luajit/?.so;;" LUA_PATH="$ROOT/lua/?.lua;;" taskset -c 0 luajit bench/http/ws_echo_server.lua "$P" & S=$!
load "skysocket.websocket (LuaJIT)" "$P"; kill $S
P=$(free_port)
taskset -c 0 python3 -c "
import asyncio, websockets
async def echo(ws):
    async for m in ws: await ws.send(m)
async def main():
    async with websockets.serve(echo, '127.0.0.1', $P): await asyncio.Future()
asyncio.run(main())" & S=$!
load "Python websockets $(python3 -c 'import websockets; print(websockets.__version__)')" "$P"; kill $S
