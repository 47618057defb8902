-- wrk target: lua-http (Debian lua-http, on cqueues) with the same 13-byte body.
--   lua5.1 bench/http/hello_luahttp.lua PORT  (Debian has lua-http's fifo for 5.1/5.2 only)
local server = require "http.server"
local headers = require "http.headers"
local port = tonumber(arg[1]) or 8080
local srv = assert(server.listen {
  host = "127.0.0.1", port = port,
  onstream = function(_, stream)
    assert(stream:get_headers())
    local h = headers.new()
    h:append(":status", "200")
    h:append("content-type", "text/plain")
    h:append("content-length", "13")
    stream:write_headers(h, false)
    stream:write_chunk("Hello, World!", true)
  end,
})
assert(srv:listen())
assert(srv:loop())
