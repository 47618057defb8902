-- TLS echo peer for the TLS benchmarks: lua5.4 + Debian lua-sec (LuaSec 1.2 on
-- OpenSSL) + LuaSocket. One connection at a time (the benchmark's clients are
-- sequential): blocking accept/handshake/send, and LuaSocket's select to wait for
-- input. This is LuaSec's best case; a server juggling many connections with select
-- or copas only adds work.
--   lua5.4 bench/servers/echo_luasec.lua CERT KEY PORT
local socket = require "socket"
local ssl = require "ssl"

local cert, key, port = arg[1], arg[2], tonumber(arg[3])
local ctx = assert(ssl.newcontext { mode = "server", protocol = "any", certificate = cert,
  key = key, options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" } })

local server = assert(socket.bind("127.0.0.1", port))
print("listening on 127.0.0.1:" .. select(2, server:getsockname()))
io.stdout:flush()

local function serve(c)
  c:settimeout(10)
  if not c:dohandshake() then return end
  while true do
    if not c:dirty() then socket.select({ c }, nil, 10) end
    c:settimeout(0)
    local d, err, partial = c:receive(65536)
    c:settimeout(10)
    d = d or partial
    if d and #d > 0 and not c:send(d) then return end
    if err and err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then return end
  end
end

while true do
  local nc = server:accept()
  if nc then
    nc:setoption("tcp-nodelay", true)
    local c = ssl.wrap(nc, ctx)
    if c then serve(c); c:close() else nc:close() end
  end
end
