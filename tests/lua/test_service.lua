-- @uses-services (the runner runs this file after the others)
-- skysocket.service: services on worker threads, messages, calls, crossing values,
-- names, failures, lifecycle. The runner's state is the root service.
local socket = require "skysocket"
local service = require "skysocket.service"
local T = require "testlib"
local tests = {}

local HAS_INT = math.type ~= nil
local unpack = table.unpack or unpack
local function P(...) return { n = select("#", ...), ... } end
local PRELUDE = "local service = require 'skysocket.service'\n"

-- T.raises through service.pcall: the function may suspend (Lua 5.1 cannot yield
-- across pcall).
local function raises(pattern, f, ...)
  local ok, err = service.pcall(f, ...)
  if ok then error("expected an error matching '" .. pattern .. "'", 2) end
  if type(err) ~= "string" then error("error is a " .. type(err) .. ", not a string", 2) end
  if not err:find(pattern, 1, true) then
    error("error '" .. err .. "' does not contain '" .. pattern .. "'", 2)
  end
  return err
end

-- Services started by the running test; killed at its end.
local started = {}
local function spawn(code, ...)
  local id = assert(service.spawn(PRELUDE .. code, ...))
  started[#started + 1] = id
  return id
end

local function finish()
  for _, id in ipairs(started) do service.kill(id) end
  started = {}
  T.wait("services gone", function() return service.count() == 1 end)
end

-- Run main in a coroutine of the root (watchdog ms), then kill what it started.
local function run(main, ms)
  service.timeout(10000)
  local ok, err = pcall(T.run_co, main, ms or 20000)
  finish()
  if not ok then error(err, 2) end
end

local ECHO = [[
service.dispatch(function(from, ...) return ... end)
]]

-- Deep equality that tells integers from floats (5.3+) and NaN from NaN.
local function same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then error(path .. ": " .. type(a) .. " vs " .. type(b), 0) end
  if type(a) == "number" then
    if HAS_INT and math.type(a) ~= math.type(b) then
      error(path .. ": " .. math.type(a) .. " vs " .. math.type(b), 0)
    end
    if a ~= a then
      if b == b then error(path .. ": NaN vs " .. b, 0) end
    elseif a ~= b or 1 / a ~= 1 / b and a == 0 and HAS_INT then
      error(path .. ": " .. tostring(a) .. " vs " .. tostring(b), 0)
    end
  elseif type(a) == "table" then
    for k, v in pairs(a) do same(v, b[k], path .. "[" .. tostring(k) .. "]") end
    for k in pairs(b) do
      if a[k] == nil then error(path .. ": extra key " .. tostring(k), 0) end
    end
  elseif a ~= b then
    error(path .. ": " .. tostring(a) .. " vs " .. tostring(b), 0)
  end
end

function tests.spawn_call_send_register_query()
  run(function()
    local kv = spawn([[
      local db = {}
      local from_main = ...
      service.dispatch(function(from, cmd, k, v)
        if cmd == "set" then db[k] = v return true
        elseif cmd == "get" then return db[k]
        elseif cmd == "who" then return service.self(), from, from_main end
      end)
      service.register("kv-test")
    ]], "arg1")
    T.truthy(kv ~= service.self(), "a new id")
    T.eq(service.self(), service.root(), "the runner is the root")
    -- register runs in the service's main: wait for it
    local deadline = socket.now() + 5000
    while service.query("kv-test") ~= kv and socket.now() < deadline do service.sleep(5) end
    T.eq(service.query("kv-test"), kv, "query finds the registered name")
    T.eq(service.query("no-such-name"), nil, "unknown name")
    T.eq(service.call(kv, "set", "a", 42), true, "set")
    T.eq(service.call(kv, "get", "a"), 42, "get")
    local me, from, arg1 = service.call(kv, "who")
    T.eq(me, kv, "self() inside the service")
    T.eq(from, service.self(), "from is the caller")
    T.eq(arg1, "arg1", "main's arguments")
    -- one-way: the handler runs, nothing comes back
    T.eq(service.send(kv, "set", "b", "x"), true, "send")
    T.eq(service.call(kv, "get", "b"), "x", "send arrived before the call (order)")
  end)
  T.eq(service.query("kv-test"), nil, "a killed service's name is gone")
end

function tests.values_round_trip_exactly()
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local cases = {
    P(nil), P(true), P(false), P(0), P(-1), P(2 ^ 53), P(0.5), P(-0.25),
    P(1e300), P(-1e-300), P(1 / 0), P(-1 / 0), P(0 / 0),
    P(""), P("a\0b"), P(table.concat(all)), P(string.rep("x", 100000)),
    P({}), P({ 1, 2, 3 }), P({ a = { b = { c = { d = "deep" } } } }),
    P({ [true] = 1, [false] = "f", [1.5] = "x", [-7] = "neg", s = "str" }),
    P(1, nil, 3, nil), P(nil, nil), P(),
  }
  if HAS_INT then
    cases[#cases + 1] = P(math.maxinteger, math.mininteger, 3.0, 3, -0.0)
    cases[#cases + 1] = P({ [1] = "int", [2.5] = "float", [3.0] = "three" })
  end
  run(function()
    local echo = spawn(ECHO)
    for i, c in ipairs(cases) do
      local r = P(service.call(echo, unpack(c, 1, c.n)))
      T.eq(r.n, c.n, "case " .. i .. ": number of values")
      for k = 1, c.n do same(c[k], r[k], "case " .. i .. " value " .. k) end
    end
    -- the count of values survives, trailing nils included
    T.eq(select("#", service.call(echo, 1, nil, nil)), 3, "trailing nils kept")
    T.eq(select("#", service.call(echo)), 0, "no values")
  end)
end

function tests.non_crossing_values_raise_with_their_path()
  run(function()
    local echo = spawn(ECHO)
    raises("bad argument #2 to 'send' (function cannot cross services)", service.send, echo, print)
    raises("bad argument #3 to 'send' (.x.y: function cannot cross services)",
      service.send, echo, 1, { x = { y = print } })
    raises("bad argument #2 to 'call' ([2]: thread cannot cross services)",
      service.call, echo, { 1, coroutine.create(function() end) })
    raises("bad argument #2 to 'send' ([\"a b\"]: userdata cannot cross services)",
      service.send, echo, { ["a b"] = io.stdout })
    local cyc = { x = {} }
    cyc.x.back = cyc
    raises("bad argument #2 to 'send' (.x.back: a table cycle cannot cross services)",
      service.send, echo, cyc)
    raises("a table key cannot cross services", service.send, echo, { [{}] = 1 })
    raises("bad argument #3 to 'spawn' (function cannot cross services)",
      service.spawn, "return", 1, print)
    raises("bad argument #1 to 'send' (number expected, got string)", service.send, "x")
    raises("bad argument #1 to 'send' (service id must be positive)", service.send, 0)
    -- a shared (non-cyclic) subtable is copied twice: fine
    local shared = { 1 }
    local a, b = service.call(echo, { shared, shared })
    T.eq(a[1][1] + a[2][1], 2, "shared subtable")
    T.eq(b, nil, "one value")
    -- a reply that cannot cross fails the call with the documented error
    local bad = spawn([[service.dispatch(function() return 1, { f = print } end)]])
    raises("reply value #2 (.f: function cannot cross services)", service.call, bad)
  end)
end

function tests.call_outside_coroutine_and_dead_targets()
  raises("not inside a coroutine", service.call, service.self(), 1)
  run(function()
    local s = spawn(ECHO)
    T.eq(service.kill(s), true, "kill")
    local ok, err = service.kill(s)
    T.eq(ok, false, "second kill")
    T.truthy(err:find("is dead", 1, true), err)
    local r, e = service.send(s, 1)
    T.eq(r, false, "send to a dead service")
    T.truthy(e:find("service " .. s .. " is dead", 1, true), e)
    raises("service " .. s .. " is dead", service.call, s, 1)
    raises("is dead", service.call, 123456789, 1)
    local ok2, e2 = service.kill(service.root())
    T.eq(ok2, false, "the root cannot be killed")
    T.truthy(e2:find("root", 1, true), e2)
  end)
end

function tests.errors_are_reported_with_traceback_and_the_service_lives_on()
  run(function()
    local root = service.self()
    local s = spawn([[
      local root = ...
      require("skysocket.sched").on_error(function(text) service.send(root, "hook", text) end)
      service.dispatch(function(from, cmd)
        if cmd == "raise" then error("boom in handler") end
        return "fine"
      end)
    ]], root)
    local texts = {}
    service.dispatch(function(from, what, text) if what == "hook" then texts[#texts + 1] = text end end)
    service.send(s, "raise")
    local err = raises("raised: ", service.call, s, "raise")
    T.truthy(err:find("boom in handler", 1, true), err)
    T.eq(service.call(s, "ok"), "fine", "still serving after errors")
    local deadline = socket.now() + 5000
    while #texts < 2 and socket.now() < deadline do service.sleep(5) end
    service.dispatch(nil)
    T.eq(#texts, 2, "both errors reached the service's error hook")
    for _, t in ipairs(texts) do
      T.truthy(t:find("boom in handler", 1, true) and t:find("traceback", 1, true), t)
    end
  end)
end

function tests.isolation_raise_loop_kill()
  run(function()
    local good = spawn(ECHO)
    local looper = spawn([[
      service.dispatch(function(_, ms)
        local t = os.clock() + ms / 1000
        while os.clock() < t do end
        return "done"
      end)
    ]])
    local sleeper = spawn([[service.dispatch(function(_, ms) service.sleep(ms) return "woke" end)]])
    -- the looper spins for a second on one worker; the others keep answering
    service.fork(function() service.pcall(service.call, looper, 600) end)
    service.sleep(50)
    local t0 = socket.now()
    for i = 1, 50 do T.eq(service.call(good, i), i, "echo while another loops") end
    T.truthy(socket.now() - t0 < 500, "served while the looper ran (" .. (socket.now() - t0) .. " ms)")
    -- a call that times out: error, and the late reply is ignored
    local old = service.timeout(100)
    raises("timeout after 100 ms", service.call, sleeper, 400)
    service.timeout(old)
    T.eq(service.call(sleeper, 1), "woke", "the sleeper answers later calls")
    -- killed while a call is in its handler: the caller gets an error
    service.fork(function() service.sleep(50); service.kill(sleeper) end)
    raises("service " .. sleeper .. " is dead", service.call, sleeper, 5000)
    T.eq(service.call(good, "x"), "x", "the others serve on")
  end)
end

function tests.exit_fails_pending_calls_and_frees_the_id()
  run(function()
    local s = spawn([[
      service.dispatch(function(_, cmd)
        if cmd == "exit" then service.exit() end
        service.sleep(200)
        return "late"
      end)
    ]])
    local errs = {}
    for i = 1, 3 do
      service.fork(function()
        local ok, e = service.pcall(service.call, s, "wait")
        errs[#errs + 1] = ok and "no error" or e
      end)
    end
    service.sleep(20)
    service.send(s, "exit")
    local deadline = socket.now() + 5000
    while #errs < 3 and socket.now() < deadline do service.sleep(5) end
    T.eq(#errs, 3, "every pending call answered")
    for _, e in ipairs(errs) do T.truthy(e:find("service " .. s .. " exited", 1, true), e) end
    T.eq(service.send(s, 1), false, "gone")
  end)
end

function tests.main_error_ends_the_service()
  run(function()
    local texts = {}
    service.dispatch(function(_, t) texts[#texts + 1] = t end)
    local s = spawn([[
      local root = ...
      require("skysocket.sched").on_error(function(t) service.send(root, t) end)
      error("main broke")
    ]], service.self())
    local deadline = socket.now() + 5000
    while (service.send(s, "ping") or not texts[1]) and socket.now() < deadline do service.sleep(5) end
    service.dispatch(nil)
    T.eq(service.send(s, "ping"), false, "the service ended")
    T.truthy(texts[1] and texts[1]:find("main broke", 1, true), tostring(texts[1]))
  end)
end

function tests.spawn_reports_load_errors()
  local id, err = service.spawn("this is not lua")
  T.eq(id, nil, "syntax error")
  T.truthy(err:find("syntax error") or err:find("expected") or err:find("near"), err)
  local id2, err2 = service.new("no.such.service.module")
  T.eq(id2, nil, "unknown module")
  T.truthy(err2:find("not found", 1, true), err2)
end

function tests.new_from_a_file_inherits_package_path()
  local dir = os.tmpname()
  os.remove(dir)
  local path = dir .. "_svc.lua"
  local f = assert(io.open(path, "w"))
  f:write([[
    local service = require "skysocket.service"
    local t = ...
    service.dispatch(function() return package.path, t.x, rawget(_G, "ROOT_GLOBAL") end)
  ]])
  f:close()
  ROOT_GLOBAL = "root only"
  run(function()
    local id = assert(service.new(path, { x = 9 }))
    started[#started + 1] = id
    local p, x, g = service.call(id)
    T.eq(p, package.path, "package.path inherited")
    T.eq(x, 9, "argument")
    T.eq(g, nil, "own globals")
  end)
  ROOT_GLOBAL = nil
  os.remove(path)
end

function tests.timers_and_sleep_in_services()
  run(function()
    local s = spawn([[
      local raw = require "skysocket"
      service.dispatch(function(_, ms)
        local t0 = raw.now()
        service.sleep(ms)
        local fired = false
        local tid = raw.timeout(10, function() fired = "cancelled one fired" end)
        assert(raw.cancel_timeout(tid) == true)
        raw.timeout(5, function() fired = fired or true end)
        service.sleep(30)
        return raw.now() - t0, fired
      end)
    ]])
    local took, fired = service.call(s, 50)
    T.truthy(took >= 49, "slept " .. tostring(took))
    T.eq(fired, true, "timer fired, cancelled one did not")
  end)
end

function tests.ordering_100000_messages_from_several_senders()
  local SENDERS, PER = 4, 25000
  run(function()
    local root = service.self()
    local sink = spawn([[
      local root, senders, per = ...
      local next, got, bad = {}, 0, nil
      service.dispatch(function(from, s, i)
        if s == "result" then return got, bad end
        local want = next[s] or 1
        if i ~= want and not bad then bad = ("sender " .. s .. ": got " .. i .. ", want " .. want) end
        next[s] = i + 1
        got = got + 1
        if got == senders * per then service.send(root, "all") end
      end)
    ]], root, SENDERS, PER)
    local done = false
    service.dispatch(function(_, what) if what == "all" then done = true end end)
    for s = 1, SENDERS do
      spawn([[
        local sink, s, per = ...
        for i = 1, per do service.send(sink, s, i) end
      ]], sink, s, PER)
    end
    local deadline = socket.now() + 60000
    while not done and socket.now() < deadline do service.sleep(10) end
    service.dispatch(nil)
    local got, bad = service.call(sink, "result")
    T.eq(bad, nil, "per-sender order")
    T.eq(got, SENDERS * PER, "all arrived")
  end, 70000)
end

function tests.call_pairs_never_cross()
  run(function()
    local echo = spawn([[service.dispatch(function(_, x) if x % 7 == 0 then service.sleep(1) end return x end)]])
    local clients = {}
    for c = 1, 4 do
      clients[c] = spawn([[
        local echo = ...
        service.dispatch(function(_, base, n)
          local left, bad = n, nil
          local me = service.self()
          for k = 1, n do
            service.fork(function()
              local v = base + k
              local r = service.call(echo, v)
              if r ~= v and not bad then bad = r .. " for " .. v end
              left = left - 1
            end)
          end
          while left > 0 do service.sleep(2) end
          return bad
        end)
      ]], echo)
    end
    local results, left = {}, #clients
    for c, id in ipairs(clients) do
      service.fork(function()
        results[c] = service.call(id, c * 100000, 500) or "ok"
        left = left - 1
      end)
    end
    local deadline = socket.now() + 30000
    while left > 0 and socket.now() < deadline do service.sleep(5) end
    for c = 1, #clients do T.eq(results[c], "ok", "client " .. c) end
  end, 40000)
end

function tests.threads_fixed_once_started()
  run(function()
    spawn(ECHO)
    local ok, err = service.threads(3)
    T.eq(ok, false, "cannot change a started pool")
    T.truthy(err:find("started", 1, true), err)
    T.truthy(service.threads() >= 1, "pool size")
    raises("bad argument #1 to 'threads'", service.threads, 0)
  end)
end

-- Linux only: counts from /proc.
local function proc_status(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local function fd_count()
  local p = io.popen("ls /proc/" .. (proc_status("Pid") or "self") .. "/fd 2>/dev/null | wc -l")
  if not p then return nil end
  local n = tonumber(p:read("*a"))
  p:close()
  return n
end

function tests.lifecycle_10000_services_no_growth()
  -- 10,000 under a real interpreter (release module); the in-process cargo runs are
  -- debug builds, where 3,000 keep the suite short and still show growth
  local REAL = arg and arg[-1] ~= nil
  local TOTAL = tonumber(os.getenv("SKYSOCKET_SERVICE_CYCLES") or "") or (REAL and 10000 or 3000)
  local BATCH = 100
  local function cycle(n)
    for _ = 1, n / BATCH do
      for _ = 1, BATCH do assert(service.spawn(PRELUDE .. "service.exit()")) end
      local deadline = socket.now() + 30000
      while service.count() > 1 do
        if socket.now() > deadline then error("services did not exit", 0) end
        socket.poll(1)
      end
    end
  end
  cycle(1000) -- warm-up: the pool, allocator arenas
  collectgarbage()
  local rss0, threads0, fds0 = proc_status("VmRSS"), proc_status("Threads"), fd_count()
  cycle(TOTAL - 1000)
  collectgarbage()
  local rss1, threads1, fds1 = proc_status("VmRSS"), proc_status("Threads"), fd_count()
  -- A little slack: lookups started by earlier tests may still hold a resolver thread
  -- or its socket; a leak per service would show as thousands.
  if threads0 then T.truthy(threads1 <= threads0 + 4, "threads grew: " .. threads0 .. " -> " .. threads1) end
  if fds0 then T.truthy(fds1 <= fds0 + 4, "descriptors grew: " .. fds0 .. " -> " .. fds1) end
  if rss0 then
    -- A leak of even 1 KiB per service would show as 9 MB here.
    T.truthy(rss1 - rss0 < 8 * 1024, string.format("RSS grew %d KiB over %d services", rss1 - rss0, TOTAL - 1000))
  end
end

function tests.root_without_sched_gets_messages_in_poll()
  local got
  local s = spawn([[local root = ... service.send(root, "hello", 1.5)]], service.self())
  service.dispatch(function(from, a, b) got = { from, a, b } end)
  T.wait("message in a plain poll loop", function() return got ~= nil end)
  service.dispatch(nil)
  T.eq(got[1], s, "from")
  T.eq(got[2], "hello", "value")
  T.eq(got[3], 1.5, "float")
  finish()
end

return tests
