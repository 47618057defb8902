-- A Redis RESP subset server: lua5.4 examples/resp.lua [port]   (default 6380)
-- Commands: PING [msg], ECHO msg, SET k v, GET k, DEL k..., EXISTS k..., INCR k
-- (and COMMAND, answered with an empty array for redis-cli). Requests are RESP arrays
-- or inline commands (ended by LF or CRLF); pipelined requests are answered in order,
-- the replies to the requests that arrived together in one write.
-- Try: redis-cli -p 6380 set x 41 ; redis-cli -p 6380 incr x
--
-- Defences (it serves strangers): lengths must be plain decimal integers; a bulk string
-- is at most MAX_BULK bytes and a request at most MAX_REQUEST bytes and MAX_ARGS
-- arguments; a malformed request gets "-ERR Protocol error: ..." and the connection
-- is closed (as Redis does); names echoed in errors are cut to 64 printable bytes; a
-- client silent for SKYSOCKET_IDLE_MS (default 60 s) in the middle of or between
-- requests is disconnected; replies a client does not read are bounded by the
-- module's write limit and budget (the client is dropped).
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"
local raw = require "skysocket"

local port = tonumber(arg[1]) or 6380
local IDLE_MS = tonumber(os.getenv("SKYSOCKET_IDLE_MS") or "") or 60000 -- 0: none
local MAX_BULK = 8 * 1024 * 1024
local MAX_REQUEST = 32 * 1024 * 1024
local MAX_ARGS = 65536
local db = {}

local function bulk(s)
  if s == nil then return "$-1\r\n" end
  return "$" .. #s .. "\r\n" .. s .. "\r\n"
end
local function int(digits) return ":" .. digits .. "\r\n" end
local function err(m) return "-ERR " .. m .. "\r\n" end

-- A client-supplied name, safe to put in a one-line error: at most 64 bytes, anything
-- but printable ASCII (CR, LF, ...) replaced.
local function quote(s)
  local cut = #s > 64
  s = s:sub(1, 64):gsub("[^\32-\126]", "?"):gsub("'", "?")
  return "'" .. s .. (cut and "...'" or "'")
end

local function arity(name) return err("wrong number of arguments for '" .. name .. "' command") end

---------------------------------------------------------------- 64-bit integers
-- Redis integers are signed 64-bit. Lua 5.1 and LuaJIT have only doubles, so INCR
-- works on the decimal strings: exact on every Lua version, with Redis's overflow
-- error instead of a wrap-around.
local INT_MAX, INT_MIN_ABS = "9223372036854775807", "9223372036854775808"

-- The canonical decimal form Redis accepts ("0", "-12", no "+", no leading zeros).
local function is_int(s)
  if s == "0" then return true end
  local neg, digits = s:match("^(%-?)([1-9]%d*)$")
  if not digits then return false end
  local bound = neg == "-" and INT_MIN_ABS or INT_MAX
  return #digits < #bound or (#digits == #bound and digits <= bound)
end

-- Magnitude plus one / minus one, on digit strings (the magnitude is >= 1 for minus).
local function plus_one(d)
  local i = #d
  while i > 0 and d:sub(i, i) == "9" do i = i - 1 end
  if i == 0 then return "1" .. string.rep("0", #d) end
  return d:sub(1, i - 1) .. string.char(d:byte(i) + 1) .. string.rep("0", #d - i)
end
local function minus_one(d)
  local i = #d
  while d:sub(i, i) == "0" do i = i - 1 end
  local r = d:sub(1, i - 1) .. string.char(d:byte(i) - 1) .. string.rep("9", #d - i)
  return (r:gsub("^0+(%d)", "%1"))
end

-- s + 1 for a valid integer string, or nil on overflow.
local function incr(s)
  if s:sub(1, 1) == "-" then
    local m = minus_one(s:sub(2))
    return m == "0" and "0" or "-" .. m
  end
  local r = s == "0" and "1" or plus_one(s)
  if is_int(r) then return r end
  return nil
end

---------------------------------------------------------------- commands

local commands = {}
function commands.PING(a)
  if #a > 2 then return arity("ping") end
  if a[2] then return bulk(a[2]) end
  return "+PONG\r\n"
end
function commands.ECHO(a) if #a ~= 2 then return arity("echo") end return bulk(a[2]) end
function commands.SET(a)
  if #a ~= 3 then return arity("set") end
  db[a[2]] = a[3]
  return "+OK\r\n"
end
function commands.GET(a) if #a ~= 2 then return arity("get") end return bulk(db[a[2]]) end
function commands.DEL(a)
  if #a < 2 then return arity("del") end
  local n = 0
  for i = 2, #a do if db[a[i]] then db[a[i]] = nil; n = n + 1 end end
  return int(n)
end
function commands.EXISTS(a)
  if #a < 2 then return arity("exists") end
  local n = 0
  for i = 2, #a do if db[a[i]] then n = n + 1 end end
  return int(n)
end
function commands.INCR(a)
  if #a ~= 2 then return arity("incr") end
  local v = db[a[2]] or "0"
  if not is_int(v) then return err("value is not an integer or out of range") end
  local r = incr(v)
  if not r then return err("increment or decrement would overflow") end
  db[a[2]] = r
  return int(r)
end
function commands.COMMAND() return "*0\r\n" end

---------------------------------------------------------------- requests

-- Replies to requests that arrived together are gathered and written at once: before
-- the connection waits for more input, or once GATHER bytes are pending, the replies
-- go out in one write. c = { id = socket id, out = replies not yet written, size =
-- their bytes, failed = a write failed (the peer is gone or was dropped) }.
local GATHER = 64 * 1024

local function flush(c)
  local out = c.out
  if #out > 0 then
    if not socket.write(c.id, #out == 1 and out[1] or table.concat(out)) then c.failed = true end
    c.out, c.size = {}, 0
  end
end

local function reply(c, r)
  local out = c.out
  out[#out + 1] = r
  c.size = c.size + #r
  if c.size >= GATHER then flush(c) end
end

-- A line ended by LF (a CR before it is removed): from the buffer if it is complete
-- there, else after flushing the pending replies. Returns line, had_cr; nil, why for
-- a protocol error; nil at the end of the stream or on a timeout.
local function line(c)
  local l = raw.readline(c.id, "\n")
  if not l then
    flush(c)
    local e
    l, e = socket.readline(c.id, "\n")
    if l == nil and e == "line too long" then return nil, "too big request line" end
    if not l then return nil end -- closed, or timed out
  end
  if l:sub(-1) == "\r" then return l:sub(1, -2), true end
  return l, false
end

-- Exactly n bytes, flushing first if they are not buffered yet; nil if none.
local function bytes(c, n)
  local s = raw.readn(c.id, n)
  if s then return s end
  flush(c)
  return socket.read(c.id, n) or nil
end

-- A length after its type byte: a plain decimal integer (no "0x", "1e1", "1.5", "+").
local function length(h, kind)
  if h:sub(1, 1) ~= kind then return nil end
  local digits = h:match("^.(%-?%d+)$")
  if not digits or #digits > 12 then return nil end
  return tonumber(digits)
end

-- Read one request: an array of strings ({} : nothing to do); nil, why for a protocol
-- error (reply and close); nil at the end of the stream or on a timeout.
local function request(c)
  local l, cr = line(c)
  if not l then return nil, cr end
  if l:sub(1, 1) ~= "*" then -- inline command
    local a = {}
    for w in l:gmatch("%S+") do a[#a + 1] = w end
    return a
  end
  local n = length(l, "*")
  if not n or not cr or n > MAX_ARGS then return nil, "invalid multibulk length" end
  local a, total = {}, 0
  for i = 1, n do
    local h, hcr = line(c)
    if not h then return nil, hcr end
    if h:sub(1, 1) ~= "$" then return nil, "expected '$', got " .. quote(h:sub(1, 1)) end
    local len = length(h, "$")
    if not len or not hcr or len < 0 or len > MAX_BULK then return nil, "invalid bulk length" end
    total = total + len + 16 -- and a little for each argument
    if total > MAX_REQUEST then return nil, "request too large" end
    local s = bytes(c, len + 2)
    if not s then return nil end
    if s:sub(-2) ~= "\r\n" then return nil, "expected CRLF after a bulk string" end
    a[i] = s:sub(1, len)
  end
  return a
end

local function serve(id)
  socket.start(id)
  local c = { id = id, out = {}, size = 0, failed = false }
  while not c.failed do
    local a, e = request(c)
    if not a then
      if e then reply(c, err("Protocol error: " .. e)) end
      break
    end
    if #a > 0 then
      local f = commands[a[1]:upper()]
      reply(c, f and f(a) or err("unknown command " .. quote(a[1])))
    end
  end
  flush(c)
  socket.close(id)
end

socket.run(function()
  if IDLE_MS > 0 then socket.default_timeout(IDLE_MS) end
  local lid, ip, p = assert(socket.listen("127.0.0.1", port))
  print(string.format("resp listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, serve)
end)
