-- TLS echo server (coroutines): lua5.4 examples/tls_echo.lua cert.pem key.pem [port]
-- (default port 8443). The handshake and all encryption run inside the engine: the
-- loop below only ever sees plaintext. See README "TLS" for making a test certificate.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local cert, key = arg[1], arg[2]
if not (cert and key) then
  io.stderr:write("usage: tls_echo.lua cert.pem key.pem [port]\n")
  os.exit(2)
end
local port = tonumber(arg[3]) or 8443

local ctx = assert(socket.tls_context { mode = "server", cert = cert, key = key, alpn = { "echo", "http/1.1" } })

socket.run(function()
  local lid, ip, p = assert(socket.tls_listen("127.0.0.1", port, ctx))
  print(string.format("tls_echo listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, function(id, addr)
    socket.start(id)
    local ok, err = socket.handshake(id, 10000)
    if not ok then
      io.stderr:write("tls_echo: ", addr, ": ", tostring(err), "\n")
      socket.close(id)
      return
    end
    while true do
      local data = socket.read(id)
      if not data then break end
      socket.write(id, data)
    end
    socket.close(id) -- flushes, then sends close_notify
  end)
end)
