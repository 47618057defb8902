-- TLS echo peer for the concurrent TLS benchmarks: lua5.4 + Debian lua-sec (LuaSec 1.2
-- on OpenSSL) + LuaSocket's select, many connections at once. Handshakes are
-- non-blocking (`dohandshake` answers "wantread"/"wantwrite" and the loop waits for
-- that), so several handshakes overlap as they do in skysocket's server; sends block
-- (10 s timeout), which costs nothing for the 1-byte echo of the handshake benchmark.
--   lua5.4 bench/servers/echo_luasec_select.lua CERT KEY PORT
local socket = require "socket"
local ssl = require "ssl"

local cert, key, port = arg[1], arg[2], tonumber(arg[3])
local ctx = assert(ssl.newcontext { mode = "server", protocol = "any", certificate = cert,
  key = key, options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" } })

local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0)
print("listening on 127.0.0.1:" .. select(2, server:getsockname()))
io.stdout:flush()

local conns = {} -- wrapped socket -> { handshaking = bool, want = "read" | "write" }

local function drop(c)
  conns[c] = nil
  c:close()
end

local function echo(c)
  repeat
    local d, err, partial = c:receive(65536)
    d = d or partial
    if d and #d > 0 then
      c:settimeout(10)
      local ok = c:send(d)
      c:settimeout(0)
      if not ok then return drop(c) end
    end
    if err and err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then
      return drop(c)
    end
  until not c:dirty()
end

local function step(c, st)
  if st.handshaking then
    local ok, err = c:dohandshake()
    if ok then
      st.handshaking, st.want = false, "read"
    elseif err == "wantread" or err == "wantwrite" then
      st.want = err == "wantread" and "read" or "write"
      return
    else
      return drop(c)
    end
  end
  echo(c)
end

while true do
  local rs, ws = { server }, {}
  for c, st in pairs(conns) do
    if st.want == "write" then ws[#ws + 1] = c else rs[#rs + 1] = c end
  end
  local r, w = socket.select(rs, ws, 1)
  for _, list in ipairs { r, w } do
    for _, c in ipairs(list) do
      if c == server then
        local nc = server:accept()
        while nc do
          nc:setoption("tcp-nodelay", true)
          local wc = ssl.wrap(nc, ctx)
          if wc then
            wc:settimeout(0)
            conns[wc] = { handshaking = true, want = "read" }
          else
            nc:close()
          end
          nc = server:accept()
        end
      elseif conns[c] then
        step(c, conns[c])
      end
    end
  end
end
