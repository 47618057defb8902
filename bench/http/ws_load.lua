-- WebSocket load: CONNS clients, each sending MSGS messages of SIZE bytes and waiting
-- for every echo (ping-pong), through skysocket.websocket's client.
--   lua bench/http/ws_load.lua PORT CONNS MSGS SIZE  -> prints messages/s
local socket = require "skysocket.socket"
local websocket = require "skysocket.websocket"
local port, conns, msgs, size = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local payload = string.rep("x", size)
local done = 0
socket.run(function()
  local clients = {}
  for i = 1, conns do clients[i] = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/")) end
  for i = 1, conns do
    socket.fork(function()
      local c = clients[i]
      for _ = 1, msgs do
        c:send(payload)
        assert(c:read() == payload)
      end
      c:close()
      done = done + 1
    end)
  end
end)
