-- An agent of examples/gate.lua: serves the connections the gate hands it. Packets
-- are framed as in Skynet's netpack (a 2-byte big-endian length, then the payload);
-- the agent echoes each one. Arguments: its number, and the watchdog (root) to tell
-- when a connection ends.
local service = require "skysocket.service"
local socket = require "skysocket.socket"
local me, watchdog = ...
local served = 0

local function serve(id)
  socket.start(id) -- the socket is ours from here on: its bytes come to this service
  local packets = 0
  while true do
    local head = socket.read(id, 2)
    if not head then break end
    local n = head:byte(1) * 256 + head:byte(2)
    local body = n == 0 and "" or socket.read(id, n)
    if not body then break end
    socket.write(id, head .. body)
    packets = packets + 1
  end
  socket.close(id)
  service.send(watchdog, "closed", me, packets)
end

service.dispatch(function(_, cmd, id)
  if cmd == "connection" then
    served = served + 1
    service.fork(serve, id)
  elseif cmd == "served" then
    return served
  end
end)
