-- skysocket.channel against tiny in-test servers written with skysocket.socket.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local channel = require "skysocket.channel"
local compat = require "skysocket.compat"
local T = require "testlib"
local tests = {}

local function run(main, ms)
  local timed_out, errors = false, {}
  sched.on_error(function(e)
    errors[#errors + 1] = e
    sched.exit()
  end)
  local wd = raw.timeout(ms or 10000, function() timed_out = true; sched.exit() end)
  local r = compat.pack(sched.run(main))
  raw.cancel_timeout(wd)
  sched.on_error(nil)
  if #errors > 0 then error(errors[1], 2) end
  if timed_out then error("test timed out", 2) end
  if not r[1] then error(tostring(r[2]), 2) end
  return compat.unpack(r, 2, r.n)
end

-- A server: handler(id, n) runs per connection (n counts connections). Returns
-- listener id, port, and a table whose .conns counts connections.
local function server(handler)
  local info = { conns = 0, ids = {} }
  local lid, _, port = assert(socket.listen("127.0.0.1", 0))
  socket.start(lid, function(id)
    socket.start(id)
    info.conns = info.conns + 1
    info.ids[#info.ids + 1] = id
    handler(id, info.conns)
    socket.close(id)
  end)
  return lid, port, info
end

local function line_reader(s)
  return true, s:readline("\n")
end

local function lost(port)
  return "connection to 127.0.0.1:" .. port .. " lost"
end

function tests.order_mode_pipelines_many_coroutines()
  run(function()
    local lid, port, info = server(function(id)
      local n = 0
      while true do
        local line = socket.readline(id)
        if not line then break end
        n = n + 1
        local reply = line:upper() .. "\n"
        if n % 7 == 0 then -- some replies arrive in pieces
          for i = 1, #reply, 3 do socket.write(id, reply:sub(i, i + 2)); sched.sleep(0) end
        else
          socket.write(id, reply)
        end
      end
    end)
    local ch = channel.new { host = "127.0.0.1", port = port, timeout = 5000 }
    sched.sleep(20)
    T.eq(info.conns, 0, "no connection before the first request")
    local done, wrong = 0, 0
    for i = 1, 50 do
      sched.fork(function()
        for j = 1, 100 do
          local ok, v = ch:request("co-" .. i .. "-" .. j .. "\n", line_reader)
          if not ok or v ~= "CO-" .. i .. "-" .. j then wrong = wrong + 1 end
        end
        done = done + 1
      end)
    end
    while done < 50 do sched.sleep(5) end
    T.eq(wrong, 0, "every caller got its own reply")
    T.eq(info.conns, 1, "one shared connection")
    T.eq(ch:pending(), 0, "nothing pending")
    ch:close()
    socket.close(lid)
  end)
end

function tests.session_mode_matches_out_of_order_replies()
  run(function()
    local rand = T.rng(99)
    local lid, port = server(function(id)
      socket.write(id, "999999 unsolicited\n") -- an unknown session is dropped
      while true do
        local line = socket.readline(id)
        if not line then break end
        sched.fork(function()
          sched.sleep(rand(20))
          socket.write(id, line .. "!\n")
        end)
      end
      sched.sleep(50)
    end)
    local ch = channel.new {
      host = "127.0.0.1", port = port, timeout = 5000,
      response = function(s)
        local line = s:readline("\n")
        local sess, payload = line:match("^(%d+) (.*)$")
        return tonumber(sess), true, payload
      end,
    }
    local done, wrong, next_session = 0, 0, 0
    for i = 1, 30 do
      sched.fork(function()
        for j = 1, 50 do
          next_session = next_session + 1
          local sess = next_session
          local ok, v = ch:request(sess .. " p" .. i .. "." .. j .. "\n", sess)
          if not ok or v ~= "p" .. i .. "." .. j .. "!" then wrong = wrong + 1 end
        end
        done = done + 1
      end)
    end
    while done < 30 do sched.sleep(5) end
    T.eq(wrong, 0, "replies matched by session")
    T.raises("bad argument #2 to 'request' (session expected, got nil)", ch.request, ch, "x\n")
    -- a session already in flight is refused before anything is written
    local first
    sched.fork(function() first = { ch:request("777 one\n", 777) } end)
    sched.sleep(0)
    local ok, err = ch:request("777 two\n", 777)
    T.eq(ok, nil, "refused"); T.eq(err, "session 777 is already in flight", "message")
    while not first do sched.sleep(5) end
    T.eq(first[2], "one!", "the first gets its own reply")
    ch:close()
    socket.close(lid)
  end)
end

function tests.auth_hook_runs_first_on_every_reconnect()
  local rand = T.rng(5)
  run(function()
    local violations, first_lines = 0, {}
    local lid, port, info = server(function(id, n)
      local authed, served = false, 0
      while true do
        local line = socket.readline(id)
        if not line then break end
        if first_lines[n] == nil then first_lines[n] = line end
        if line == "AUTH pw" then
          authed = true
          sched.sleep(10) -- a slow handshake: requests arrive meanwhile and must wait
          if (raw.unread(id) or 0) > 0 then violations = violations + 1 end -- sent before +OK
          socket.write(id, "+OK\n")
        elseif not authed then
          violations = violations + 1
          socket.write(id, "NOAUTH\n")
        else
          served = served + 1
          socket.write(id, "ok " .. line .. "\n")
          if served == 25 then break end -- the server drops us now and then
        end
      end
    end)
    local auths = 0
    local ch = channel.new {
      host = "127.0.0.1", port = port, timeout = 5000, backoff_min = 5,
      auth = function(c)
        auths = auths + 1
        local ok, v = c:request("AUTH pw\n", line_reader)
        if not ok then return false, v end
        if v ~= "+OK" then return false, v end
        return true
      end,
    }
    local done, good, dropped, bad = 0, 0, 0, {}
    for i = 1, 10 do
      sched.fork(function()
        local j = 0
        while j < 40 do
          local ok, v = ch:request("r" .. i .. "." .. j .. "\n", line_reader)
          if ok and v == "ok r" .. i .. "." .. j then
            good = good + 1
            j = j + 1
          elseif ok == nil and v == lost(port) then
            dropped = dropped + 1
            sched.sleep(rand(15))
          else
            bad[#bad + 1] = tostring(v)
            j = j + 1
          end
        end
        done = done + 1
      end)
    end
    while done < 10 do sched.sleep(5) end
    T.eq(#bad, 0, "no wrong reply: " .. tostring(bad[1]))
    T.eq(violations, 0, "no request before AUTH on any connection")
    T.eq(good, 400, "all requests served in the end")
    assert(info.conns >= 400 / 25, "reconnected (" .. info.conns .. " connections)")
    assert(dropped >= 1, "requests in flight at a drop failed")
    for n = 1, info.conns do
      if first_lines[n] then T.eq(first_lines[n], "AUTH pw", "first line of connection " .. n) end
    end
    T.eq(auths, info.conns, "the hook ran once per connection")
    ch:close()
    socket.close(lid)
  end, 20000)
end

function tests.a_drop_fails_requests_in_flight_clearly()
  run(function()
    local lid, port = server(function(id)
      local lines = {}
      while #lines < 3 do lines[#lines + 1] = socket.readline(id) end
      socket.write(id, "first\n")
      sched.sleep(20)
      -- handler returns: the connection closes with two requests unanswered
    end)
    local ch = channel.new { host = "127.0.0.1", port = port }
    local results = {}
    for i = 1, 3 do
      sched.fork(function() results[i] = { ch:request("q" .. i .. "\n", line_reader) } end)
    end
    while not (results[1] and results[2] and results[3]) do sched.sleep(5) end
    T.eq(results[1][1], true, "first answered"); T.eq(results[1][2], "first", "its reply")
    for i = 2, 3 do
      T.eq(results[i][1], nil, "failed " .. i)
      T.eq(results[i][2], lost(port), "clear error " .. i)
    end
    ch:close()
    socket.close(lid)
  end)
end

function tests.a_timed_out_request_does_not_shift_replies()
  run(function()
    local lid, port = server(function(id)
      while true do
        local line = socket.readline(id)
        if not line then break end
        if line == "slow" then sched.sleep(300) end
        socket.write(id, line .. "\n")
      end
    end)
    local ch = channel.new { host = "127.0.0.1", port = port }
    T.eq(select(2, ch:request("warm\n", line_reader)), "warm", "connected")
    local fired = false
    local guard = raw.timeout(250, function() fired = true end)
    local ok, err = ch:request("slow\n", line_reader, 100)
    raw.cancel_timeout(guard)
    T.eq(ok, nil, "timed out"); T.eq(err, "timeout", "message")
    T.eq(fired, false, "within its bound")
    local ok2, v = ch:request("fast\n", line_reader)
    T.eq(ok2, true, "next request"); T.eq(v, "fast", "its own reply, not the late one")
    ch:close()
    socket.close(lid)
  end)
end

function tests.connect_timeout_against_a_full_backlog()
  local lid, _, port = assert(raw.listen("127.0.0.1", 0, 1))
  local fillers = {}
  for i = 1, 8 do
    fillers[i] = assert(raw.connect("127.0.0.1", port))
    raw.start(fillers[i], {})
  end
  T.settle(200)
  run(function()
    local ch = channel.new { host = "127.0.0.1", port = port, connect_timeout = 150 }
    local fired = false
    local guard = raw.timeout(1500, function() fired = true end)
    local ok, err = ch:request("x\n", line_reader)
    raw.cancel_timeout(guard)
    T.eq(ok, nil, "failed")
    T.eq(err, "connect to 127.0.0.1:" .. port .. " failed: timeout", "connect timeout")
    T.eq(fired, false, "within the bound")
    -- close() fails a request waiting for the connection at once
    local ch2 = channel.new { host = "127.0.0.1", port = port, connect_timeout = 5000 }
    local r
    sched.fork(function() r = { ch2:request("y\n", line_reader) } end)
    sched.sleep(50)
    ch2:close()
    sched.sleep(10)
    T.eq(r and r[2], "channel closed", "waiter failed by close")
    ch:close()
  end)
  for i = 1, 8 do raw.close(fillers[i], true) end
  raw.close(lid, true)
end

function tests.close_fails_every_waiter()
  run(function()
    local lid, port = server(function(id)
      while socket.readline(id) do end -- never answers
    end)
    local ch = channel.new { host = "127.0.0.1", port = port }
    local results, n = {}, 0
    for i = 1, 5 do
      sched.fork(function()
        results[i] = { ch:request("q\n", line_reader) }
        n = n + 1
      end)
    end
    sched.sleep(50)
    T.eq(ch:pending(), 5, "five in flight")
    ch:close()
    while n < 5 do sched.sleep(5) end
    for i = 1, 5 do
      T.eq(results[i][1], nil, "failed"); T.eq(results[i][2], "channel closed", "message")
    end
    local ok, err = ch:request("again\n", line_reader)
    T.eq(ok, nil, "closed channel"); T.eq(err, "channel closed", "refuses")
    socket.close(lid)
  end)
end

function tests.failed_connects_back_off_then_recover()
  run(function()
    local lid, port = server(function(id)
      while true do
        local line = socket.readline(id)
        if not line then break end
        socket.write(id, line .. "\n")
      end
    end)
    local attempts, up = 0, false
    local ch = channel.new {
      host = "127.0.0.1", port = port, backoff_min = 40, backoff_max = 1000,
      open = function(host, p, ms)
        attempts = attempts + 1
        if not up then return nil, "simulated refusal" end
        return channel.open(host, p, ms)
      end,
    }
    local stop, errs = false, 0
    sched.fork(function()
      while not stop do
        local ok, err = ch:request("x\n", line_reader)
        if ok == nil then
          T.eq(err, "connect to 127.0.0.1:" .. port .. " failed: simulated refusal", "message")
          errs = errs + 1
        end
        sched.sleep(1)
      end
    end)
    sched.sleep(250) -- attempts at about 0, 40, 120 (+80), 280 (+160) ms
    stop = true
    sched.sleep(5)
    assert(attempts >= 2 and attempts <= 4, "attempts spaced by the backoff: " .. attempts)
    T.eq(errs, attempts, "each attempt failed its waiters")
    up = true
    sched.sleep(200)
    local ok, v = ch:request("back\n", line_reader)
    T.eq(ok, true, "recovered"); T.eq(v, "back", "reply")
    ch:close()
    socket.close(lid)
  end)
end

function tests.a_malformed_reply_drops_the_connection()
  run(function()
    local lid, port, info = server(function(id)
      while true do
        local line = socket.readline(id)
        if not line then break end
        socket.write(id, line .. "\n")
      end
    end)
    local ch = channel.new { host = "127.0.0.1", port = port }
    local ok, err = ch:request("bad\n", function(s)
      local line = s:readline("\n")
      if line == "bad" then error("unexpected reply 'bad'", 0) end
      return true, line
    end)
    T.eq(ok, nil, "failed")
    T.eq(err, "protocol error from 127.0.0.1:" .. port .. ": unexpected reply 'bad'", "message")
    local ok2, v = ch:request("good\n", line_reader)
    T.eq(ok2, true, "reconnected"); T.eq(v, "good", "reply")
    T.eq(info.conns, 2, "a new connection")
    -- a reader's false is the protocol's own error: the connection stays
    local ok3, v3 = ch:request("no\n", function(s) return false, s:readline("\n") end)
    T.eq(ok3, false, "reader said no"); T.eq(v3, "no", "its value")
    T.eq(ch:connected(), true, "still connected")
    ch:close()
    socket.close(lid)
  end)
end

function tests.a_large_reply_across_many_arrivals()
  run(function()
    local payload = T.bytes(2 * 1024 * 1024 + 3, 11)
    local lid, port = server(function(id)
      while true do
        local line = socket.readline(id)
        if not line then break end
        socket.write(id, #payload .. "\n")
        for i = 1, #payload, 65536 do socket.write(id, payload:sub(i, i + 65535)); sched.sleep(0) end
        socket.write(id, "tail\n")
      end
    end)
    local ch = channel.new { host = "127.0.0.1", port = port }
    local calls = 0
    local function sized(s)
      calls = calls + 1
      local n = tonumber(s:readline("\n"))
      return true, s:read(n)
    end
    local ok, v = ch:request("get\n", sized)
    T.eq(ok, true, "ok"); T.eq(#v, #payload, "length"); T.eq(v == payload, true, "bytes")
    assert(calls <= 3, "the reader waits for the announced size, not every arrival: " .. calls)
    T.eq(select(2, ch:request("", line_reader)), "tail", "stream in sync")
    ch:close()
    socket.close(lid)
  end)
end

-- The dispatcher lingers one turn when it runs out of replies: a caller that sends its
-- next request right away finds it (no coroutine forked per request); an idle channel
-- still has no coroutine (run() ends while the connection stays open).
function tests.sequential_requests_reuse_the_dispatcher()
  local ended = 0
  local old = sched.on_finish(function(co, ok)
    ended = ended + 1
    if old then old(co, ok) end
  end)
  local ch, lid
  local ok, err = pcall(run, function()
    -- an echo server on the callback API: no coroutine of its own
    local port
    lid, port = T.listen {
      accept = function(_, id) raw.start(id) end,
      data = function(id, data) raw.send(id, data) end,
    }
    ch = channel.new { host = "127.0.0.1", port = port }
    for i = 1, 200 do
      local rok, v = ch:request("n" .. i .. "\n", line_reader)
      T.eq(rok, true, "reply " .. i); T.eq(v, "n" .. i, "value " .. i)
    end
    ended = 0
    for i = 1, 200 do ch:request("m" .. i .. "\n", line_reader) end
    assert(ended < 5, "coroutines ended during 200 sequential requests: " .. ended)
    -- main returns with the channel open and idle: run() must end
  end)
  sched.on_finish(old)
  if not ok then error(err, 0) end
  T.eq(ch:connected(), true, "still connected after run()")
  ch:close()
  raw.close(lid)
  T.settle(20)
end

-- sched.exit() right after a reply (the dispatcher is then lingering, or blocked in a
-- read for requests in flight): the next run() on the same channel works.
function tests.a_channel_survives_sched_exit()
  local lid, port = T.listen {
    accept = function(_, id) raw.start(id) end,
    data = function(id, data) raw.send(id, data) end,
  }
  local ch = channel.new { host = "127.0.0.1", port = port, timeout = 3000 }
  local got
  sched.run(function()
    got = select(2, ch:request("a\n", line_reader))
    sched.exit()
  end)
  T.eq(got, "a", "first run")
  -- again, with a second request in flight when exit() comes
  sched.run(function()
    sched.fork(function() ch:request("slow\n", line_reader) end)
    got = select(2, ch:request("b\n", line_reader))
    sched.exit()
  end)
  T.eq(got, "b", "second run")
  local v = run(function()
    local ok, r = ch:request("c\n", line_reader)
    T.eq(ok, true, "third run ok")
    return r
  end, 5000)
  T.truthy(v == "c" or v == "slow", "third run: " .. tostring(v))
  ch:close()
  raw.close(lid)
  T.settle(20)
  -- the timeouts (3 s) of the requests abandoned by exit() were settled when run()
  -- returned: nothing keeps the engine busy now
  T.eq(raw.idle(), true, "no timer left behind")
end

function tests.argument_errors()
  T.raises("bad argument #1 to 'new' (table expected, got nil)", channel.new)
  T.raises("bad argument #1 to 'new' (field 'host' must be a string)", channel.new, {})
  T.raises("field 'auth' must be a function", channel.new, { host = "h", port = 1, auth = 1 })
  T.raises("field 'timeout' must be a number of milliseconds", channel.new, { host = "h", port = 1, timeout = "x" })
  if raw.tls then
    T.raises("field 'tls' must be true or a TLS context", channel.new, { host = "h", port = 1, tls = {} })
  else
    T.raises("field 'tls': TLS is not available in this build", channel.new, { host = "h", port = 1, tls = true })
  end
  local ch = channel.new { host = "127.0.0.1", port = 1 }
  T.raises("bad argument #1 to 'request' (string or table expected, got number)", ch.request, ch, 5, line_reader)
  T.raises("bad argument #2 to 'request' (function expected, got string)", ch.request, ch, "x", "y")
  T.raises("must be called from a coroutine of skysocket.sched", ch.request, ch, "x", line_reader)
  ch:close()
end

return tests
