-- Callback echo that does SKYSOCKET_SPIN iterations of an empty loop per message
-- (default 0): extra server user time at a known instruction cost, to measure how
-- pingpong throughput falls with a server's user time per message (bench/floor/spin.sh).
--   lua5.4 bench/servers/echo_spin.lua PORT
local socket = require "skysocket"
local port = assert(tonumber(arg[1]), "usage: echo_spin.lua PORT")
local spin = tonumber(os.getenv("SKYSOCKET_SPIN") or "") or 0
local max = tonumber(os.getenv("SKYSOCKET_MAX_SOCKETS") or "")
if max and max > 65536 then socket.configure { max_sockets = max } end
local send = socket.send
socket.dispatch {
  accept = function(_, id) socket.start(id) end,
  data = function(id, data)
    for _ = 1, spin do end
    send(id, data)
  end,
}
local lid = assert(socket.listen("127.0.0.1", port))
socket.start(lid)
socket.loop()
