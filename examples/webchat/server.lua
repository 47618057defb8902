-- Web chat: one process serves the page over HTTP and the chat over WebSocket on the
-- same port. Open http://127.0.0.1:8080/ in several browsers.
--   lua examples/webchat/server.lua [port] [host]
local socket = require "skysocket.socket"
local http = require "skysocket.http"
local websocket = require "skysocket.websocket"

local port, host = tonumber(arg[1]) or 8080, arg[2] or "127.0.0.1"
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local f = assert(io.open(dir .. "/index.html", "rb"))
local page = f:read("*a")
f:close()

local clients = {}   -- conn -> name
local function broadcast(text)
  for c in pairs(clients) do c:send(text) end
end

local function chat(conn)
  local name = "guest" .. conn.id
  clients[conn] = name
  broadcast("* " .. name .. " joined")
  while true do
    local msg = conn:read()
    if not msg then break end
    local nick = msg:match("^/nick (%w+)$")
    if nick then
      broadcast("* " .. clients[conn] .. " is now " .. nick)
      clients[conn] = nick
    elseif #msg > 0 then
      broadcast(clients[conn] .. ": " .. msg)
    end
  end
  clients[conn] = nil
  broadcast("* " .. name .. " left")
end

socket.run(function()
  local srv = assert(http.listen(host, port, function(req, res)
    if req.path == "/chat" then
      local conn = websocket.upgrade(req, res, { max_message = 4096 })
      if conn then chat(conn) end
    elseif req.path == "/" then
      return 200, page, { ["Content-Type"] = "text/html; charset=utf-8" }
    else
      return 404, "not found\n"
    end
  end))
  print("webchat on http://" .. srv.ip .. ":" .. srv.port .. "/")
  io.stdout:flush()
end)
