-- Service-to-service example: a key/value service called by several client services.
--
--   lua5.4 examples/kv_service.lua [clients] [keys]     (default 4 clients, 1000 keys)
--
-- The root starts one "kv" service (registered under that name) and N client services.
-- Each client looks the kv service up by name, stores its own keys with calls, reads
-- them back, checks them, and reports to the root with a one-way message. All of it
-- runs on the worker pool (one thread per CPU); the root only waits for the reports.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local service = require "skysocket.service"

local CLIENTS = tonumber(arg[1]) or 4
local KEYS = tonumber(arg[2]) or 1000

-- The key/value service: get, set, incr, count.
local KV = [[
local service = require "skysocket.service"
local db, n = {}, 0
local commands = {}
function commands.set(k, v) if db[k] == nil then n = n + 1 end db[k] = v return true end
function commands.get(k) return db[k] end
function commands.incr(k, by) db[k] = (db[k] or 0) + (by or 1) return db[k] end
function commands.count() return n end
service.dispatch(function(from, cmd, ...)
  local f = commands[cmd]
  if not f then error("kv: unknown command " .. tostring(cmd)) end
  return f(...)
end)
service.register("kv")
]]

-- A client: its keys are "c<i>:<k>"; values are tables, to show they cross too.
local CLIENT = [[
local service = require "skysocket.service"
local me, keys, root = ...
local kv
while not kv do kv = service.query("kv") if not kv then service.sleep(1) end end
for k = 1, keys do
  service.call(kv, "set", "c" .. me .. ":" .. k, { client = me, k = k, text = ("x"):rep(k % 17) })
end
local bad = 0
for k = 1, keys do
  local v = service.call(kv, "get", "c" .. me .. ":" .. k)
  if v.client ~= me or v.k ~= k or #v.text ~= k % 17 then bad = bad + 1 end
  service.call(kv, "incr", "total")
end
service.send(root, "done", me, bad)
service.exit()
]]

local started = require("skysocket").now()
service.run(function()
  local kv = assert(service.spawn(KV))
  local left, errors = CLIENTS, 0
  service.dispatch(function(from, what, who, bad)
    if what == "done" then
      left = left - 1
      errors = errors + bad
      print(string.format("client %d (service %d) done, %d bad values", who, from, bad))
    end
  end)
  for i = 1, CLIENTS do assert(service.spawn(CLIENT, i, KEYS, service.self())) end
  while left > 0 do service.sleep(5) end
  local total = service.call(kv, "get", "total")
  local count = service.call(kv, "count")
  local ms = require("skysocket").now() - started
  print(string.format("%d clients x %d keys: %d keys stored, total=%d, %d calls in %d ms (%d workers)",
    CLIENTS, KEYS, count, total, CLIENTS * KEYS * 3 + 2, ms, service.threads()))
  assert(errors == 0 and total == CLIENTS * KEYS and count == CLIENTS * KEYS, "kv check failed")
  service.kill(kv)
  print("ok")
end)
