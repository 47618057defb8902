-- Memory of an idle service: RSS growth per service with N idle services alive (each
-- has started, set a dispatch handler and answered one call), Linux only.
--   lua5.4 bench/service/idle_memory.lua [N]     (default 2000)
package.path = "lua/?.lua;" .. package.path
package.cpath = package.cpath .. ";target/lua/?.so"
local service = require "skysocket.service"
local N = tonumber(arg[1]) or 2000

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local IDLE = [[
local service = require "skysocket.service"
service.dispatch(function() return collectgarbage("count") end)
]]

service.run(function()
  -- warm-up: pool threads, allocator arenas, the bytecode cache
  local warm = {}
  for i = 1, 50 do warm[i] = assert(service.spawn(IDLE)) service.call(warm[i]) end
  for _, id in ipairs(warm) do service.kill(id) end
  service.sleep(50)
  collectgarbage()
  local before = rss_kib()
  local ids, lua_kib = {}, 0
  for i = 1, N do
    ids[i] = assert(service.spawn(IDLE))
    lua_kib = lua_kib + service.call(ids[i])
  end
  collectgarbage()
  local after = rss_kib()
  print(string.format("%s: %d idle services: RSS +%d KiB = %.0f bytes/service (Lua heap of each: %.0f bytes)",
    jit and jit.version or _VERSION, N, after - before, (after - before) * 1024 / N, lua_kib * 1024 / N))
  for _, id in ipairs(ids) do service.kill(id) end
end)
