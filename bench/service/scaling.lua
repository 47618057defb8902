-- The scaling benchmark of issue 13: a pingpong server whose handler does a fixed
-- amount of Lua work per message, in one state or spread over agent services.
--
--   lua5.4 bench/service/scaling.lua single PORT WORK_US
--   lua5.4 bench/service/scaling.lua agents PORT WORK_US [AGENTS] [THREADS]
--
-- single: the callback echo in the root state, calling work() before each send.
-- agents: a gate service accepts and hands each connection to one of AGENTS agent
--         services (default 8) on THREADS workers (default: one per CPU); each agent
--         runs the same handler. The work is a loop calibrated at start to take
--         WORK_US microseconds on this machine; both modes use the same count.
-- Prints "ready PORT ITERS" when listening. SCALING_ITERS=n skips the calibration. Drive it with bench/loadgen pingpong.
local mode, port, work_us = arg[1], tonumber(arg[2]), tonumber(arg[3]) or 50
local raw = require "skysocket"

local function work(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

-- Iterations for work_us microseconds (best of 5 timings of a long run).
local function calibrate(us)
  local n = 200000
  local best = math.huge
  for _ = 1, 5 do
    local t = os.clock()
    work(n)
    best = math.min(best, os.clock() - t)
  end
  return math.max(1, math.floor(n * (us / 1e6) / best))
end

-- SCALING_ITERS fixes the count (scaling.sh calibrates once for both modes).
local iters = tonumber(os.getenv("SCALING_ITERS") or "") or calibrate(work_us)

if mode == "single" then
  local lid = assert(raw.listen("127.0.0.1", port))
  raw.start(lid, {
    accept = function(_, id) raw.start(id) end,
    data = function(id, s) work(iters); raw.send(id, s) end,
  })
  print("ready " .. port .. " " .. iters)
  io.stdout:flush()
  raw.loop()
elseif mode == "agents" then
  local service = require "skysocket.service"
  local nagents = tonumber(arg[4]) or 8
  if arg[5] then service.threads(tonumber(arg[5])) end
  local AGENT = [[
    local raw = require "skysocket"
    local service = require "skysocket.service"
    local iters = ...
    local function work(n)
      local x = 0
      for i = 1, n do x = x + i % 7 end
      return x
    end
    local H = { data = function(id, s) work(iters); raw.send(id, s) end }
    service.dispatch(function(_, id) raw.start(id, H) end)
  ]]
  local GATE = [[
    local raw = require "skysocket"
    local service = require "skysocket.service"
    local port, agents = ...
    local n = 0
    local lid = assert(raw.listen("127.0.0.1", port))
    raw.start(lid, { accept = function(_, id)
      n = n + 1
      service.send(agents[(n - 1) % #agents + 1], id)
    end })
    service.dispatch(function() return true end)
  ]]
  service.run(function()
    local agents = {}
    for i = 1, nagents do agents[i] = assert(service.spawn(AGENT, iters)) end
    local gate = assert(service.spawn(GATE, port, agents))
    service.call(gate) -- listening
    print("ready " .. port .. " " .. iters .. " threads=" .. service.threads())
    io.stdout:flush()
    while true do service.sleep(60000) end
  end)
else
  io.stderr:write("usage: scaling.lua single|agents PORT WORK_US [AGENTS] [THREADS]\n")
  os.exit(1)
end
