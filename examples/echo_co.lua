-- Coroutine echo server: lua5.4 examples/echo_co.lua [port]   (default 8888)
-- Twin of examples/echo.lua (callbacks); one coroutine per client. A client silent for
-- SKYSOCKET_IDLE_MS (default 60 s; 0: never) is disconnected; one that sends and never
-- reads the echo is dropped at the module's write limit (64 MiB queued).
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local port = tonumber(arg[1]) or 8888
local IDLE_MS = tonumber(os.getenv("SKYSOCKET_IDLE_MS") or "") or 60000

-- The benchmark runner asks for more sockets than the default 65,536 when it needs them.
local max = tonumber(os.getenv("SKYSOCKET_MAX_SOCKETS") or "")
if max and max > 65536 then require("skysocket").configure { max_sockets = max } end

socket.run(function()
  if IDLE_MS > 0 then socket.default_timeout(IDLE_MS) end -- every accepted socket
  local lid, ip, p = assert(socket.listen("127.0.0.1", port))
  print(string.format("echo_co listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, function(id, addr)
    socket.start(id)
    while true do
      local data = socket.read(id)
      if not data then break end
      socket.write(id, data)
    end
    socket.close(id)
  end)
end)
