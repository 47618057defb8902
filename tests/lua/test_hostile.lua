-- Hostile clients against the coroutine layer, in-process (issue 19): a raising handler
-- closes its socket, the write limit and budget drop peers that do not read, a read
-- timeout bounds a whole call (slowloris). The example servers are tested as child processes in
-- test_examples.lua.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local compat = require "skysocket.compat"
local T = require "testlib"
local tests = {}

-- Run main under the scheduler with a watchdog. Coroutine errors are collected in
-- `errors` (returned) instead of failing the test: some tests raise on purpose.
local function run(main, ms)
  local timed_out, errors = false, {}
  sched.on_error(function(e) errors[#errors + 1] = e end)
  local wd = raw.timeout(ms or 10000, function() timed_out = true; sched.exit() end)
  local r = compat.pack(sched.run(main))
  raw.cancel_timeout(wd)
  sched.on_error(nil)
  if timed_out then error("test timed out", 2) end
  if not r[1] then error(tostring(r[2]) .. "\n" .. table.concat(errors, "\n"), 2) end
  return errors
end

local function expect_no_errors(errors)
  if #errors > 0 then error(errors[1], 2) end
end

local function queued(id)
  for _, s in ipairs(raw.info()) do if s.id == id then return s.wbuffer end end
end

function tests.a_handler_that_raises_closes_its_socket_and_drops_its_buffers()
  local buffers0 = raw.buffers()
  local errors = run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local served = 0
    socket.start(lid, function(id)
      socket.start(id)
      local line = socket.readline(id)
      if line == "boom" then error("handler fails on purpose") end
      served = served + 1
      socket.write(id, "ok " .. tostring(line) .. "\n")
      socket.close(id)
    end)
    -- Each bad client sends more than the 128 KiB pause threshold after its request,
    -- so without the close the server would stop reading and never see a FIN.
    local tail = string.rep("x", 200 * 1024)
    local closed = 0
    for i = 1, 20 do
      socket.fork(function()
        local c = assert(socket.open("127.0.0.1", port))
        socket.write(c, "boom\n" .. tail)
        socket.settimeout(c, 3000)
        local r, e = socket.read(c)
        T.eq(r, false, "bad client " .. i .. " sees the close (" .. tostring(e) .. ")")
        closed = closed + 1
        socket.close(c)
      end)
    end
    while closed < 20 do socket.sleep(10) end
    -- A good client is still served.
    local c = assert(socket.open("127.0.0.1", port))
    socket.write(c, "hello\n")
    T.eq(socket.readline(c), "ok hello", "good client served")
    socket.close(c)
    T.eq(served, 1, "served")
    socket.sleep(20)
    T.eq(raw.buffers(), buffers0, "no read buffer left behind")
    T.eq(#raw.info(), 1, "only the listener is open")
    socket.close(lid)
  end)
  T.eq(#errors, 20, "every failure reported")
  assert(errors[1]:find("handler fails on purpose", 1, true), errors[1])
end

function tests.a_handler_that_raises_before_start_closes_the_accepted_socket()
  local errors = run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id) error("fails before start") end)
    local c = assert(socket.open("127.0.0.1", port))
    socket.settimeout(c, 3000)
    T.eq(socket.read(c), false, "client sees the close")
    socket.close(c)
    socket.close(lid)
  end)
  T.eq(#errors, 1, "reported")
end

function tests.a_coroutine_that_raises_closes_the_connection_it_opened_and_read()
  local errors = run(function()
    local held
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id) socket.start(id); held = id end)
    local done = false
    socket.fork(function()
      local c = assert(socket.open("127.0.0.1", port))
      socket.write(c, "hi")
      socket.read(c, 2) -- the server answers below
      error("client coroutine fails")
    end)
    while not held do socket.sleep(5) end
    socket.write(held, "yo")
    socket.settimeout(held, 3000)
    T.eq(socket.read(held, 2), "hi", "request")
    T.eq(socket.read(held), false, "the failed coroutine's connection was closed")
    socket.close(held)
    -- A coroutine that ends normally leaves its sockets open (it may hand them on).
    local kept
    socket.fork(function() kept = assert(socket.open("127.0.0.1", port)) end)
    while not kept do socket.sleep(5) end
    socket.sleep(20)
    T.eq(socket.invalid(kept), false, "still open after a normal end")
    socket.close(kept)
    socket.close(lid)
    done = true
    T.truthy(done, "done")
  end)
  T.eq(#errors, 1, "one error")
end

-- configure{} needs an idle engine: run f with these settings, then restore.
local function with_settings(settings, f)
  T.settle(10)
  local before = raw.configure()
  assert(raw.configure(settings))
  local ok, err = pcall(f)
  for _, s in ipairs(raw.info()) do raw.close(s.id, true) end
  T.settle(10)
  assert(raw.configure { write_limit = before.write_limit, write_budget = before.write_budget })
  if not ok then error(err, 0) end
end

function tests.a_client_that_never_reads_is_dropped_at_the_write_limit()
  if T.single_state() then return end
  with_settings({ write_limit = 1024 * 1024, write_budget = 0 }, function()
    local peak, server_saw = 0, nil
    expect_no_errors(run(function()
      local lid, _, port = assert(socket.listen("127.0.0.1", 0))
      socket.start(lid, function(id)
        socket.start(id)
        while true do -- echo, ignoring what write returns, as a naive server does
          local d = socket.read(id)
          if not d then server_saw = "closed"; break end
          socket.write(id, d)
          peak = math.max(peak, queued(id) or 0)
        end
        socket.close(id)
      end)
      local c = assert(socket.open("127.0.0.1", port))
      socket.pause(c) -- never reads
      local chunk = string.rep("r", 64 * 1024)
      for _ = 1, 256 do -- 16 MiB
        if not socket.write(c, chunk) then break end
        socket.sleep(0)
        if server_saw then break end
      end
      for _ = 1, 200 do
        if server_saw then break end
        socket.sleep(10)
      end
      T.eq(server_saw, "closed", "the server dropped the client")
      socket.close(c)
      socket.close(lid)
    end))
    assert(peak <= 1024 * 1024, "queue stayed within the limit: " .. peak)
  end)
end

function tests.the_write_budget_drops_the_peers_that_do_not_read()
  if T.single_state() then return end
  local BUDGET = 2 * 1024 * 1024
  local CHUNK = 128 * 1024
  local ROUNDS = 80 -- 10 MiB to each: more than the kernel buffers of a loopback peer
  with_settings({ write_limit = 0, write_budget = BUDGET }, function()
    local drops, drops_seen, max_total, fast_ok = 0, 0, 0, false
    expect_no_errors(run(function()
      local lid, _, port = assert(socket.listen("127.0.0.1", 0))
      local conns = {}
      socket.start(lid, function(id)
        socket.start(id)
        conns[#conns + 1] = id
        local r = socket.read(id)
        if r == false then drops = drops + 1 end
        socket.close(id)
      end)
      local slow = {}
      for i = 1, 6 do
        slow[i] = assert(socket.open("127.0.0.1", port))
        socket.pause(slow[i])
      end
      local fast = assert(socket.open("127.0.0.1", port))
      while #conns < 7 do socket.sleep(5) end
      -- The server pushes to everybody; only `fast` reads.
      local chunk = string.rep("b", CHUNK)
      local got = 0
      socket.fork(function()
        while got < ROUNDS * CHUNK do
          local d = socket.read(fast)
          if not d then break end
          got = got + #d
        end
      end)
      for _ = 1, ROUNDS do
        for _, id in ipairs(conns) do socket.write(id, chunk) end
        local total = 0
        for _, s in ipairs(raw.info()) do total = total + s.wbuffer end
        max_total = math.max(max_total, total)
        socket.sleep(5)
      end
      for _ = 1, 300 do
        if got >= ROUNDS * CHUNK then break end
        socket.sleep(10)
      end
      fast_ok = got == ROUNDS * CHUNK
      socket.sleep(20)
      drops_seen = drops -- before the clients close
      for _, c in ipairs(slow) do socket.close(c) end
      socket.close(fast)
      socket.close(lid)
    end))
    -- Within the budget plus one send per socket.
    assert(max_total <= BUDGET + 7 * CHUNK, "queued in all stayed within the budget: " .. max_total)
    io.write(string.format("  budget %d: peak queued in all %d, %d dropped\n", BUDGET, max_total, drops_seen))
    T.eq(drops_seen, 6, "every non-reader dropped, the reader kept")
    T.eq(fast_ok, true, "the reading client got everything")
  end)
end

function tests.a_read_timeout_bounds_the_whole_call_so_slowloris_is_cut_off()
  expect_no_errors(run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local result
    socket.start(lid, function(id)
      socket.start(id)
      socket.settimeout(id, 300)
      local a, b = socket.readline(id)
      result = { a, b }
      -- what trickled in is still there: nothing was consumed
      T.eq(socket.read(id, 3), "GET", "data kept after the timeout")
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    -- One byte every 50 ms, never a newline: each byte alone would reset a per-wait
    -- timeout of 300 ms forever.
    local stop = false
    socket.fork(function()
      local text = "GET /slowly..................................."
      for i = 1, #text do
        if stop then break end
        socket.write(c, text:sub(i, i))
        socket.sleep(50)
      end
    end)
    local waited = 0
    while not result and waited < 3000 do socket.sleep(20); waited = waited + 20 end
    stop = true
    T.eq(result and result[1], nil, "readline gave up")
    T.eq(result and result[2], "timeout", "with timeout")
    assert(waited < 1500, "cut off in time: " .. waited .. " ms")
    socket.close(c)
    socket.close(lid)
  end))
end

return tests
