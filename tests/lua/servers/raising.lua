-- A line server whose handler raises on "boom": for the descriptor-limit test of
-- test_examples.lua (a raising handler must close its connection). Prints
-- "raising listening on HOST:PORT"; answers "ok LINE" to any other line.
--   lua5.4 tests/lua/servers/raising.lua PORT
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

socket.sched.on_error(function() end) -- the failures are expected: keep the log short
socket.run(function()
  local lid, ip, p = assert(socket.listen("127.0.0.1", tonumber(arg[1]) or 0))
  print(string.format("raising listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, function(id)
    socket.start(id)
    local line = socket.readline(id)
    if line == "boom" then error("bad request") end
    if line then socket.write(id, "ok " .. line .. "\n") end
    socket.close(id)
  end)
end)
