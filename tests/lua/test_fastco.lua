local T = require "testlib"
local raw = require "skysocket"
local tests = {}

-- raw.waker / raw.runner: the coroutine layer's C fast paths (issue 18), driven
-- directly (sched uses them on PUC Lua; on LuaJIT it keeps Lua versions).
function tests.waker_wakes_per_socket_and_clears_the_drained_mark()
  local reader, queue = {}, { [0] = 0 }
  local wake = raw.waker(reader, queue)
  local co = coroutine.create(function() end)
  reader[11], reader[12], reader[13] = co, true, false
  wake(11, 64); wake(12, 1); wake(13, 1); wake(14, 1); wake("x")
  T.eq(queue[0], 1, "one queued")
  T.eq(queue[1], co, "the parked reader")
  T.eq(reader[11], false, "marked woken")
  T.eq(reader[12], nil, "drained mark cleared")
  T.eq(reader[13], false, "a woken reader is not queued twice")
  wake(11, 1)
  T.eq(queue[0], 1, "still one")
  -- socket ids go up to 53 bits (more than a C int: Lua 5.1's lua_rawgeti cannot)
  local big = math.floor(2 ^ 40) + 5
  local co2 = coroutine.create(function() end)
  reader[big] = co2
  wake(big, 1)
  T.eq(queue[2], co2, "a reader of a large id")
  T.eq(reader[big], false, "marked woken")
  reader[big] = true
  wake(big, 1)
  T.eq(reader[big], nil, "drained mark cleared on a large id")
  local ok, err = pcall(raw.waker, reader, nil)
  T.eq(ok, false, "bad argument")
  assert(tostring(err):find("bad argument #2 to 'waker' (table expected, got nil)", 1, true), err)
end

-- waker(socks, queue, slot): the reader state is field `slot` of a record per socket
-- (skysocket.socket's records); the delivery loop does the same work without a call.
function tests.record_waker_wakes_the_reader_in_the_socket_record()
  local socks, queue = {}, { [0] = 0 }
  local wake = raw.waker(socks, queue, 2)
  local co = coroutine.create(function() end)
  local big = math.floor(2 ^ 40) + 5
  socks[11], socks[12], socks[13] = { true, co }, { true, true }, { true, false }
  socks[big] = { true, nil, co }
  wake(11, 64); wake(12, 1); wake(13, 1); wake(14, 1); wake(big, 1); wake("x")
  T.eq(queue[0], 1, "one queued")
  T.eq(queue[1], co, "the parked reader")
  T.eq(socks[11][2], false, "marked woken")
  T.eq(socks[12][2], nil, "drained mark cleared")
  T.eq(socks[13][2], false, "a woken reader is not queued twice")
  T.eq(socks[big][2], nil, "no reader: nothing")
  T.eq(socks[big][3], co, "other fields untouched")
  socks[big][2] = co
  wake(big, 1)
  T.eq(queue[2], co, "a reader of a large id")
  T.eq(socks[big][2], false, "marked woken")
  socks[15] = "not a record"
  wake(15, 1)
  T.eq(queue[0], 2, "a non-table record is skipped")
  local ok, err = pcall(raw.waker, socks, queue, "two")
  T.eq(ok, false, "bad slot")
  assert(tostring(err):find("bad argument #3 to 'waker' (integer expected, got string)", 1, true), err)
  -- The socket layer's records, end to end: an echo through skysocket.socket.
  local socket = require "skysocket.socket"
  local got
  local ok2, err2 = socket.run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id)
      socket.start(id)
      for _ = 1, 3 do
        local d = socket.read(id)
        if not d then break end
        socket.write(id, d)
      end
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    local parts = {}
    for i = 1, 3 do
      socket.write(c, "m" .. i)
      parts[#parts + 1] = socket.read(c, 2)
    end
    got = table.concat(parts, ",")
    socket.close(c)
    socket.close(lid)
  end)
  T.eq(ok2, true, tostring(err2))
  T.eq(got, "m1,m2,m3", "echoed through the record waker")
end

function tests.runner_resumes_parked_coroutines_and_hands_back_the_rest()
  local PARKED = {}
  local queue, qargs = { [0] = 0 }, {}
  local run = raw.runner(queue, qargs, PARKED)
  local log = {}
  local function parker(name, n)
    return coroutine.create(function()
      for i = 1, n do log[#log + 1] = name .. i; coroutine.yield(PARKED) end
      return "done", name
    end)
  end
  local a, b = parker("a", 2), parker("b", 1)
  local c = coroutine.create(function() error("boom") end)
  local d = coroutine.create(function() coroutine.yield("other", 2) end)
  for i, co in ipairs({ a, b, c, d, a, b }) do queue[i] = co end
  queue[0] = 6
  local h, co, ok, v = run(1)
  T.eq(log[1], "a1", "a ran"); T.eq(log[2], "b1", "b ran")
  T.eq(h, 4, "back after c"); T.eq(co, c, "c"); T.eq(ok, false, "c failed")
  assert(tostring(v):find("boom", 1, true), tostring(v))
  h, co, ok, v = run(h)
  T.eq(h, 5, "after d"); T.eq(co, d, "d"); T.eq(ok, true, "d yielded"); T.eq(v, "other", "its value")
  h, co, ok, v = run(h)
  T.eq(log[3], "a2", "a again")
  T.eq(h, 7, "after b's end"); T.eq(co, b, "b ended"); T.eq(ok, true, "ok"); T.eq(v, "done", "first result")
  T.eq(coroutine.status(b), "dead", "b dead")
  T.eq(select("#", run(h)), 1, "empty: h alone")
  T.eq(queue[1], nil, "slots cleared")
  -- an entry with values is left for Lua (queue[-1] a number: some entries have
  -- values); the exit flag (queue[-1] = true) stops the loop
  queue[7], qargs[7], queue[0] = a, { n = 1, "v" }, 7
  queue[-1] = 1
  T.eq(run(7), 7, "stops at an entry with values")
  T.eq(queue[7], a, "left in place")
  qargs[7] = nil
  queue[-1] = true
  T.eq(run(7), 7, "exit flag")
  queue[-1] = nil
  local ok2, err = pcall(raw.runner, queue, 5)
  T.eq(ok2, false, "bad argument")
  assert(tostring(err):find("bad argument #2 to 'runner' (table expected, got number)", 1, true), err)
end

-- raw.coreader: skysocket.socket's read(id [, n]) in C on Lua 5.3+
-- (src/lua/fast/coread.rs), driven directly on records like skysocket.socket's
-- {connected, reader, owner} and an id with no read buffer (so nothing is ever taken
-- here; the socket tests cover the path with data). Whatever it does not do itself
-- it hands to the Lua read it was given. On 5.1 and LuaJIT there is none (their C
-- functions cannot be continued after a yield).
function tests.coreader_parks_as_the_lua_read_does_and_hands_over_the_rest()
  if _VERSION == "Lua 5.1" then -- LuaJIT says 5.1 too
    T.eq(raw.coreader, nil, "no coreader on 5.1 / LuaJIT")
    return
  end
  local PARKED, socks, handed, parked_after = {}, {}, {}, {}
  local function lua_read(...)
    handed[#handed + 1] = { n = select("#", ...), ... }
    if (...) == "yield" then return "after", coroutine.yield("in lua") end
    return "lua", ...
  end
  local read, setflag = raw.coreader(PARKED, socks, lua_read, function(id)
    parked_after[#parked_after + 1] = id
  end)
  local ID = 987654321
  -- junk and unknown ids go to the Lua read, arguments as given
  T.eq(read(), "lua", "no arguments")
  T.eq(handed[1].n, 0, "handed over as is")
  T.eq(select(2, read("x", 3)), "x", "bad id")
  T.eq(select(3, read(-3, 2)), 2, "negative id, with n")
  T.eq(select(2, read(ID)), ID, "unknown id")
  socks[ID] = { true, true }
  T.eq(read(ID), "lua", "the main thread cannot park")
  T.eq(select(3, read(ID, 5)), 5, "read(id, n) with less than n buffered")
  -- the Lua read may wait: its results come back through the C function
  local lco = coroutine.create(function() return read("yield") end)
  local _, y = coroutine.resume(lco)
  T.eq(y, "in lua", "the Lua read yielded")
  local _, r1, r2 = coroutine.resume(lco, "resumed")
  T.eq(r1, "after", "its results"); T.eq(r2, "resumed", "with the resume values")
  local rec
  local function run(r, wake_as)
    rec = r
    socks[ID] = r
    handed = {}
    local co
    co = coroutine.create(function()
      if rec[3] == "me" then rec[3] = co end
      return "returned", read(ID)
    end)
    local ok, a, b, c = coroutine.resume(co)
    T.eq(ok, true, tostring(a))
    if a ~= PARKED then return co, false, a, b, c end
    if wake_as == nil then return co, true end -- left parked
    rec[2] = wake_as == "co" and co or wake_as
    ok, a, b, c = coroutine.resume(co)
    T.eq(ok, true, tostring(a))
    return co, true, a, b, c
  end
  -- parks (rec[2] = the coroutine, yields PARKED)
  local co, parked = run({ true, nil, "me" })
  T.eq(parked, true, "parked"); T.eq(rec[2], co, "rec[2] is the reader")
  -- woken (false) with nothing buffered: rec[2] cleared, the Lua read takes over
  local ret, a, b -- ret: "returned"
  co, parked, ret, a, b = run({ true, true, "me" }, false)
  T.eq(parked, true, "parked from true too")
  T.eq(a, "lua", "the Lua read after the wait"); T.eq(b, ID, "with the id")
  T.eq(#handed, 1, "handed over once")
  -- resumed by its own reference (not through a wake): the same
  co, parked, ret, a = run({ true, true, "me" }, "co")
  T.eq(parked, true, "parked"); T.eq(a, "lua", "handed over")
  -- abandoned meanwhile (rec[2] replaced): false, ""
  co, parked, ret, a, b = run({ true, true, "me" }, "gone")
  T.eq(parked, true, "parked"); T.eq(a, false, "abandoned"); T.eq(b, "", "nothing read")
  T.eq(#handed, 0, "not handed over")
  -- the flag set while it waits: after_park(id), then the rest as usual
  co, parked = run({ true, true, "me" })
  setflag(true)
  rec[2] = false
  local ok2, r = coroutine.resume(co)
  T.eq(ok2, true, tostring(r)); T.eq(r, "returned", "resumed")
  T.eq(parked_after[1], ID, "after_park ran")
  -- with the flag set it does not wait itself
  co, parked, ret, a = run({ true, true, "me" })
  T.eq(parked, false, "flag set: no wait here"); T.eq(a, "lua", "handed over")
  setflag(false)
  co, parked = run({ true, true, "me" })
  T.eq(parked, true, "flag cleared: waits again")
  -- handed over (nothing changed): not connected, not the owner, another reader
  -- waiting or just woken
  local other = coroutine.create(function() end)
  for _, case in ipairs({
    { { false, true, "me" }, "not connected" },
    { { true, true, other }, "not the owner" },
    { { true, other, "me" }, "another reader" },
    { { true, false, "me" }, "a woken reader" },
  }) do
    local before = case[1][2]
    co, parked, ret, a = run(case[1])
    T.eq(parked, false, case[2] .. ": did not park")
    T.eq(a, "lua", case[2] .. ": handed over")
    T.eq(rec[2], before, case[2] .. ": record unchanged")
  end
  local ok3, err = pcall(raw.coreader, PARKED, socks, lua_read, 5)
  T.eq(ok3, false, "bad argument")
  assert(tostring(err):find("bad argument #4 to 'coreader' (function expected)", 1, true), err)
end

-- read's errors name the caller's line whichever read runs (C or Lua)
function tests.read_errors_name_the_callers_line()
  local socket = require "skysocket.socket"
  -- (no tail calls: on 5.1 a tail call leaves no frame to name)
  local ok, err = pcall(function() local d = socket.read(424242); return d end)
  T.eq(ok, false, "unknown id")
  assert(tostring(err):find("test_fastco.lua:%d+: socket 424242 is not open"), err)
  local ok2, err2 = socket.run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id) socket.start(id); socket.close(id) end)
    local c = assert(socket.open("127.0.0.1", port))
    local ok3, e3 = pcall(function() local d = socket.read(c, -1); return d end)
    socket.close(c)
    socket.close(lid)
    T.eq(ok3, false, "bad size")
    assert(tostring(e3):find("test_fastco.lua:%d+: bad argument #2 to 'read'"), e3)
  end)
  T.eq(ok2, true, tostring(err2))
end

-- Wakes of coroutine readers and plain callbacks in the same delivery runs: the
-- delivery loop writes the run queue's tail once per run of wakes and must write it
-- back before any callback (which may push to the queue itself) and before anything
-- else is delivered. Clients with callback handlers (raw API) pingpong with coroutine
-- echo servers, so every poll mixes both kinds; a wake lost would stall a pair.
function tests.wakes_mixed_with_callbacks_in_one_run_lose_no_reader()
  local socket = require "skysocket.socket"
  local N, ROUNDS = 8, 50
  local replies, done = {}, 0
  local ok, err = socket.run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id)
      socket.start(id)
      while true do
        local d = socket.read(id)
        if not d then break end
        socket.write(id, d)
      end
      socket.close(id)
    end)
    -- Two pings in flight per pair: then every poll has echoes for the clients and
    -- pings for the servers, so callbacks and wakes alternate within one run.
    local clients, sent = {}, {}
    local function ping(id)
      if sent[id] < ROUNDS then sent[id] = sent[id] + 1; raw.send(id, "ping") end
    end
    for i = 1, N do
      local cid = assert(raw.connect("127.0.0.1", port))
      clients[i] = cid
      replies[cid], sent[cid] = 0, 0
      assert(raw.start(cid, {
        open = function(id) ping(id); ping(id) end,
        data = function(id, d)
          for _ = 1, math.floor(#d / 4) do
            replies[id] = replies[id] + 1
            if replies[id] == ROUNDS then done = done + 1 end
            ping(id)
          end
        end,
      }))
    end
    local waited = 0
    while done < N and waited < 10000 do socket.sleep(5); waited = waited + 5 end
    for _, cid in ipairs(clients) do raw.close(cid) end
    socket.close(lid)
  end)
  T.eq(ok, true, tostring(err))
  T.eq(done, N, "every pair finished its rounds")
end

return tests
