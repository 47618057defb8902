-- @uses-services (the runner runs this file after the others)
-- The skynet shim's service functions (newservice, call, send, dispatch, ret/retpack,
-- register/queryservice, kill, self, pack/unpack) over skysocket.service, with a
-- service file written as for Skynet (tests/lua/servers/skynet_kv.lua).
local raw = require "skysocket"
local T = require "testlib"
local tests = {}

if not raw._service then return {} end -- a build without services

local skynet = require "skysocket.skynet"
local service = require "skysocket.service"

function tests.skynet_services_call_send_register_kill()
  T.run_co(function()
    local kv = skynet.newservice("servers.skynet_kv")
    T.eq(type(kv), "number", "an address")
    T.eq(skynet.call(kv, "lua", "set", "a", 1), true, "call")
    skynet.send(kv, "lua", "set", "b", { x = 2, s = "\0bin" })
    local b = skynet.call(kv, "lua", "get", "b") -- after the send: per-sender order
    T.eq(b.x, 2, "a table crossed"); T.eq(b.s, "\0bin", "binary string crossed")
    T.eq(skynet.queryservice(".kv"), kv, "queryservice finds the registered name")
    T.eq(skynet.localname(".kv"), kv, "localname")
    T.eq(skynet.call(".kv", "lua", "get", "a"), 1, "call by name")
    local me, source, session = skynet.call(kv, "lua", "whoami")
    T.eq(me, kv, "skynet.self() in the service"); T.eq(source, skynet.self(), "source is the caller")
    T.eq(session, 1, "session")
    T.eq(skynet.call(kv, "lua", "slowget", "a"), 1, "a handler that sleeps, then rets")
    T.eq(select("#", skynet.call(kv, "lua", "noreply")), 0, "no ret: an empty reply")
    skynet.send(kv, "lua", "get", "a") -- the reply to a send is dropped
    T.eq(skynet.call(kv, "lua", "get", "a"), 1, "still serving")
    local ok, err = service.pcall(skynet.call, kv, "lua", "fail")
    T.eq(ok, false, "a raising handler fails the call"); T.truthy(tostring(err):find("asked to fail", 1, true), err)
    T.eq(skynet.call(kv, "lua", "get", "a"), 1, "and the service goes on")
    T.eq(skynet.unpack(skynet.pack(1, nil, 3)), 1, "pack/unpack")
    T.eq(select("#", skynet.unpack(skynet.pack(1, nil, 3))), 3, "pack keeps nils")
    T.raises("only the \"lua\" protocol", skynet.call, kv, "text", "x")
    T.raises("no service named '.nope'", skynet.send, ".nope", "lua", 1)
    T.raises("function expected", skynet.dispatch, "lua", 1)
    T.raises("no message being handled", skynet.ret, skynet.pack(1))
    skynet.kill(kv)
    ok, err = service.pcall(skynet.call, kv, "lua", "get", "a")
    T.eq(ok, false, "a call to a killed service fails"); T.truthy(err, "with a message")
  end, 20000)
end

function tests.newservice_raises_for_a_missing_file()
  T.run_co(function()
    T.raises("not found", skynet.newservice, "servers.no_such_service")
  end)
end

-- Skynet's testsocket.lua agent mode: the listener service hands each connection to a
-- new agent service; with "abandon", the listener reads first and the bytes the client
-- sent after its first line (already in the listener's buffer) reach the agent.
function tests.testsocket_agent_mode_hands_connections_to_agents()
  local socket = require "skysocket.socket"
  T.run_co(function()
    for _, style in ipairs { "new", "abandon" } do
      local l = skynet.newservice("servers.skynet_testsocket", "listen", style)
      local port = skynet.call(l, "lua", "port")
      local conns = {}
      for i = 1, 20 do
        local c = assert(socket.open("127.0.0.1", port))
        T.eq(socket.readline(c), "Hello Skynet", style .. " greeting " .. i)
        if style == "abandon" then
          socket.write(c, "first" .. i .. "\nsecond" .. i .. "\n")
          T.eq(socket.readline(c), "agent got first" .. i, "the agent has the listener's line")
          T.eq(socket.readline(c), "second" .. i, "the bytes after it were handed over")
        end
        conns[i] = c
      end
      for i, c in ipairs(conns) do
        socket.write(c, "echo " .. i .. "\n")
        T.eq(socket.readline(c), "echo " .. i, style .. " echo " .. i)
        socket.close(c)
      end
      skynet.kill(l)
    end
  end, 20000)
end

return tests
