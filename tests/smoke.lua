-- Smoke test of an installed skysocket: require it and echo one message.
local socket = require "skysocket"
socket.dispatch {
  accept = function(_, id) socket.start(id) end,
  data = function(id, s) socket.send(id, s) end,
}
local lid, _, port = assert(socket.listen("127.0.0.1", 0))
socket.start(lid)
local got
local cid = assert(socket.connect("127.0.0.1", port))
socket.start(cid, {
  open = function(id) socket.send(id, "smoke\0test") end,
  data = function(id, s) got = s; socket.close(id); socket.close(lid); socket.exit() end,
})
socket.timeout(5000, function() socket.exit() end)
socket.loop()
assert(got == "smoke\0test", "echo failed: " .. tostring(got))
-- The coroutine layer from the same tree.
local co = require "skysocket.socket"
local echoed
local ok, err = co.run(function()
  local l, _, p = assert(co.listen("127.0.0.1", 0))
  co.start(l, function(id)
    co.start(id)
    local line = co.readline(id)
    co.write(id, line .. "\n")
    co.close(id)
  end)
  local c = assert(co.open("127.0.0.1", p))
  co.write(c, "coroutine smoke\n")
  echoed = co.readline(c)
  co.close(c)
  co.close(l)
end)
assert(ok, err)
assert(echoed == "coroutine smoke", "coroutine echo failed: " .. tostring(echoed))
-- Every Lua module of the rock is installed and loads.
for _, m in ipairs { "sched", "compat", "http", "websocket", "channel", "redis", "skynet" } do
  assert(require("skysocket." .. m), m)
end
assert(socket.tls, "built with TLS")
print("smoke ok: " .. _VERSION .. (jit and (" " .. jit.version) or "") .. ", " .. socket.backend())
print("1 passed, 0 failed")
