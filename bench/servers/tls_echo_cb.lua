-- TLS echo for the TLS benchmarks, skysocket's callback API (no coroutine per
-- connection): the handshake and encryption run in the engine, the callbacks see only
-- plaintext. The same work per connection as tlsbench's rustls ceiling plus the module.
--   lua5.4 bench/servers/tls_echo_cb.lua CERT KEY PORT
local socket = require "skysocket"

local cert, key, port = arg[1], arg[2], tonumber(arg[3]) or 0
local ctx = assert(socket.tls_context { mode = "server", cert = cert, key = key })

socket.dispatch {
  accept = function(_, id) socket.start(id) end,
  data = function(id, data) socket.send(id, data) end,
  -- error: a failed handshake or a reset; the engine has released the socket
}

local lid, ip, p = assert(socket.tls_listen("127.0.0.1", port, ctx))
socket.start(lid)
print(string.format("tls_echo_cb listening on %s:%d", ip, p))
io.stdout:flush()
socket.loop()
