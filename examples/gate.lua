-- Skynet's gate -> watchdog -> agent pattern as plain Lua: one gate service accepts,
-- N agent services serve the connections it hands them (netpack framing: 2-byte
-- big-endian length + payload, echoed back), the root is the watchdog. Every service
-- is its own Lua state; the worker pool runs them on all cores, and the socket
-- thread delivers each connection's bytes to the agent that owns it.
--
--   lua5.4 examples/gate.lua [port] [agents]          serve (default 8001, 4 agents)
--   lua5.4 examples/gate.lua client PORT [conns] [packets]
--       open `conns` connections at once (default 100), send `packets` packets of
--       random sizes on each (default 20) in random-sized pieces, check every echo
--       byte for byte; prints "ok <conns> connections, <bytes> bytes echoed".
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/../lua/?.lua;" .. package.path
package.cpath = package.cpath .. ";" .. dir .. "/../target/lua/?.so"
local service = require "skysocket.service"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"

local function source(name)
  local f = assert(io.open(dir .. "/gate/" .. name .. ".lua", "rb"))
  local code = f:read("*a")
  f:close()
  return code
end

local function serve(port, nagents)
  service.run(function()
    local agents = {}
    for i = 1, nagents do agents[i] = assert(service.spawn(source("agent"), i, service.self())) end
    local gate = assert(service.spawn(source("gate"), "127.0.0.1", port, agents))
    print(string.format("gate listening on 127.0.0.1:%d, %d agents", service.call(gate, "port"), nagents))
    io.stdout:flush()
    local closed, per_agent = 0, {}
    service.dispatch(function(_, what, agent, packets)
      if what == "closed" then
        closed = closed + 1
        per_agent[agent] = (per_agent[agent] or 0) + 1
        if closed % 100 == 0 then
          local t = {}
          for i = 1, nagents do t[i] = per_agent[i] or 0 end
          print(string.format("%d connections closed (per agent: %s)", closed, table.concat(t, " ")))
          io.stdout:flush()
        end
      end
    end)
    while true do service.sleep(60000) end
  end)
end

local function client(port, conns, packets)
  local seed = 12345
  local function rand(n) seed = (seed * 16807) % 2147483647; return seed % n + 1 end
  local total, failures, done = 0, {}, 0
  local ok, err = sched.run(function()
    for c = 1, conns do
      sched.fork(function()
        local id, e = socket.open("127.0.0.1", port)
        if not id then failures[#failures + 1] = "connect: " .. tostring(e); done = done + 1; return end
        local want = {}
        for p = 1, packets do
          local n = rand(1000) - 1
          local body = string.rep(string.char(65 + (c + p) % 26), n)
          local packet = string.char(math.floor(n / 256), n % 256) .. body
          want[p] = packet
          local i = 1
          while i <= #packet do -- random chunking
            local k = rand(64)
            socket.write(id, packet:sub(i, i + k - 1))
            i = i + k
          end
        end
        local expect = table.concat(want)
        local got = socket.read(id, #expect)
        if got ~= expect then failures[#failures + 1] = "connection " .. c .. ": echo differs" end
        total = total + #expect
        socket.close(id)
        done = done + 1
      end)
    end
    while done < conns do sched.sleep(10) end
  end)
  if not ok then print("error: " .. tostring(err)); os.exit(1) end
  if #failures > 0 then print("FAILED: " .. failures[1] .. " (" .. #failures .. " failures)"); os.exit(1) end
  print(string.format("ok %d connections, %d bytes echoed", conns, total))
end

if arg[1] == "client" then
  client(assert(tonumber(arg[2]), "port"), tonumber(arg[3]) or 100, tonumber(arg[4]) or 20)
else
  serve(tonumber(arg[1]) or 8001, tonumber(arg[2]) or 4)
end
