-- UDP echo over IPv4 and IPv6: lua5.4 examples/udp_echo.lua [port]   (default 8890)
-- Listens on 127.0.0.1:port and [::1]:port; each datagram goes back to its sender.
-- "udp_echo.lua client [port] [host]" sends one datagram and prints the answer.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"

if arg[1] == "client" then
  local port = tonumber(arg[2]) or 8890
  local host = arg[3] or "127.0.0.1"
  local ok = socket.run(function()
    local answer
    local id = assert(socket.udp_dial(host, port, function(data) answer = data end))
    socket.sendto(id, nil, "ping from " .. host)
    for _ = 1, 200 do
      if answer then break end
      socket.sleep(10)
    end
    socket.close(id)
    print(answer or "no answer")
    return answer ~= nil
  end)
  os.exit(ok and 0 or 1)
end

local port = tonumber(arg[1]) or 8890
socket.run(function()
  for _, host in ipairs { "127.0.0.1", "::1" } do
    local id
    id = socket.udp_listen(host, port, function(data, from)
      socket.sendto(id, from, data)
    end)
    if id then
      print(string.format("udp_echo on %s port %d", host, port))
    else
      print("udp_echo: no " .. host .. " here")
    end
  end
  io.stdout:flush()
end)
