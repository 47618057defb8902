-- A Redis RESP subset server: lua5.4 examples/resp.lua [port]   (default 6380)
-- Commands: PING [msg], ECHO msg, SET k v, GET k, DEL k..., EXISTS k..., INCR k
-- (and COMMAND, answered with an empty array for redis-cli). Requests are RESP arrays
-- or inline commands; pipelined requests are answered in order.
-- Try: redis-cli -p 6380 set x 41 ; redis-cli -p 6380 incr x
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local port = tonumber(arg[1]) or 6380
local db = {}

local function bulk(s)
  if s == nil then return "$-1\r\n" end
  return "$" .. #s .. "\r\n" .. s .. "\r\n"
end
local function int(n) return string.format(":%d\r\n", n) end
local function err(m) return "-ERR " .. m .. "\r\n" end

local commands = {}
function commands.PING(a) if a[2] then return bulk(a[2]) end return "+PONG\r\n" end
function commands.ECHO(a) if not a[2] then return err("wrong number of arguments for 'echo'") end return bulk(a[2]) end
function commands.SET(a)
  if #a ~= 3 then return err("wrong number of arguments for 'set'") end
  db[a[2]] = a[3]
  return "+OK\r\n"
end
function commands.GET(a) return bulk(db[a[2] or ""]) end
function commands.DEL(a)
  local n = 0
  for i = 2, #a do if db[a[i]] then db[a[i]] = nil; n = n + 1 end end
  return int(n)
end
function commands.EXISTS(a)
  local n = 0
  for i = 2, #a do if db[a[i]] then n = n + 1 end end
  return int(n)
end
function commands.INCR(a)
  local k = a[2]
  if not k then return err("wrong number of arguments for 'incr'") end
  local v = db[k] or "0"
  if not v:match("^%-?%d+$") then return err("value is not an integer or out of range") end
  v = tonumber(v) + 1
  db[k] = string.format("%d", v)
  return int(v)
end
function commands.COMMAND() return "*0\r\n" end

-- Read one request: returns an array of strings, or nil at end of stream.
local function request(id)
  local line = socket.readline(id, "\r\n")
  if not line then return nil end
  if line:sub(1, 1) ~= "*" then -- inline command
    local a = {}
    for w in line:gmatch("%S+") do a[#a + 1] = w end
    return a
  end
  local n = tonumber(line:sub(2))
  if not n or n < 0 or n > 1024 then return nil, "bad array length" end
  local a = {}
  for i = 1, n do
    local h = socket.readline(id, "\r\n")
    local len = h and h:sub(1, 1) == "$" and tonumber(h:sub(2))
    if not len or len < 0 or len > 512 * 1024 * 1024 then return nil, "bad bulk header" end
    local s = socket.read(id, len + 2)
    if not s then return nil end
    a[i] = s:sub(1, len)
  end
  return a
end

socket.run(function()
  local lid, ip, p = assert(socket.listen("127.0.0.1", port))
  print(string.format("resp listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, function(id)
    socket.start(id)
    while true do
      local a, e = request(id)
      if not a then
        if e then socket.write(id, err("Protocol error: " .. e)) end
        break
      end
      if #a > 0 then
        local f = commands[a[1]:upper()]
        socket.write(id, f and f(a) or err("unknown command '" .. a[1] .. "'"))
      end
    end
    socket.close(id)
  end)
end)
