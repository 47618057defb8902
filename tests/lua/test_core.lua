-- The foundation: listen/connect/start/send/close and the callback dispatcher.
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

-- An echo server using the module-wide handler; returns its listener id and port.
local function echo_server()
  socket.dispatch {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s) socket.send(id, s) end,
  }
  return T.listen()
end

function tests.echo_round_trip_through_the_dispatcher()
  local server_handler = {
    accept = function(_, id, addr)
      assert(addr:find("^127%.0%.0%.1:%d+$"), addr)
      socket.start(id)
    end,
    data = function(id, s) socket.send(id, s) end,
  }
  local lid, port = T.listen(server_handler)
  local got, opened = {}, false
  local cid = assert(socket.connect("127.0.0.1", port))
  assert(socket.start(cid, {
    open = function(id, addr)
      opened = true
      T.eq(addr, "127.0.0.1:" .. port, "open address")
      socket.send(id, "hello ")
      socket.send(id, "world")
    end,
    data = function(_, s) got[#got + 1] = s end,
  }))
  T.wait("echo", function() return table.concat(got) == "hello world" end)
  assert(opened)
  socket.close(cid)
  socket.close(lid)
  T.settle(20)
end

function tests.accepted_sockets_inherit_the_listener_handler()
  local seen_default, seen_inherited, closes = 0, 0, 0
  socket.dispatch { data = function() seen_default = seen_default + 1 end }
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s) seen_inherited = seen_inherited + 1; socket.send(id, s) end,
    close = function() closes = closes + 1 end,
  }
  local echoed = false
  local cid = socket.connect("127.0.0.1", port)
  socket.start(cid, {
    open = function(id) socket.send(id, "x") end,
    data = function() echoed = true end,
  })
  T.wait("echo", function() return echoed end)
  T.eq(seen_inherited, 1, "messages to the inherited handler")
  T.eq(seen_default, 0, "messages to the default handler")
  socket.close(cid)
  T.wait("server side close", function() return closes == 1 end)
  socket.close(lid)
end

function tests.error_in_a_callback_does_not_stop_the_loop()
  local errors = {}
  socket.on_error(function(msg) errors[#errors + 1] = msg end)
  local count = 0
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s)
      count = count + 1
      if count == 1 then error("boom in data") end
      socket.send(id, s)
    end,
  }
  local got = ""
  local cid = socket.connect("127.0.0.1", port)
  socket.start(cid, {
    open = function(id) socket.send(id, "a") end,
    data = function(_, s) got = got .. s end,
  })
  T.wait("first error", function() return #errors == 1 end)
  assert(errors[1]:find("boom in data", 1, true), errors[1])
  assert(errors[1]:find("traceback", 1, true), "error carries a traceback: " .. errors[1])
  socket.send(cid, "b")
  T.wait("echo after the error", function() return got == "b" end)
  socket.close(cid)
  socket.close(lid)
end

function tests.errors_in_one_batch_are_each_reported_and_the_rest_delivered()
  local errors = {}
  socket.on_error(function(msg) errors[#errors + 1] = msg end)
  local seen, accepted = {}, 0
  local lid, port = T.listen {
    accept = function(_, id) accepted = accepted + 1; socket.start(id) end,
    data = function(_, s)
      seen[#seen + 1] = s
      if tonumber(s) % 2 == 0 then error("even " .. s) end
    end,
  }
  local N, ids, opened = 20, {}, 0
  for i = 1, N do
    ids[i] = socket.connect("127.0.0.1", port)
    socket.start(ids[i], { open = function() opened = opened + 1 end })
  end
  T.wait("all connected", function() return opened == N and accepted == N end)
  -- All sent before the next poll: the server's reads land in one batch.
  for i = 1, N do socket.send(ids[i], tostring(i)) end
  T.wait("all delivered", function() return #seen == N end)
  T.settle(20)
  T.eq(#seen, N, "each message delivered once")
  T.eq(#errors, math.floor(N / 2), "one error per even message")
  local got = {}
  for _, s in ipairs(seen) do got[tonumber(s)] = true end
  for i = 1, N do T.truthy(got[i], "message " .. i) end
  for _, e in ipairs(errors) do assert(e:find("even %d+"), e) end
  for i = 1, N do socket.close(ids[i]) end
  socket.close(lid)
end

function tests.error_in_the_error_hook_still_keeps_going()
  socket.on_error(function() error("hook fails too") end)
  local fired = 0
  socket.timeout(1, function() fired = fired + 1; error("timer error") end)
  socket.timeout(2, function() fired = fired + 1 end)
  T.wait("both timers", function() return fired == 2 end)
end

function tests.bad_arguments_raise_clear_errors()
  T.raises("bad argument #1 to 'send' (number expected, got no value)", socket.send)
  T.raises("bad argument #2 to 'send' (string expected, got nil)", socket.send, 1, nil)
  T.raises("bad argument #2 to 'send' (string expected, got boolean)", socket.send, 1, false)
  T.raises("bad argument #2 to 'send' (array of strings expected, item 1 is table)", socket.send, 1, { {} })
  T.raises("bad argument #1 to 'send' (number has no integer representation)", socket.send, 1.5, "x")
  T.raises("bad argument #1 to 'close' (socket id must be a positive integer)", socket.close, -3)
  T.raises("bad argument #1 to 'close' (number has no integer representation)", socket.close, 0/0)
  T.raises("bad argument #2 to 'listen' (port 65536 out of range 0..65535)", socket.listen, "127.0.0.1", 65536)
  T.raises("bad argument #2 to 'connect' (port -1 out of range 0..65535)", socket.connect, "127.0.0.1", -1)
  T.raises("bad argument #1 to 'listen' (string expected, got boolean)", socket.listen, true, 1)
  T.raises("bad argument #2 to 'start' (handler table expected, got string)", socket.start, 1, "x")
  T.raises("bad argument #2 to 'timeout' (function expected, got no value)", socket.timeout, 10)
  T.raises("bad argument #1 to 'timeout' (timeout must be a finite number >= 0)", socket.timeout, -1, print)
  T.raises("bad argument #1 to 'poll' (timeout is NaN)", socket.poll, 0/0)
  T.raises("bad argument #1 to 'udp_address' (malformed UDP address)", socket.udp_address, "xx")
  -- The error points at the caller's line.
  local err = T.raises("bad argument", function()
    socket.send() -- the error names this line
  end)
  assert(err:find("test_core.lua:%d+: bad argument"), "position missing: " .. err)
end

function tests.unknown_and_stale_ids_return_false()
  local ok, msg = socket.send(987654321, "x")
  T.eq(ok, false, "send to unknown id")
  assert(msg:find("unknown"), msg)
  T.eq((socket.close(987654321)), false, "close unknown id")
  T.eq((socket.buffered(987654321)), false, "buffered unknown id")
  T.eq((socket.framed(987654321)), false, "framed unknown id")
  T.eq(socket.readn(987654321, 1), nil, "readn unknown id")
  -- A stale id: closed, and its slot reused by a new socket.
  local lid, port = echo_server()
  local a = socket.connect("127.0.0.1", port)
  socket.close(a, true)
  local b = socket.connect("127.0.0.1", port)
  assert(a ~= b)
  T.eq((socket.send(a, "x")), false, "send to stale id")
  T.eq((socket.close(a)), false, "close stale id")
  local got = ""
  socket.start(b, { data = function(_, s) got = got .. s end })
  T.truthy(socket.send(b, "live"), "new socket still works")
  T.wait("echo on the new socket", function() return got == "live" end)
  socket.close(b)
  socket.close(lid)
end

function tests.listen_on_a_port_in_use_returns_nil_and_message()
  local lid, port = T.listen({})
  local id, msg = socket.listen("127.0.0.1", port)
  T.eq(id, nil, "second listen")
  assert(msg:find("in use", 1, true), msg)
  socket.close(lid)
end

function tests.connect_refused_arrives_as_error()
  local lid, port = T.listen({})
  socket.close(lid) -- nothing listens on port now
  T.settle(10)
  local err
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, { error = function(id, m) err = m; T.eq(id, cid, "error id") end })
  T.wait("refused", function() return err ~= nil end)
  assert(err:lower():find("refused"), err)
  T.eq((socket.send(cid, "x")), false, "the failed socket is gone")
end

function tests.binary_data_with_zeros_round_trips()
  local lid, port = echo_server()
  local payload = "\0\1\2\0\255" .. T.bytes(100000, 7) .. "\0"
  local got = {}
  local n = 0
  local cid = socket.connect("127.0.0.1", port)
  socket.start(cid, {
    open = function(id) socket.send(id, payload) end,
    data = function(_, s) got[#got + 1] = s; n = n + #s end,
  })
  T.wait("echo", function() return n >= #payload end)
  T.eq(table.concat(got) == payload, true, "bytes equal")
  socket.close(cid)
  socket.close(lid)
end

function tests.close_flushes_then_reports_close()
  local total = 4 * 1024 * 1024
  local received, peer_closed, our_close = 0, false, false
  local lid, port = T.listen {
    accept = function(_, id)
      socket.start(id)
      socket.send(id, string.rep("z", total))
      socket.close(id)
      T.eq((socket.send(id, "late")), false, "send after close")
    end,
    close = function() our_close = true end,
  }
  local cid = socket.connect("127.0.0.1", port)
  socket.start(cid, {
    data = function(_, s) received = received + #s end,
    close = function() peer_closed = true end,
  })
  T.wait("peer EOF", function() return peer_closed end)
  T.eq(received, total, "bytes before EOF")
  T.wait("server close", function() return our_close end)
  socket.close(lid)
end

function tests.loop_runs_until_exit()
  local ticks = 0
  local function tick()
    ticks = ticks + 1
    if ticks == 3 then socket.exit() else socket.timeout(1, tick) end
  end
  socket.timeout(1, tick)
  socket.loop()
  T.eq(ticks, 3, "ticks")
  -- With nothing to wait on, loop returns at once.
  T.eq(socket.loop(), true, "idle loop")
end

function tests.poll_and_loop_refuse_to_nest()
  local err
  socket.timeout(1, function() err = select(2, pcall(socket.poll, 0)) end)
  T.wait("timer", function() return err ~= nil end)
  assert(err:find("cannot be called from inside a callback", 1, true), err)
end

function tests.timeouts_fire_in_order_and_cancel()
  local order = {}
  socket.timeout(30, function() order[#order + 1] = 30 end)
  socket.timeout(10, function() order[#order + 1] = 10 end)
  local t = socket.timeout(20, function() order[#order + 1] = 20 end)
  T.eq(socket.cancel_timeout(t), true, "cancel pending")
  T.eq(socket.cancel_timeout(t), false, "cancel twice")
  T.wait("timers", function() return #order == 2 end)
  T.eq(order[1], 10, "first")
  T.eq(order[2], 30, "second")
end

function tests.handlers_with_metatables_and_handler_changes_mid_stream()
  -- A class-style handler (fields through __index) takes the general dispatcher path.
  local Echo = {}
  Echo.__index = Echo
  function Echo.accept(_, id) socket.start(id) end
  function Echo.data(id, s) socket.send(id, s) end
  local lid, port = T.listen(setmetatable({}, Echo))
  local got = {}
  local cid = socket.connect("127.0.0.1", port)
  socket.start(cid, { open = function(id) socket.send(id, "one") end,
    data = function(_, s) got[#got + 1] = s end })
  T.wait("echo through a metatable handler", function() return table.concat(got) == "one" end)
  -- Replacing the module-wide handler from inside a callback takes effect for the next
  -- message, even within the same batch.
  local first, second = 0, 0
  socket.dispatch { data = function() first = first + 1; socket.dispatch { data = function() second = second + 1 end } end }
  local ids = {}
  for i = 1, 4 do
    ids[i] = socket.connect("127.0.0.1", port)
    socket.start(ids[i], { open = function(id) socket.start(id, {}) end })
  end
  T.settle(30)
  -- Sockets started without a handler use the module-wide one.
  for i = 1, 4 do
    socket.close(ids[i])
    ids[i] = socket.connect("127.0.0.1", port)
  end
  T.settle(30)
  for i = 1, 4 do socket.send(ids[i], "x") end
  T.wait("echoes", function() return first + second >= 4 end)
  T.eq(first, 1, "the first handler ran once")
  socket.dispatch(nil)
  for i = 1, 4 do socket.close(ids[i]) end
  socket.close(cid)
  socket.close(lid)
end

function tests.configure_settings()
  if T.single_state() then return end
  local c = socket.configure()
  T.eq(c.max_sockets, 65536, "default max_sockets")
  -- LuaJIT: under its allocator's 128 KiB mmap threshold (issue 18)
  T.eq(c.max_read, rawget(_G, "jit") and 127 * 1024 or 131072, "default max_read")
  T.eq(c.warn_size, 1048576, "default warn_size")
  T.eq(c.write_limit, 64 * 1024 * 1024, "default write_limit")
  T.eq(c.write_budget, 256 * 1024 * 1024, "default write_budget")
  T.eq(c.close_timeout, 60000, "default close_timeout")
  T.raises("unknown setting 'nope'", socket.configure, { nope = 1 })
  T.raises("setting 'max_sockets' must be > 0", socket.configure, { max_sockets = 0 })
  T.raises("setting 'warn_size' must be an integer", socket.configure, { warn_size = "x" })
  -- Refused while something is open; applied when idle.
  local lid = T.listen({})
  local ok, msg = socket.configure { max_sockets = 4 }
  T.eq(ok, false, "configure with an open socket")
  assert(msg:find("close every socket", 1, true), msg)
  socket.close(lid)
  T.settle(10)
  T.eq(socket.configure({ max_sockets = 2, write_limit = 1000 }).max_sockets, 2, "applied")
  local a = assert(socket.udp())
  local b = assert(socket.udp())
  local none, err = socket.udp()
  T.eq(none, nil, "third socket over max_sockets = 2")
  assert(err:find("too many sockets", 1, true), err)
  socket.close(a); socket.close(b)
  T.settle(10)
  socket.configure { max_sockets = 65536, write_limit = c.write_limit }
end

function tests.peer_close_reports_close_once()
  local closes = 0
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    close = function() closes = closes + 1 end,
  }
  local cid = socket.connect("127.0.0.1", port)
  local opened = false
  socket.start(cid, { open = function() opened = true end })
  T.wait("open", function() return opened end)
  T.settle(20)
  socket.close(cid)
  T.wait("server sees close", function() return closes == 1 end)
  T.settle(50)
  T.eq(closes, 1, "close count")
  socket.close(lid)
end

function tests.send_takes_an_array_of_strings()
  local got = {}
  local lid, port = T.listen { accept = function(_, id)
    socket.start(id, { data = function(_, s) got[#got + 1] = s end })
  end }
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, {})
  T.eq(socket.send(cid, { "*2\r\n", "$3\r\nGET\r\n", 42, "" }), true, "send array")
  T.eq(socket.lwrite(cid, { "|low" }), true, "lwrite array")
  T.eq(socket.write(cid, {}), true, "empty array")
  local want = "*2\r\n$3\r\nGET\r\n42|low"
  T.wait("gathered bytes", function() return table.concat(got) == want end)
  T.raises("bad argument #2 to 'send' (array of strings expected, item 2 is table)",
    socket.send, cid, { "a", {} })
  T.raises("bad argument #2 to 'write' (array of strings expected, item 2 is boolean)",
    socket.write, cid, { "a", true })
  T.raises("bad argument #2 to 'send' (string expected, got boolean)", socket.send, cid, true)
  socket.close(cid)
  socket.close(lid)
end

return tests
