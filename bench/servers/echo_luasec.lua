-- TLS echo peer for the TLS benchmarks: lua5.4 + Debian lua-sec (LuaSec 1.2 on
-- OpenSSL) + LuaSocket's select, non-blocking, every connection in one loop.
--   lua5.4 bench/servers/echo_luasec.lua CERT KEY PORT
local socket = require "socket"
local ssl = require "ssl"

local cert, key, port = arg[1], arg[2], tonumber(arg[3])
local params = { mode = "server", protocol = "any", certificate = cert, key = key,
  options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" } }
local ctx = assert(ssl.newcontext(params))

local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0)
print("listening on 127.0.0.1:" .. select(2, server:getsockname()))
io.stdout:flush()

local conns = {}     -- list of sockets being served (the server first)
local state = {}     -- conn -> "hs" | "data"
local pending = {}   -- conn -> unsent bytes
local recvt, sendt = { server }, {}

local function drop(c)
  for i, x in ipairs(recvt) do if x == c then table.remove(recvt, i) break end end
  for i, x in ipairs(sendt) do if x == c then table.remove(sendt, i) break end end
  state[c], pending[c] = nil, nil
  c:close()
end

local function want_send(c, on)
  for i, x in ipairs(sendt) do
    if x == c then if not on then table.remove(sendt, i) end return end
  end
  if on then sendt[#sendt + 1] = c end
end

local function flush(c)
  local data = pending[c]
  if not data then return true end
  local i, err, last = c:send(data)
  local done = i or last or 0
  if done >= #data then pending[c] = nil; want_send(c, false); return true end
  if err == "closed" then drop(c) return false end
  pending[c] = data:sub(done + 1)
  want_send(c, true)
  return true
end

local function serve(c)
  if state[c] == "hs" then
    local ok, err = c:dohandshake()
    if ok then state[c] = "data"
    elseif err == "wantread" then want_send(c, false)
    elseif err == "wantwrite" then want_send(c, true)
    else drop(c) end
    return
  end
  if pending[c] then if not flush(c) then return end end
  while not pending[c] do
    local d, err, partial = c:receive(65536)
    d = d or partial
    if d and #d > 0 then
      pending[c] = d
      if not flush(c) then return end
    end
    if err == "closed" then drop(c) return end
    if not d or #d == 0 or err then break end
  end
end

while true do
  local readable, writable = socket.select(recvt, sendt, 1)
  for _, c in ipairs(readable) do
    if c == server then
      while true do
        local nc = server:accept()
        if not nc then break end
        nc:setoption("tcp-nodelay", true)
        local tc = assert(ssl.wrap(nc, ctx))
        tc:settimeout(0)
        state[tc] = "hs"
        recvt[#recvt + 1] = tc
        serve(tc)
      end
    elseif state[c] then
      serve(c)
    end
  end
  for _, c in ipairs(writable) do
    if state[c] then serve(c) end
  end
  -- LuaSec may hold decrypted bytes that select cannot see.
  for _, c in ipairs(recvt) do
    if c ~= server and state[c] == "data" and c:dirty() then serve(c) end
  end
end
