-- echo_luv.lua: echo server on lua5.4 + luv (libuv), callback style.
--   lua5.4 echo_luv.lua PORT
-- Listens on 127.0.0.1:PORT and echoes every byte back. SIGTERM stops the
-- loop cleanly (so tools such as callgrind can write their output).
local uv = require "luv"

local port = tonumber(arg[#arg])
assert(port, "usage: lua5.4 echo_luv.lua PORT")

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", port))
assert(server:listen(4096, function(err)
  if err then return end
  local client = uv.new_tcp()
  if not server:accept(client) then
    client:close()
    return
  end
  client:nodelay(true)
  client:read_start(function(rerr, data)
    if rerr or not data then
      client:close()
    else
      client:write(data)
    end
  end)
end))

local sig = uv.new_signal()
sig:start("sigterm", function()
  uv.stop()
end)

uv.run()
