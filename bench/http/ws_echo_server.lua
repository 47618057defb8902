-- WebSocket echo server for bench/http/ws.sh: lua bench/http/ws_echo_server.lua PORT
local socket = require "skysocket.socket"
local http = require "skysocket.http"
local websocket = require "skysocket.websocket"
local port = tonumber(arg[1])
socket.run(function()
  assert(http.listen("127.0.0.1", port, function(req, res)
    local c = websocket.upgrade(req, res)
    if not c then return end
    while true do
      local m, kind = c:read()
      if not m then break end
      c:send(m, kind)
    end
  end))
end)
