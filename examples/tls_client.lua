-- TLS echo client (callback API): connects with certificate verification, sends lines,
-- prints the session and the echoes, and exits (status 1 on any failure).
--   lua5.4 examples/tls_client.lua ca.pem [port] [line ...]   (default port 8443)
local root = (arg and arg[0] or ""):match("^(.-)examples/[^/]*$") or ""
package.cpath = package.cpath .. ";" .. root .. "target/lua/?.so"

local socket = require "skysocket"

local ca = arg[1]
if not ca then
  io.stderr:write("usage: tls_client.lua ca.pem [port] [line ...]\n")
  os.exit(2)
end
local port = tonumber(arg[2]) or 8443
local lines = {}
for i = 3, #arg do lines[#lines + 1] = arg[i] end
if #lines == 0 then lines = { "hello", "over", "tls" } end
local expected = table.concat(lines, "\n") .. "\n"

local ctx, err = socket.tls_context { ca = ca, server_name = "localhost", alpn = "echo" }
if not ctx then
  io.stderr:write("tls_client: ", err, "\n")
  os.exit(1)
end
local id
id, err = socket.tls_connect("127.0.0.1", port, ctx)
if not id then
  io.stderr:write("tls_client: ", err, "\n")
  os.exit(1)
end

local received, failed = "", false
socket.timeout(5000, function()
  io.stderr:write("tls_client: timed out\n")
  failed = true
  socket.close(id, true)
  socket.exit()
end)

socket.start(id, {
  -- `open` comes only after the handshake succeeded (the server is verified).
  handshake = function(_, alpn)
    local i = socket.tls_info(id)
    print(string.format("tls: %s %s alpn=%s peer=%s", i.version, i.cipher, alpn, i.subject or "?"))
    socket.send(id, expected)
  end,
  data = function(_, data)
    received = received .. data
    if #received >= #expected then
      for line in received:gmatch("([^\n]*)\n") do print("echo: " .. line) end
      socket.close(id)
    end
  end,
  close = function() socket.exit() end,
  error = function(_, msg)
    io.stderr:write("tls_client: ", msg, "\n")
    failed = true
    socket.exit()
  end,
})
socket.loop()
if failed or received ~= expected then os.exit(1) end
