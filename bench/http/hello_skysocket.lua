-- wrk target: skysocket.http answering every request with a 13-byte body.
--   lua5.4 bench/http/hello_skysocket.lua PORT
local socket = require "skysocket.socket"
local http = require "skysocket.http"
local port = tonumber(arg[1]) or 8080
local HEADERS = { ["Content-Type"] = "text/plain" }
socket.run(function()
  assert(http.listen("127.0.0.1", port, function()
    return 200, "Hello, World!", HEADERS
  end, { header_timeout = 60000 }))
end)
