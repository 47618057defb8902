-- Request/response over 2-byte length-prefixed frames.
--   server: lua5.4 examples/framed_rpc.lua [port]            (default 8891)
--   client: lua5.4 examples/framed_rpc.lua client [port] [n]
-- A request is "method arg"; methods: echo, upper, len, add (arg "a b"). The reply is
-- "ok result" or "err message". Requests on one connection are answered in order, so
-- a client may pipeline them.
--
-- Defences (it serves strangers): every reply fits a frame (a result too large for
-- one is answered "err reply too large", so the connection and the requests pipelined
-- behind stay intact); names echoed in errors are cut to 64 printable bytes; add takes
-- integers of at most 15 digits (exact on every Lua version, no wrap-around); an
-- unexpected failure in a method answers "err internal error" and is logged here,
-- never sent to the client; a client silent for SKYSOCKET_IDLE_MS (default 60 s) is
-- disconnected; replies it does not read are bounded by the module's write limit.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local MAX_FRAME = 65535 -- the 2-byte header's limit
local IDLE_MS = tonumber(os.getenv("SKYSOCKET_IDLE_MS") or "") or 60000 -- 0: none

-- An error meant for the client (anything else raised by a method is a bug).
local Refusal = {}
local function refuse(msg) error(setmetatable({ msg = msg }, Refusal), 0) end

local function quote(s)
  local cut = #s > 64
  return (s:sub(1, 64):gsub("[^\32-\126]", "?")) .. (cut and "..." or "")
end

local methods = {
  echo = function(a) return a end,
  upper = function(a) return a:upper() end,
  len = function(a) return tostring(#a) end,
  add = function(a)
    local x, y = a:match("^(%-?%d+)%s+(%-?%d+)$")
    if not x then refuse("add wants two integers") end
    if #x:gsub("^%-", "") > 15 or #y:gsub("^%-", "") > 15 then
      refuse("add takes integers of at most 15 digits")
    end
    -- |x + y| < 2 * 10^15 < 2^53: exact in a double and in a 5.3+ integer.
    local sum = tonumber(x) + tonumber(y)
    if sum == 0 then sum = 0 end -- no "-0"
    return string.format("%.0f", sum)
  end,
}

local function handle(req)
  local m, a = req:match("^(%S+)%s?(.*)$")
  if not m then return "err empty request" end
  local f = methods[m]
  if not f then return "err unknown method " .. quote(m) end
  local ok, r = pcall(f, a)
  if not ok then
    if getmetatable(r) == Refusal then return "err " .. r.msg end
    io.stderr:write("framed_rpc: method ", m, " failed: ", tostring(r), "\n")
    return "err internal error"
  end
  r = "ok " .. r
  if #r > MAX_FRAME then return "err reply too large" end
  return r
end

if arg[1] == "client" then
  local port = tonumber(arg[2]) or 8891
  local n = tonumber(arg[3]) or 3
  local ok = socket.run(function()
    local id = assert(socket.open("127.0.0.1", port))
    socket.framed(id)
    local reqs = { "echo hello", "upper skysocket", "add 40 2", "len " .. string.rep("x", 1000), "nope" }
    for i = 1, n do socket.sendframe(id, reqs[(i - 1) % #reqs + 1]) end -- pipelined
    for _ = 1, n do print(assert(socket.readframe(id))) end
    socket.close(id)
    return true
  end)
  os.exit(ok and 0 or 1)
end

local port = tonumber(arg[1]) or 8891
socket.run(function()
  local lid, ip, p = assert(socket.listen("127.0.0.1", port))
  print(string.format("framed_rpc listening on %s:%d", ip, p))
  io.stdout:flush()
  if IDLE_MS > 0 then socket.default_timeout(IDLE_MS) end
  socket.start(lid, function(id)
    socket.start(id)
    socket.framed(id)
    while true do
      local req = socket.readframe(id)
      if not req then break end
      socket.sendframe(id, handle(req))
    end
    socket.close(id)
  end)
end)
