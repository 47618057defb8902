-- UDP, Unix sockets, half-close, flow control, priorities, warnings, limits, options, stats.
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

local function echo_handler()
  return {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s) socket.send(id, s) end,
  }
end

-- Connect to port and collect what arrives; returns id and a state table.
local function client(port, host)
  local st = { data = {}, n = 0, opened = false, closed = false }
  local id
  if type(port) == "string" then
    id = assert(socket.connect(port))
  else
    id = assert(socket.connect(host or "127.0.0.1", port))
  end
  socket.start(id, {
    open = function() st.opened = true end,
    data = function(_, s) st.data[#st.data + 1] = s; st.n = st.n + #s end,
    close = function() st.closed = true end,
    error = function(_, m) st.err = m end,
  })
  return id, st
end

function tests.udp_ipv4_and_ipv6_round_trip()
  for _, host in ipairs { "127.0.0.1", "::1" } do
    local got
    local server = assert(socket.udp_listen(host, 0))
    local port
    for _, s in ipairs(socket.info()) do
      if s.id == server then port = tonumber(s.sock:match(":(%d+)$")) end
    end
    socket.start(server, { udp = function(id, data, from) socket.sendto(id, from, data) end })
    local c = assert(socket.udp_dial(host, port))
    socket.start(c, { udp = function(_, data, from)
      got = data
      local ip, p = socket.udp_address(from)
      T.eq(ip, host, "sender ip")
      T.eq(p, port, "sender port")
    end })
    local big = T.bytes(host == "::1" and 60000 or 65507, 3)
    assert(socket.sendto(c, nil, big))
    T.wait("datagram echo over " .. host, function() return got ~= nil end)
    T.eq(#got, #big, "datagram size")
    T.eq(got == big, true, "datagram bytes")
    socket.close(c)
    socket.close(server)
  end
end

function tests.unbound_udp_socket_sends_to_ipv6_and_ipv4()
  local seen = {}
  local s6 = assert(socket.udp_listen("::1", 0))
  local s4 = assert(socket.udp_listen("127.0.0.1", 0))
  local ports = {}
  for _, s in ipairs(socket.info()) do ports[s.id] = tonumber(s.sock:match(":(%d+)$")) end
  socket.start(s6, { udp = function(_, d) seen[#seen + 1] = d end })
  socket.start(s4, { udp = function(_, d) seen[#seen + 1] = d end })
  local u = assert(socket.udp())
  local a6, a4
  -- Build compact addresses: family byte, port (big-endian), address bytes.
  local function be16(p) return string.char(math.floor(p / 256), p % 256) end
  a6 = "\2" .. be16(ports[s6]) .. string.rep("\0", 15) .. "\1"
  a4 = "\1" .. be16(ports[s4]) .. "\127\0\0\1"
  assert(socket.sendto(u, a6, "to6"))
  assert(socket.sendto(u, a4, "to4"))
  T.wait("both datagrams", function() return #seen == 2 end)
  table.sort(seen)
  T.eq(seen[1], "to4", "v4")
  T.eq(seen[2], "to6", "v6")
  socket.close(u); socket.close(s6); socket.close(s4)
end

function tests.udp_send_to_a_closed_port_does_not_kill_the_socket()
  local probe = assert(socket.udp_listen("127.0.0.1", 0))
  local port
  for _, s in ipairs(socket.info()) do if s.id == probe then port = tonumber(s.sock:match(":(%d+)$")) end end
  socket.close(probe)
  local errs, got = 0, nil
  local c = assert(socket.udp_dial("127.0.0.1", port))
  socket.start(c, { error = function() errs = errs + 1 end, udp = function(_, d) got = d end })
  local failed_sends = 0
  for _ = 1, 3 do
    if not socket.sendto(c, nil, "anyone?") then failed_sends = failed_sends + 1 end
    T.settle(20)
  end
  -- ECONNREFUSED comes back either as an error message or as a failed send.
  T.truthy(errs + failed_sends > 0, "the unreachable peer is reported")
  -- The socket still works: point it at a live server and get an echo.
  local server = assert(socket.udp_listen("127.0.0.1", 0))
  local sport
  for _, s in ipairs(socket.info()) do if s.id == server then sport = tonumber(s.sock:match(":(%d+)$")) end end
  socket.start(server, { udp = function(id, d, from) socket.sendto(id, from, d) end })
  assert(socket.udp_connect(c, "127.0.0.1", sport))
  assert(socket.sendto(c, nil, "still alive"))
  T.wait("echo after errors", function() return got == "still alive" end)
  socket.close(c)
  socket.close(server)
end

function tests.unix_domain_sockets_listen_and_connect()
  local path = os.tmpname()
  os.remove(path)
  local lid, name = socket.listen("unix:" .. path)
  assert(lid, name)
  T.eq(name, "unix:" .. path, "listen result")
  socket.start(lid, echo_handler())
  local id, st = client("unix:" .. path)
  socket.send(id, "over unix")
  T.wait("unix echo", function() return table.concat(st.data) == "over unix" end)
  socket.close(id)
  socket.close(lid)
  T.settle(20)
  -- A stale socket file left behind is replaced by the next listen.
  local lid2, err = socket.listen("unix:" .. path)
  T.truthy(lid2, "listen over a stale socket file: " .. tostring(err))
  -- A live listener's path is refused.
  local lid3, err3 = socket.listen("unix:" .. path)
  T.eq(lid3, nil, "second listener")
  assert(err3:find("in use", 1, true), err3)
  socket.close(lid2)
  os.remove(path)
end

function tests.close_write_half_closes_and_keeps_reading()
  local server_got, server_closed, server_id = {}, false, nil
  local lid, port = T.listen {
    accept = function(_, id) server_id = id; socket.start(id) end,
    data = function(_, s) server_got[#server_got + 1] = s end,
    close = function() server_closed = true end,
  }
  local id, st = client(port)
  T.wait("open", function() return st.opened and server_id end)
  socket.send(server_id, "bye")
  assert(socket.close_write(server_id))
  T.wait("client sees EOF", function() return st.closed end)
  T.eq(table.concat(st.data), "bye", "data before FIN")
  T.eq((socket.send(server_id, "more")), false, "no sends after close_write")
  socket.close(lid)
  socket.close(id)
  T.wait("server close", function() return server_closed end)
end

function tests.peer_half_close_still_delivers_our_queued_data()
  if T.single_state() then return end
  -- The server answers a request after the client's FIN.
  local total = 3 * 1024 * 1024
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    data = function(id) socket.send(id, string.rep("r", total)) end,
  }
  local id, st = client(port)
  T.wait("open", function() return st.opened end)
  socket.send(id, "request")
  socket.close_write(id)
  T.wait("whole reply", function() return st.n >= total end)
  T.eq(st.n, total, "reply size")
  T.wait("close", function() return st.closed end)
  socket.close(lid)
end

function tests.keepopen_answers_after_the_peers_fin()
  local replied = false
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id); socket.keepopen(id) end,
    close = function(id)
      -- The request is complete (the peer sent FIN): answer, then close.
      replied = socket.send(id, "reply after FIN")
      socket.close(id)
    end,
  }
  local id, st = client(port)
  T.wait("open", function() return st.opened end)
  socket.send(id, "request")
  socket.close_write(id)
  T.wait("reply", function() return st.closed end)
  T.eq(replied, true, "send after the peer's FIN")
  T.eq(table.concat(st.data), "reply after FIN", "reply")
  -- Without keepopen the same send fails: the socket is already gone.
  local failed
  socket.start(lid, {
    accept = function(_, sid) socket.start(sid) end,
    close = function(sid) failed = not socket.send(sid, "x") end,
  })
  local id2, st2 = client(port)
  T.wait("open", function() return st2.opened end)
  socket.close_write(id2)
  T.wait("server close", function() return failed ~= nil end)
  T.eq(failed, true, "send after FIN without keepopen")
  socket.close(id2)
  socket.close(lid)
  socket.close(id)
end

function tests.pause_and_resume()
  local lid, port = T.listen(echo_handler())
  local id, st = client(port)
  T.wait("open", function() return st.opened end)
  assert(socket.pause(id))
  local server
  for _, s in ipairs(socket.info()) do if s.id ~= id and s.id ~= lid then server = s.id end end
  socket.send(id, "ping")
  T.settle(50)
  T.eq(st.n, 0, "nothing read while paused")
  assert(socket.resume(id))
  T.wait("echo after resume", function() return st.n == 4 end)
  socket.close(id)
  T.settle(20)
  local ok, msg = socket.resume(id)
  T.eq(ok, false, "resume a closed socket")
  assert(msg)
  socket.close(lid)
  if server then socket.close(server) end
end

function tests.warning_fires_and_drains()
  local warnings = {}
  local server_id
  local lid, port = T.listen {
    accept = function(_, id) server_id = id; socket.start(id) end,
    warning = function(id, kib) warnings[#warnings + 1] = kib end,
  }
  local id, st = client(port)
  T.wait("accepted", function() return server_id and st.opened end)
  assert(socket.pause(id)) -- the client stops reading
  local chunk = string.rep("w", 1024 * 1024)
  for _ = 1, 16 do socket.send(server_id, chunk) end
  T.wait("warning", function() return #warnings >= 1 end)
  assert(warnings[1] >= 1024, "first warning at >= 1 MiB: " .. warnings[1])
  socket.resume(id)
  T.wait("drained", function() return warnings[#warnings] == 0 end)
  T.wait("all data", function() return st.n == 16 * 1024 * 1024 end)
  socket.close(id); socket.close(server_id); socket.close(lid)
end

function tests.sendlimit_rejects_sends_beyond_the_limit()
  local server_id
  local lid, port = T.listen { accept = function(_, id) server_id = id; socket.start(id) end }
  local id, st = client(port)
  T.wait("accepted", function() return server_id and st.opened end)
  socket.pause(id)
  assert(socket.sendlimit(server_id, 1024 * 1024))
  local chunk = string.rep("x", 256 * 1024)
  local ok, msg
  for _ = 1, 64 do
    ok, msg = socket.send(server_id, chunk)
    if not ok then break end
  end
  T.eq(ok, false, "a send failed")
  assert(msg:find("limit", 1, true), msg)
  for _, s in ipairs(socket.info()) do
    if s.id == server_id then assert(s.wbuffer <= 1024 * 1024, "queued " .. s.wbuffer) end
  end
  T.raises("bad argument #2 to 'sendlimit'", socket.sendlimit, server_id, -1)
  socket.close(id, true); socket.close(server_id, true); socket.close(lid)
end

function tests.low_priority_writes_go_after_high()
  local server_id
  local lid, port = T.listen { accept = function(_, id) server_id = id; socket.start(id) end }
  local id, st = client(port)
  T.wait("accepted", function() return server_id and st.opened end)
  socket.pause(id)
  socket.send(server_id, string.rep("F", 4 * 1024 * 1024))
  socket.lwrite(server_id, "low1")
  socket.lwrite(server_id, "low2")
  socket.send(server_id, "HIGH")
  socket.resume(id)
  local want = 4 * 1024 * 1024 + 12
  T.wait("all data", function() return st.n >= want end)
  local all = table.concat(st.data)
  T.eq(all:sub(-12), "HIGHlow1low2", "order after the filler")
  socket.close(id); socket.close(server_id); socket.close(lid)
end

function tests.info_reports_stats()
  local server_id
  local lid, port = T.listen { accept = function(_, id) server_id = id; socket.start(id) end,
    data = function(id, s) socket.send(id, s .. s) end }
  local id, st = client(port)
  T.wait("accepted", function() return server_id and st.opened end)
  socket.send(id, "12345")
  T.wait("reply", function() return st.n == 10 end)
  local found = false
  for _, s in ipairs(socket.netstat()) do
    if s.id == server_id then
      found = true
      T.eq(s.type, "tcp", "type")
      T.eq(s.state, "connected", "state")
      T.eq(s.read, 5, "bytes read")
      T.eq(s.write, 10, "bytes written")
      T.eq(s.wbuffer, 0, "queued")
      assert(s.peer:find("^127%.0%.0%.1:"), s.peer)
      T.eq(s.sock, "127.0.0.1:" .. port, "local address")
      assert(type(s.rtime) == "number" and type(s.wtime) == "number")
    elseif s.id == lid then
      T.eq(s.state, "listen", "listener state")
    end
  end
  T.truthy(found, "server socket in info()")
  T.truthy(socket.count() >= 3, "count")
  socket.close(id); socket.close(server_id); socket.close(lid)
end

function tests.options_and_reuseport()
  if T.single_state() then return end
  local a = assert(socket.listen("127.0.0.1", 0, { reuseport = true, backlog = 64 }))
  local port
  for _, s in ipairs(socket.info()) do if s.id == a then port = tonumber(s.sock:match(":(%d+)$")) end end
  local b = socket.listen("127.0.0.1", port, { reuseport = true })
  T.truthy(b, "second listener with reuseport")
  local accepted = {}
  local h = function(tag) return { accept = function(_, id) accepted[tag] = (accepted[tag] or 0) + 1; socket.close(id) end } end
  socket.start(a, h("a")); socket.start(b, h("b"))
  local clients = {}
  for i = 1, 40 do clients[i] = socket.connect("127.0.0.1", port); socket.start(clients[i], {}) end
  T.wait("accepts", function() return (accepted.a or 0) + (accepted.b or 0) == 40 end)
  T.truthy((accepted.a or 0) > 0 and (accepted.b or 0) > 0, "both listeners accept")
  T.truthy(socket.nodelay(clients[1]), "nodelay")
  T.truthy(socket.keepalive(clients[1], false), "keepalive off")
  for i = 1, 40 do socket.close(clients[i]) end
  local u = socket.udp()
  local ok, msg = socket.nodelay(u)
  T.eq(ok, false, "nodelay on UDP")
  assert(msg:find("TCP"), msg)
  socket.close(u); socket.close(a); socket.close(b)
end

function tests.resolve_with_a_callback_does_not_block()
  local ips, err, bad_err
  T.truthy(socket.resolve("localhost", function(a, e) ips, err = a, e end), "request accepted")
  socket.resolve("nonexistent.invalid", function(a, e) bad_err = e or "no error"; assert(a == nil) end)
  T.wait("both lookups", function() return (ips or err) and bad_err end)
  T.truthy(ips and #ips >= 1, "localhost addresses: " .. tostring(err))
  T.truthy(type(bad_err) == "string", "error text for an unresolvable name")
end

function tests.host_names_and_host_port_strings()
  local ips = assert(socket.resolve("localhost"))
  T.truthy(#ips >= 1, "localhost resolves")
  local none, err = socket.resolve("nonexistent.invalid")
  T.eq(none, nil, "unresolvable")
  T.truthy(err, "message")
  local lid, port = T.listen(echo_handler())
  local id, st = client(port, "localhost")
  T.wait("open via a host name", function() return st.opened or st.err end)
  if st.err then
    -- localhost may resolve to ::1 first while we listen on 127.0.0.1 only.
    socket.close(id)
    id, st = client("127.0.0.1:" .. port)
    T.wait("open via host:port", function() return st.opened end)
  end
  socket.close(id)
  socket.close(lid)
end

return tests
