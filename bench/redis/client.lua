-- skysocket.redis load client: lua5.4 bench/redis/client.lua PORT OP CONC DEPTH REQUESTS [MODE]
--   OP       get | set
--   CONC     coroutines (each loops: one command, or a pipeline of DEPTH commands)
--   DEPTH    1 = unpipelined; N = db:pipeline of N commands per round trip
--   REQUESTS total commands (split evenly between the coroutines)
--   MODE     shared (default): every coroutine on one redis.new() connection (the
--            channel pipelines their requests); conns: one connection per coroutine
--            (redis-benchmark's model)
-- Prints: RESULT op=get conc=50 depth=1 mode=shared requests=N seconds=S rps=R
local socket = require "skysocket.socket"
local redis = require "skysocket.redis"
local raw = require "skysocket"

local port = assert(tonumber(arg[1]), "port")
local op = arg[2] or "get"
local conc = tonumber(arg[3]) or 50
local depth = tonumber(arg[4]) or 1
local total = tonumber(arg[5]) or 100000
local mode = arg[6] or "shared"
local per = math.floor(total / conc / depth)
local value = string.rep("x", 3) -- redis-benchmark's default payload is 3 bytes

local function now()
  -- wall clock in seconds with sub-second precision, without extra modules
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("*l"))
  f:close()
  return t
end

local ok, err = socket.run(function()
  local shared = redis.new { port = port }
  shared:set("key:__rand_int__", value)
  local dbs = {}
  for i = 1, conc do
    dbs[i] = mode == "conns" and redis.new { port = port } or shared
    if mode == "conns" then dbs[i]:ping() end
  end
  local cmds = {}
  for i = 1, depth do
    cmds[i] = op == "get" and { "get", "key:__rand_int__" } or { "set", "key:__rand_int__", value }
  end
  local done = 0
  local t0 = now()
  for i = 1, conc do
    socket.fork(function()
      local db = dbs[i]
      if depth == 1 then
        if op == "get" then
          for _ = 1, per do db:get("key:__rand_int__") end
        else
          for _ = 1, per do db:set("key:__rand_int__", value) end
        end
      else
        for _ = 1, per do db:pipeline(cmds) end
      end
      done = done + 1
    end)
  end
  while done < conc do socket.sleep(20) end
  local secs = now() - t0
  local n = per * conc * depth
  print(string.format("RESULT op=%s conc=%d depth=%d mode=%s requests=%d seconds=%.3f rps=%.0f",
    op, conc, depth, mode, n, secs, n / secs))
  for i = 1, conc do if dbs[i] ~= shared then dbs[i]:close() end end
  shared:close()
end)
if not ok then error(err) end
