-- TCP echo server, callback style.
--   lua5.4 examples/echo.lua [port]        (default port 8888, 127.0.0.1 only)
-- Run from a source checkout after `./examples/demo.sh` (or with skysocket installed by luarocks).
local root = (arg and arg[0] or ""):match("^(.-)examples/[^/]*$") or ""
package.cpath = package.cpath .. ";" .. root .. "target/lua/?.so"
package.path = package.path .. ";" .. root .. "lua/?.lua;" .. root .. "lua/?/init.lua"

local socket = require "skysocket"

local port = tonumber(arg and arg[#arg]) or 8888

-- The benchmark runner asks for more sockets than the default 65,536 when it needs them.
local max = tonumber(os.getenv("SKYSOCKET_MAX_SOCKETS") or "")
if max and max > 65536 then socket.configure { max_sockets = max } end

socket.dispatch {
  accept = function(_, id) socket.start(id) end,
  data = function(id, data) socket.send(id, data) end,
}

local listener, host, bound = socket.listen("127.0.0.1", port)
if not listener then
  io.stderr:write("echo: ", host, "\n")
  os.exit(1)
end
socket.start(listener)
print(string.format("echo: listening on %s:%d (%s)", host, bound, socket.backend()))
io.stdout:flush()
socket.loop()
