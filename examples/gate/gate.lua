-- The gate of examples/gate.lua: listens and hands each new connection to the next
-- agent, round robin, without reading from it (the agent's start() makes it the
-- owner; a gate that had read first would call socket.abandon(id) before handing it
-- on). Arguments: host, port (0: any free one), the agents' ids.
local service = require "skysocket.service"
local socket = require "skysocket.socket"
local host, port, agents = ...
local lid, _, bound = assert(socket.listen(host, port))
local accepted = 0
socket.start(lid, function(id)
  accepted = accepted + 1
  service.send(agents[(accepted - 1) % #agents + 1], "connection", id)
end)
service.dispatch(function(_, cmd)
  if cmd == "port" then return bound end
  if cmd == "accepted" then return accepted end
end)
