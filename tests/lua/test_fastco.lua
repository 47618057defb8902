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

-- raw.coreader(PARKED): read(id)'s common turn in C on Lua 5.3+ (src/lua/fast/coread.rs),
-- driven directly on records like skysocket.socket's {connected, reader, owner} and an
-- id with no read buffer (so nothing is ever taken); the socket tests cover the path
-- with data. On 5.1 and LuaJIT there is none (their C functions cannot be continued).
function tests.coreader_parks_as_the_lua_read_does_and_declines_the_rest()
  local puc51 = _VERSION == "Lua 5.1" -- LuaJIT says 5.1 too
  if puc51 then
    T.eq(raw.coreader, nil, "no coreader on 5.1 / LuaJIT")
    return
  end
  local PARKED = {}
  local coread = raw.coreader(PARKED)
  local ID = 987654321
  -- junk never crashes: nil (Lua takes over)
  T.eq(coread(), nil, "no arguments")
  T.eq(coread("rec", ID), nil, "not a table")
  T.eq(coread({ true, true }, "x"), nil, "bad id")
  T.eq(coread({ true, true }, -3), nil, "negative id")
  T.eq(coread({ true, true, nil }, ID, false), nil, "the main thread cannot park")
  local rec
  local function run(r, slow, wake_as)
    rec = r
    local co
    co = coroutine.create(function()
      rec[3] = rec[3] == "me" and co or rec[3]
      return "returned", coread(rec, ID, slow)
    end)
    local ok, a, b = coroutine.resume(co)
    T.eq(ok, true, tostring(a))
    if a ~= PARKED then return co, false, a, b end
    if wake_as == nil then return co, true end -- left parked
    rec[2] = wake_as == "co" and co or wake_as
    ok, a, b = coroutine.resume(co)
    T.eq(ok, true, tostring(a))
    return co, true, a, b
  end
  -- parks (rec[2] = the coroutine, yields PARKED); woken (false) with nothing
  -- buffered: clears rec[2] and returns nothing
  local co, parked, a, b = run({ true, true, "me" }, false, false)
  T.eq(parked, true, "parked")
  T.eq(a, "returned", "resumed"); T.eq(b, nil, "nothing taken")
  T.eq(rec[2], nil, "reader state cleared")
  -- the record held the coroutine while it was parked
  co, parked = run({ true, nil, "me" }, false, nil)
  T.eq(parked, true, "parked from nil too"); T.eq(rec[2], co, "rec[2] is the reader")
  -- resumed by its own reference (not through a wake): the same as woken
  co, parked, a, b = run({ true, true, "me" }, false, "co")
  T.eq(parked, true, "parked"); T.eq(b, nil, "nothing"); T.eq(rec[2], nil, "cleared")
  -- abandoned meanwhile (rec[2] replaced): false
  co, parked, a, b = run({ true, true, "me" }, false, "gone")
  T.eq(parked, true, "parked"); T.eq(b, false, "abandoned")
  -- declines (nil, nothing changed): slow mode, not connected, not the owner, another
  -- reader waiting
  local other = coroutine.create(function() end)
  for _, case in ipairs({
    { { true, true, "me" }, true, "slow" },
    { { false, true, "me" }, false, "not connected" },
    { { true, true, other }, false, "not the owner" },
    { { true, other, "me" }, false, "another reader" },
    { { true, false, "me" }, false, "a woken reader" },
  }) do
    local before = case[1][2]
    co, parked, a, b = run(case[1], case[2])
    T.eq(parked, false, case[3] .. ": did not park")
    T.eq(a, "returned", case[3]); T.eq(b, nil, case[3] .. ": nil")
    T.eq(rec[2], before, case[3] .. ": record unchanged")
  end
end

return tests
