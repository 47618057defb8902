-- Skynet's test/testsocket.lua pattern through the shim (tests/lua/test_skynet_services.lua):
-- a listener service hands each connection to a new agent service. Written as for
-- Skynet, plus the first line that installs the shim in this service's state.
--   listen mode: ... = "listen", style ("new": the agent starts the accepted socket;
--                "abandon": the listener starts it, greets, reads one line, abandons
--                it and then starts the agent, which must get the bytes that followed)
--   agent mode:  ... = "agent", id, first line read by the listener (or nil)
require "skysocket.skynet"
local skynet = require "skynet"
local socket = require "skynet.socket"

local mode, a, b = ...

local function echo(id, greet)
  if greet then
    socket.start(id)
    socket.write(id, "Hello Skynet\n")
  end
  while true do
    local str = socket.read(id)
    if not str then break end
    socket.write(id, str)
  end
  socket.close(id)
end

if mode == "agent" then
  local id, first = tonumber(a), b
  skynet.start(function()
    skynet.fork(function()
      if first then
        socket.start(id)
        socket.write(id, "agent got " .. first .. "\n")
      end
      echo(id, not first)
      skynet.exit()
    end)
  end)
else
  local style = a
  skynet.start(function()
    local id, _, port = socket.listen("127.0.0.1", 0)
    socket.start(id, function(cid)
      if style == "abandon" then
        socket.start(cid)
        socket.write(cid, "Hello Skynet\n")
        local first = socket.readline(cid)
        socket.abandon(cid) -- before the agent starts it: what follows goes to the agent
        skynet.newservice("servers.skynet_testsocket", "agent", cid, first)
      else
        skynet.newservice("servers.skynet_testsocket", "agent", cid)
      end
    end)
    skynet.dispatch("lua", function() skynet.ret(skynet.pack(port)) end)
  end)
end
