-- Request/response over 2-byte length-prefixed frames.
--   server: lua5.4 examples/framed_rpc.lua [port]            (default 8891)
--   client: lua5.4 examples/framed_rpc.lua client [port] [n]
-- A request is "method arg"; methods: echo, upper, len, add (arg "a b"). The reply is
-- "ok result" or "err message". Requests on one connection are answered in order, so
-- a client may pipeline them.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local methods = {
  echo = function(a) return a end,
  upper = function(a) return a:upper() end,
  len = function(a) return tostring(#a) end,
  add = function(a)
    local x, y = a:match("^(%-?%d+)%s+(%-?%d+)$")
    if not x then error("add wants two integers", 0) end
    return string.format("%d", tonumber(x) + tonumber(y))
  end,
}

local function handle(req)
  local m, a = req:match("^(%S+)%s?(.*)$")
  local f = methods[m or ""]
  if not f then return "err unknown method " .. tostring(m) end
  local ok, r = pcall(f, a)
  return ok and ("ok " .. r) or ("err " .. tostring(r))
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
