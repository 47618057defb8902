-- skysocket.socket behaves as Skynet's skynet.socket where Skynet code depends on it
-- (issue 14): tables for write, send on a dialed UDP socket, pause semantics, long
-- lines, raised failures, listen(""), a second start, readall on a drained socket,
-- Skynet's netstat fields.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local T = require "testlib"
local tests = {}

local run = T.run_co

-- A listener whose accept handler is `handler(id)` (after start); returns lid, port.
local function server(handler)
  local lid, _, port = socket.listen("127.0.0.1", 0)
  socket.start(lid, function(id)
    socket.start(id)
    handler(id)
  end)
  return lid, port
end

function tests.write_takes_a_table_and_udp_write_goes_to_the_dialed_peer()
  run(function()
    local got
    local lid, port = server(function(id)
      got = socket.read(id, 11)
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    socket.write(c, { "hello", " ", "world" })
    T.eq(socket.read(c), false, "server closed")
    socket.close(c)
    T.eq(got, "hello world", "gathered write")
    local echoed
    local u
    u = socket.udp(function(data, from) socket.sendto(u, from, data) end, "127.0.0.1", 0)
    local uport
    for _, s in ipairs(raw.info()) do
      if s.id == u then uport = tonumber(s.sock:match(":(%d+)$")) end
    end
    local d = socket.udp_dial("127.0.0.1", uport, function(data) echoed = data end)
    T.eq(socket.write(d, "datagram"), true, "write on a dialed UDP socket")
    for _ = 1, 100 do
      if echoed then break end
      socket.sleep(10)
    end
    T.eq(echoed, "datagram", "datagram echoed")
    socket.close(d)
    socket.close(u)
    socket.close(lid)
  end)
end

function tests.read_and_start_resume_a_paused_socket_and_a_second_start_raises()
  run(function()
    local lid, port = server(function(id)
      socket.write(id, "one\n")
      socket.sleep(50)
      socket.write(id, "two\n")
      socket.sleep(50)
      socket.write(id, "three\n")
      socket.read(id) -- until the client closes
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    socket.settimeout(c, 2000)
    T.eq(socket.readline(c), "one", "first line")
    socket.pause(c)
    -- A read on the paused socket resumes it (it would time out otherwise).
    T.eq(socket.readline(c), "two", "read resumed the paused socket")
    socket.pause(c)
    T.eq(socket.start(c), c, "start on a paused socket resumes it")
    T.eq(socket.readline(c), "three", "third line")
    local ok, err = pcall(socket.start, c)
    T.eq(ok, false, "a second start on an active socket raises")
    T.truthy(tostring(err):find("socket is not closed", 1, true), tostring(err))
    socket.close(c)
    socket.close(lid)
  end)
end

function tests.readline_returns_lines_longer_than_the_read_buffer()
  run(function()
    local long = string.rep("x", 300 * 1024)
    local lid, port = server(function(id)
      socket.write(id, long .. "\nshort\n")
      socket.read(id)
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    local line = socket.readline(c)
    T.eq(line and #line, #long, "300 KiB line")
    T.eq(socket.readline(c), "short", "next line")
    socket.close(c)
    socket.close(lid)
  end, 15000)
end

function tests.a_line_past_64_mib_is_refused()
  run(function()
    local lid, port = server(function(id)
      local chunk = string.rep("y", 1024 * 1024)
      for _ = 1, 65 do
        if not socket.write(id, chunk) then break end
      end
      socket.read(id)
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    local line, err = socket.readline(c)
    T.eq(line, nil, "no line")
    T.eq(err, "line too long", "reason")
    socket.close(c)
    socket.close(lid)
  end, 30000)
end

function tests.failures_raise_as_in_skynet()
  run(function()
    local lid, _, port = socket.listen("127.0.0.1", 0)
    local ok, err = pcall(function() local id = socket.listen("127.0.0.1", port); return id end)
    T.eq(ok, false, "listen on a taken port raises")
    T.truthy(tostring(err):find("listen", 1, true), tostring(err))
    T.truthy(tostring(err):find("test_skynet_compat.lua", 1, true), "raised at the caller: " .. tostring(err))
    ok, err = pcall(socket.udp_connect, 999999, "127.0.0.1", 9)
    T.eq(ok, false, "udp_connect on an unknown id raises")
    ok, err = pcall(socket.read, lid, -1)
    T.eq(ok, false, "bad size raises")
    T.truthy(tostring(err):find("bad argument #2 to 'read'", 1, true), tostring(err))
    ok, err = pcall(socket.readline, lid, "")
    T.truthy(tostring(err):find("bad argument #2 to 'readline'", 1, true), tostring(err))
    ok, err = pcall(socket.resolve, "")
    T.eq(ok, false, "resolve of an empty name raises")
    T.truthy(socket.resolve("127.0.0.1")[1] == "127.0.0.1", "resolve returns addresses")
    socket.close(lid)
  end)
end

function tests.listen_on_an_empty_host_is_every_interface_and_netstat_has_skynet_fields()
  run(function()
    local lid, ip = socket.listen("", 0)
    T.eq(ip, "0.0.0.0", "every interface")
    socket.start(lid, function(id) socket.start(id); socket.read(id); socket.close(id) end)
    local port
    for _, s in ipairs(raw.info()) do
      if s.id == lid then port = tonumber(s.sock:match(":(%d+)$")) end
    end
    local c = assert(socket.open("127.0.0.1", port))
    socket.write(c, "x")
    local seen = {}
    for _, s in ipairs(socket.netstat()) do
      seen[s.type] = (seen[s.type] or 0) + 1
      T.eq(s.address, 0, "address")
      if s.type ~= "LISTEN" then
        T.eq(type(s.reading), "boolean", "reading")
        T.eq(type(s.writing), "boolean", "writing")
      end
    end
    T.eq(seen.LISTEN, 1, "one LISTEN")
    T.truthy((seen.TCP or 0) >= 1, "TCP entries")
    socket.close(c)
    socket.close(lid)
  end)
end

function tests.readall_on_a_closed_drained_socket_is_false()
  run(function()
    local lid, port = server(function(id)
      socket.write(id, "bye")
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    T.eq(socket.readall(c), "bye", "everything until the close")
    T.eq(socket.readall(c), false, "then false, as Skynet")
    socket.close(c)
    socket.close(lid)
  end)
end

return tests
