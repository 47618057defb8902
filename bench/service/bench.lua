-- Service-to-service throughput: one-way messages/s and call round trips/s between two
-- services (both on the worker pool; the root only starts them and waits).
--
--   lua5.4 bench/service/bench.lua [messages] [calls]   (defaults 1,000,000 and 200,000)
--
-- Prints one line per case: "oneway N msgs in MS ms: R msgs/s" and "call ...". Run from
-- the repository root (module in target/lua/, Lua files in lua/).
package.path = "lua/?.lua;" .. package.path
package.cpath = package.cpath .. ";target/lua/?.so"
local service = require "skysocket.service"
local now = require("skysocket").now

local MSGS = tonumber(arg[1]) or 1000000
local CALLS = tonumber(arg[2]) or 200000
local CONCURRENT = tonumber(arg[3]) or 1

local SINK = [[
local service = require "skysocket.service"
local root, expect = ...
local n = 0
service.dispatch(function(from, x)
  if x == nil then return n end       -- a call: the count so far
  n = n + 1
  if n == expect then service.send(root, "sink done") end
end)
]]

local SENDER = [[
local service = require "skysocket.service"
local sink, msgs = ...
for i = 1, msgs do service.send(sink, i) end
]]

local CALLER = [[
local service = require "skysocket.service"
local echo, calls, conc, root = ...
local left = conc
for c = 1, conc do
  service.fork(function()
    for i = 1, calls / conc do service.call(echo, i) end
    left = left - 1
    if left == 0 then service.send(root, "calls done") end
  end)
end
]]

local ECHO = [[
local service = require "skysocket.service"
service.dispatch(function(_, x) return x end)
]]

service.run(function()
  local done = {}
  service.dispatch(function(_, what) done[what] = true end)
  local function wait_for(what)
    while not done[what] do service.sleep(1) end
  end
  local me = service.self()

  if MSGS > 0 then
  local sink = assert(service.spawn(SINK, me, MSGS))
  service.sleep(20)
  local t0 = now()
  local sender = assert(service.spawn(SENDER, sink, MSGS))
  wait_for("sink done")
  local ms = now() - t0
  print(string.format("oneway %d msgs in %d ms: %.0f msgs/s", MSGS, ms, MSGS / ms * 1000))
  service.kill(sink)
  service.kill(sender)
  end
  if CALLS == 0 then return end

  local echo = assert(service.spawn(ECHO))
  service.sleep(20)
  local t0 = now()
  local caller = assert(service.spawn(CALLER, echo, CALLS, CONCURRENT, me))
  wait_for("calls done")
  ms = now() - t0
  print(string.format("call %d round trips (%d concurrent) in %d ms: %.0f calls/s",
    CALLS, CONCURRENT, ms, CALLS / ms * 1000))
  service.kill(echo)
  service.kill(caller)
end)
