-- TCP echo server, callback style.
--   lua5.4 examples/echo.lua [port]        (default port 8888, 127.0.0.1 only)
-- Run from a source checkout after `./examples/demo.sh` (or with skysocket installed by luarocks).
local root = (arg and arg[0] or ""):match("^(.-)examples/[^/]*$") or ""
package.cpath = package.cpath .. ";" .. root .. "target/lua/?.so"
package.path = package.path .. ";" .. root .. "lua/?.lua;" .. root .. "lua/?/init.lua"

local socket = require "skysocket"

local port = tonumber(arg and arg[#arg]) or 8888
-- A client that sends nothing for SKYSOCKET_IDLE_MS (default 60 s; 0: never) is
-- disconnected. One that sends and never reads the echo is dropped by the module's
-- write limit (64 MiB queued per socket, 256 MiB in all: see configure).
local IDLE_MS = tonumber(os.getenv("SKYSOCKET_IDLE_MS") or "") or 60000

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

-- Idle sweep, off the data path: four times per IDLE_MS, a socket whose byte count
-- read has not moved for four sweeps is closed.
if IDLE_MS > 0 then
  local seen = {} -- id -> { bytes read, sweeps without progress }
  local function sweep()
    local now = {}
    for _, s in ipairs(socket.info()) do
      if s.type == "tcp" and s.id ~= listener then
        local old = seen[s.id]
        local still = old and old[1] == s.read and old[2] + 1 or 0
        if still >= 4 then
          socket.close(s.id, true)
        else
          now[s.id] = { s.read, still }
        end
      end
    end
    seen = now
    socket.timeout(IDLE_MS / 4, sweep)
  end
  socket.timeout(IDLE_MS / 4, sweep)
end
print(string.format("echo: listening on %s:%d (%s)", host, bound, socket.backend()))
io.stdout:flush()
socket.loop()
