-- lua5.4 bench/floor/floor.lua N [SIZE]: the callback echo's handler, driven N times
-- without sockets (see floor.c).
local dir = arg[0]:match("^(.-)[^/]*$")
local floor = assert(package.loadlib(dir .. "../build/floor.so", "luaopen_floor"))()
local socket = floor -- the same shape as examples/echo.lua's handler: socket.send(id, data)
local handler = function(id, data) socket.send(id, data) end
floor.run(tonumber(arg[1]), handler, tonumber(arg[2]) or 64)
