-- Helpers shared by the Lua tests.
local socket = require "skysocket"
local T = {}

T.DEADLINE_MS = 10000

-- True when the runner made the engine shared (SKYSOCKET_TEST_SHARED=1): the socket
-- thread polls, and operations take effect there. single_state() is true for a test
-- that needs the single-state engine (configure, or ordering that only a state
-- polling its own engine has), which then returns early.
T.shared = false
function T.single_state() return T.shared end

function T.reset()
  socket.dispatch(nil)
  socket.on_error(nil)
end

-- Poll until pred() is true; fails the test after `ms` (default DEADLINE_MS).
function T.wait(what, pred, ms)
  local expired = false
  local timer = socket.timeout(ms or T.DEADLINE_MS, function() expired = true end)
  while not pred() do
    if expired then error("timed out waiting for " .. what, 2) end
    socket.poll(50)
  end
  socket.cancel_timeout(timer)
end

-- Poll for `ms` milliseconds, delivering whatever arrives.
function T.settle(ms)
  local done = false
  socket.timeout(ms, function() done = true end)
  while not done do socket.poll(ms) end
end

function T.eq(a, b, what)
  if a ~= b then
    error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2)
  end
end

function T.truthy(v, what)
  if not v then error((what or "assertion") .. " failed", 2) end
  return v
end

-- Expect f(...) to raise an error whose text contains `pattern` (plain find).
function T.raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  if ok then error("expected an error matching '" .. pattern .. "'", 2) end
  if type(err) ~= "string" then error("error is a " .. type(err) .. ", not a string", 2) end
  if not err:find(pattern, 1, true) then
    error("error '" .. err .. "' does not contain '" .. pattern .. "'", 2)
  end
  return err
end

-- A listener on 127.0.0.1 with a free port: returns id, port.
function T.listen(handler, host)
  local id, _, port = socket.listen(host or "127.0.0.1", 0)
  assert(id, port)
  assert(socket.start(id, handler))
  return id, port
end

-- After each test: every socket must be closed (close leftovers so the next test starts clean).
function T.check_clean()
  T.settle(20)
  local left = socket.info()
  if #left > 0 then
    local ids = {}
    for _, s in ipairs(left) do ids[#ids + 1] = s.id .. "(" .. s.state .. ")" end
    error("sockets left open: " .. table.concat(ids, " "))
  end
end

function T.cleanup()
  for _, s in ipairs(socket.info()) do socket.close(s.id, true) end
  T.settle(10)
end

-- A seeded pseudo-random generator: rand(n) gives an integer in 1..n (Park-Miller,
-- exact in doubles, so the same sequence on every Lua version).
function T.rng(seed)
  return function(n)
    seed = (seed * 16807) % 2147483647
    return seed % n + 1
  end
end

-- Deterministic pseudo-random bytes (works without integer ops on 5.1).
function T.bytes(n, seed)
  local t, x = {}, seed or 1
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(math.floor(x / 65536) % 256)
  end
  return table.concat(t)
end

-- Run main under skysocket.sched with a watchdog (default 8 s); a timeout, an error
-- in any coroutine or in main fails the test at the caller's line. Returns main's
-- results.
function T.run_co(main, ms)
  local sched = require "skysocket.sched"
  local compat = require "skysocket.compat"
  local timed_out, errors = false, {}
  sched.on_error(function(e) errors[#errors + 1] = e end)
  local wd = socket.timeout(ms or 8000, function() timed_out = true; sched.exit() end)
  local r = compat.pack(sched.run(main))
  socket.cancel_timeout(wd)
  sched.on_error(nil)
  if timed_out then error("test timed out", 2) end
  if #errors > 0 then error(errors[1], 2) end
  if not r[1] then error(tostring(r[2]), 2) end
  return compat.unpack(r, 2, r.n)
end

return T
