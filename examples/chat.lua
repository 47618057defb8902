-- Line chat room: lua5.4 examples/chat.lua [port]   (default 8889)
-- Every line a client sends is broadcast to all clients as "<name>: line".
-- "/nick NAME" renames, "/quit" leaves. Slow-client policy: a client whose write
-- queue passes SLOW_KB (reported by the engine's write warning) is disconnected,
-- so one stalled reader cannot make the server's memory grow without bound.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

local port = tonumber(arg[1]) or 8889
local SLOW_KB = tonumber(arg[2]) or 1024   -- the first warning comes at 1 MiB

local clients = {}   -- id -> name

local function broadcast(line, except)
  for id in pairs(clients) do
    if id ~= except then socket.write(id, line .. "\n") end
  end
end

local function session(id, addr)
  socket.start(id)
  local name = addr
  clients[id] = name
  socket.warning(id, function(_, kb)
    if kb >= SLOW_KB and clients[id] then
      clients[id] = nil
      socket.shutdown(id) -- drop its queue: the reader below sees the close
      broadcast("* " .. name .. " was too slow and got disconnected")
    end
  end)
  socket.write(id, "* welcome " .. name .. "\n")
  broadcast("* " .. name .. " joined", id)
  while true do
    local line = socket.readline(id)
    if not line then break end
    line = line:gsub("\r$", "")
    local nick = line:match("^/nick%s+(%S+)")
    if nick then
      broadcast("* " .. name .. " is now " .. nick)
      name = nick
      clients[id] = name
    elseif line == "/quit" then
      break
    elseif clients[id] then
      broadcast(name .. ": " .. line)
    end
  end
  if clients[id] then
    clients[id] = nil
    broadcast("* " .. name .. " left")
  end
  socket.close(id)
end

socket.run(function()
  local lid, ip, p = assert(socket.listen("127.0.0.1", port))
  print(string.format("chat listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, session)
end)
