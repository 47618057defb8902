-- @uses-services (the runner runs this file after the others)
-- Bad input from Lua: a deterministic fuzz of every exported function with wrong
-- types, missing arguments, extreme numbers, NaN, huge and binary strings, closed and
-- never-issued ids, from the top level and from inside callbacks. Every call must
-- return normally or raise a string error starting with "bad argument"; a control
-- echo connection must keep working throughout.
--
-- SKYSOCKET_FUZZ_ITERS sets the number of top-level calls (default 20000; the
-- valgrind run uses fewer).
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

local ITERS = tonumber(os.getenv("SKYSOCKET_FUZZ_ITERS") or "") or 20000
local ECHO_EVERY = 500

-- Deterministic PRNG (Lua 5.1 compatible: floats only).
local rand = T.rng(12345)

local BIG = string.rep("\0\255x", 349526) -- ~1 MiB, binary
local BINARY = "\0\1\2\255\254:[]unix:\n"
local NEVER_ISSUED = 2 ^ 40 + 5

-- unpack that keeps nils up to n (5.1 has unpack, 5.2+ table.unpack)
local unpack = table.unpack or unpack
local function unpack_args(t, n) return unpack(t, 1, n) end

-- Runs `f(...)` protected and checks the outcome. Returns the call's first result.
local calls, raised = 0, 0
local function is_arg_error(err)
  if type(err) ~= "string" then return false end
  return err:find("^bad argument") ~= nil or err:find("^[^\n]-:%d+: bad argument") ~= nil
end

-- The first failure seen inside a callback (errors there would only reach the hook).
local cb_failure

local function checked(name, f, args, n, in_callback)
  calls = calls + 1
  local ok, r = pcall(f, unpack_args(args, n))
  if not ok then
    raised = raised + 1
    local allowed = is_arg_error(r)
      -- Documented: poll and configure cannot run inside a callback.
      or (in_callback and (name == "poll" or name == "configure") and type(r) == "string"
          and r:find("cannot be called from inside a callback", 1, true))
    if not allowed then
      local shown = {}
      for i = 1, n do
        local v = args[i]
        shown[i] = type(v) == "string" and ("string(" .. #v .. ")") or tostring(v)
      end
      error(string.format("%s(%s) raised a %s: %s", name, table.concat(shown, ", "),
        type(r), tostring(r)), 0)
    end
    return nil
  end
  return r
end


local function build_pool(closed_tcp, closed_udp)
  local nan = 0 / 0
  return {
    nil, true, false, 0, -1, 1, 2, 7, 1.5, -0.5, 65535, 65536, 65536.0, 2 ^ 31, 2 ^ 53,
    -2 ^ 53, 2 ^ 63, -2 ^ 63, math.mininteger or -2 ^ 63, math.maxinteger or 2 ^ 53,
    math.huge, -math.huge, nan, 1e300, -1e300, 1e22,
    "", "0", "1", "-1", "65536", "1e300", "nan", "127.0.0.1", "::1", "[::1]:0",
    "127.0.0.1:0", "127.0.0.1:65536", "localhost", "unix:", "unix:/nonexistent-dir/x.sock",
    "unix:" .. string.rep("p", 200), "\1\0\80\127\0\0\1", "\2\0\80", BINARY, BIG,
    {}, { backlog = -1 }, { backlog = 2 ^ 40 }, { backlog = "x", reuseport = 5 },
    setmetatable({}, { __index = function() error("index trap") end }),
    function() end, tostring, coroutine.create(function() end),
    closed_tcp, closed_udp, NEVER_ISSUED, -closed_tcp,
    -- TLS: a real (client) context and option tables good and bad.
    socket.tls and socket.tls_context { verify = false } or false,
    { verify = false, alpn = { "h2", BINARY } }, { mode = "server", cert = BINARY, key = BIG },
    { ca = "unix:", min_version = "1.3" },
  }, 62
end

-- Names of the functions to fuzz (everything but loop/exit).
local function fuzz_names()
  local names = {}
  for name, f in pairs(socket) do
    -- `_test_*`: the panic hooks of test_panic.lua (present with SKYSOCKET_TEST_HOOKS=1).
    if type(f) == "function" and name ~= "loop" and name ~= "exit" and not name:find("^_test") then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

-- poll would block with a nil/negative/huge timeout: only short ones or non-numbers.
local function poll_args_ok(v)
  if type(v) == "number" then return v == v and v >= 0 and v <= 10 end
  return v ~= nil and type(v) ~= "string" -- strings may parse as numbers
end

local created_timers = {}
-- Live ids of the control sockets: a pool number that happens to equal one (e.g.
-- 65536 is tag 1, slot 0) would legitimately close it, so such calls are skipped.
local protected = {}
local function hits_protected(args, n)
  for i = 1, n do
    local v = tonumber(args[i])
    if v and protected[v] then return true end
  end
  return false
end

local function fuzz_call(names, pool, npool, in_callback)
  local name = names[rand(#names)]
  local n = rand(5) - 1
  local args = {}
  for i = 1, n do args[i] = pool[rand(npool)] end
  if name == "poll" and (n == 0 or not poll_args_ok(args[1])) then
    return
  end
  if hits_protected(args, n) then return end
  if name == "bind" and n > 0 and type(args[1]) ~= "table" then
    -- A number that names a real descriptor (0, 1, 2 …) would adopt the runner's own
    -- stdin/stdout and make it non-blocking; bind's success path has its own tests.
    local v = tonumber(args[1])
    if v and v >= 0 and v < 2 ^ 31 then return end
  end
  if name == "resolve" and not in_callback and args[1] == BIG then
    return -- a blocking lookup of a 1 MiB name is not interesting
  end
  local r = checked(name, socket[name], args, n, in_callback)
  if name == "timeout" and type(r) == "number" then
    created_timers[#created_timers + 1] = r
  end
end

-- A control echo pair: returns a function that checks one round trip.
local function control_echo()
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s) socket.send(id, s) end,
  }
  local got = {}
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, { data = function(_, s) got[#got + 1] = s end })
  local k = 0
  return function()
    k = k + 1
    local token = "ping-" .. k .. "-" .. string.rep("z", k % 100)
    got = {}
    assert(socket.send(cid, token))
    T.wait("control echo " .. k, function() return table.concat(got) == token end)
  end, lid, cid, function() return k end
end

local function closed_ids()
  local lid = T.listen { accept = function(_, id) socket.close(id) end }
  socket.close(lid)
  local u = assert(socket.udp())
  socket.close(u)
  T.settle(10)
  return lid, u
end

function tests.fuzz_every_function_with_bad_input()
  local closed_tcp, closed_udp = closed_ids()
  local pool, npool = build_pool(closed_tcp, closed_udp)
  local names = fuzz_names()
  assert(#names >= 30, "exported functions: " .. #names)
  local echo, lid, cid, echoes = control_echo()
  echo()

  -- A pair whose data callback fuzzes, and a timer that fuzzes and re-arms.
  local cb_calls = 0
  local fuzz_server
  local fl, fport = T.listen {
    accept = function(_, id) fuzz_server = id; socket.start(id) end,
    data = function()
      for _ = 1, 5 do
        local ok, e = pcall(fuzz_call, names, pool, npool, true)
        if not ok then cb_failure = cb_failure or e end
        cb_calls = cb_calls + 1
      end
    end,
  }
  local fc = assert(socket.connect("127.0.0.1", fport))
  socket.start(fc, {})
  T.wait("fuzz pair accepted", function() return fuzz_server ~= nil end)
  -- The ticking timer's id is protected too (cancel_timeout(2) would stop it).
  local stop_timer, tick_id = false, nil
  local function tick()
    protected[tick_id] = nil
    for _ = 1, 5 do
      local ok, e = pcall(fuzz_call, names, pool, npool, true)
      if not ok then cb_failure = cb_failure or e end
      cb_calls = cb_calls + 1
    end
    if not stop_timer then
      tick_id = socket.timeout(1, tick)
      protected[tick_id] = true
    end
  end
  tick_id = socket.timeout(1, tick)
  protected[tick_id] = true

  local keep = {}
  -- Every socket open now is a control socket (the two pairs and their listeners).
  for _, s in ipairs(socket.info()) do keep[s.id] = true; protected[s.id] = true end
  for i = 1, ITERS do
    fuzz_call(names, pool, npool, false)
    if i % 100 == 0 then
      socket.send(fc, "go") -- drives the data-callback fuzz
      socket.poll(0)
    end
    if i % ECHO_EVERY == 0 then
      echo()
      -- Sockets the fuzz created (listen/udp/connect that succeeded) are closed so
      -- descriptors stay bounded.
      for _, s in ipairs(socket.info()) do
        if not keep[s.id] then socket.close(s.id, true) end
      end
    end
  end
  stop_timer = true
  socket.cancel_timeout(tick_id)
  echo()
  for _, t in ipairs(created_timers) do socket.cancel_timeout(t) end
  print(string.format("  fuzz: %d calls (%d top-level, %d in callbacks), %d raised "
    .. "'bad argument', %d control echoes, %d functions", calls, ITERS, cb_calls, raised,
    echoes(), #names))
  assert(cb_calls > 0, "callback fuzz ran")
  if cb_failure then error("inside a callback: " .. tostring(cb_failure)) end
  socket.dispatch(nil)
  socket.on_error(nil)
  for _, s in ipairs(socket.info()) do socket.close(s.id, true) end
  T.settle(50)
end

function tests.ports_are_validated_without_truncation()
  T.raises("bad argument #2 to 'listen'", socket.listen, "127.0.0.1", 65536.0)
  T.raises("bad argument #2 to 'listen'", socket.listen, "127.0.0.1", 1.5)
  T.raises("bad argument #2 to 'listen'", socket.listen, "127.0.0.1", -1)
  T.raises("bad argument #2 to 'listen'", socket.listen, "127.0.0.1", 0 / 0)
  T.raises("bad argument #1 to 'listen'", socket.listen, 65536)
  T.raises("bad argument #2 to 'connect'", socket.connect, "127.0.0.1", 2 ^ 53)
  T.raises("bad argument #2 to 'connect'", socket.connect, "localhost", 70000)
  T.raises("bad argument #2 to 'udp'", socket.udp, "127.0.0.1", 65536)
  T.raises("bad argument #3 to 'udp_connect'", socket.udp_connect, 1, "127.0.0.1", -5)
end

function tests.listen_with_only_a_port_binds_loopback()
  local id, ip, port = assert(socket.listen(0))
  T.eq(ip, "127.0.0.1", "listen ip")
  local sock
  for _, s in ipairs(socket.info()) do
    if s.id == id then sock = s.sock end
  end
  T.eq(sock, "127.0.0.1:" .. port, "info sock")
  socket.close(id)
end

function tests.huge_timeouts_do_not_crash()
  -- Timers far in the future are accepted (or refused with "bad argument") but never
  -- panic; poll with a huge timeout returns when an earlier timer fires.
  for _, ms in ipairs { 2 ^ 53, 1e22, 1e300, 2 ^ 63 } do
    local ok, t = pcall(socket.timeout, ms, function() end)
    if ok then
      T.eq(type(t), "number", "timer id")
      T.eq(socket.cancel_timeout(t), true, "cancel far timer")
    else
      assert(is_arg_error(t), tostring(t))
    end
  end
  for _, ms in ipairs { 1e300, 2 ^ 63, 1e22 } do
    local fired = false
    local t = socket.timeout(5, function() fired = true end)
    local ok, err = pcall(socket.poll, ms)
    assert(ok or is_arg_error(err), tostring(err))
    -- (Other mail may end a poll first when services exist, e.g. what the service
    -- fuzz left for the root: poll again.)
    local deadline = socket.now() + 5000
    while ok and not fired and socket.now() < deadline do
      ok, err = pcall(socket.poll, ms)
      assert(ok or is_arg_error(err), tostring(err))
    end
    if ok then T.eq(fired, true, "poll(" .. ms .. ") returned after the timer") end
    socket.cancel_timeout(t)
  end
end

-- The service API with bad input: every call returns, or raises a string error that is
-- an argument error or one of the documented call failures; the root keeps working
-- and every service started is gone at the end.
function tests.fuzz_service_api()
  local service = require "skysocket.service"
  local closed_tcp, closed_udp = closed_ids()
  local pool, npool = build_pool(closed_tcp, closed_udp)
  local cyc = {}
  cyc.self = cyc
  local extra = { cyc, { a = { b = { print } } }, { [{}] = 1 }, { 1, 2, { 3, { 4 } } },
    "return 1", "error('x')", "local s = require 'skysocket.service' s.dispatch(function(_, ...) return ... end)" }
  for _, v in ipairs(extra) do npool = npool + 1; pool[npool] = v end
  local names = {}
  for name, f in pairs(service) do
    if type(f) == "function" and name ~= "run" and name ~= "exit" and name ~= "fork"
      and name ~= "sleep" and name ~= "wait" then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local ITERS_S = math.floor(ITERS / 10)
  local documented = { "bad argument", "is dead", "exited", "raised:", "timeout after",
    "not inside a coroutine", "has no dispatch handler", "cannot cross services" }
  local function allowed(err)
    if type(err) ~= "string" then return false end
    for _, d in ipairs(documented) do if err:find(d, 1, true) then return true end end
    return false
  end
  local spawned = {}
  local saved_timeout = service.timeout()
  local ok_run, run_err = pcall(T.run_co, function()
    local old_timeout = service.timeout(200)
    local function ignore() end
    service.dispatch(ignore)
    local echo = assert(service.spawn(pool[npool]))
    spawned[#spawned + 1] = echo
    for _ = 1, ITERS_S do
      local name = names[rand(#names)]
      local n = rand(5) - 1
      local args = {}
      for i = 1, n do args[i] = pool[rand(npool)] end
      if name == "threads" or name == "timeout" then n = 0 end -- keep the settings
      if name == "kill" and args[1] == echo then args[1] = -1 end
      local r = { service.pcall(service[name], unpack(args, 1, n)) }
      if not r[1] and not allowed(r[2]) then
        local shown = {}
        for i = 1, n do shown[i] = type(args[i]) == "string" and ("string(" .. #args[i] .. ")") or tostring(args[i]) end
        error(string.format("service.%s(%s) raised: %s", name, table.concat(shown, ", "), tostring(r[2])), 0)
      end
      if (name == "spawn" or name == "new") and r[1] and type(r[2]) == "number" then
        spawned[#spawned + 1] = r[2]
      end
      if name == "dispatch" then service.dispatch(ignore) end
    end
    -- the control service still answers
    T.eq(service.call(echo, "still", 1), "still", "echo service after the fuzz")
    service.timeout(old_timeout)
    service.dispatch(nil)
  end, 60000)
  service.timeout(saved_timeout)
  service.dispatch(nil)
  for _, id in ipairs(spawned) do service.kill(id) end
  if not ok_run then error(run_err, 0) end
  T.wait("fuzzed services gone", function() return service.count() == 1 end)
end

-- The RESP parser with hostile bytes: valid replies mutated (bytes flipped, cut,
-- spliced, duplicated) and random bytes from RESP's alphabet. Every call returns one
-- of its documented shapes and never raises; a complete reply parses the same alone,
-- after other bytes, and through resp_parse_many.
function tests.fuzz_resp_parser()
  local parse, many = socket.resp_parse, socket.resp_parse_many
  local seeds = {
    "+OK\r\n", "-ERR x\r\n", ":-12\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*-1\r\n", "_\r\n",
    "*3\r\n$1\r\na\r\n:1\r\n*1\r\n+b\r\n", "%2\r\n+k\r\n#t\r\n:1\r\n,2.5\r\n", "~1\r\n(123\r\n",
    ">2\r\n+p\r\n+q\r\n", "=7\r\ntxt:abc\r\n", "!3\r\nbad\r\n", "|1\r\n+a\r\n+b\r\n:7\r\n",
  }
  local alphabet = "$*%~>|=!+-:,#_(\r\n0123456789-tx"
  local function mutate(s)
    local op = rand(6)
    local p = rand(#s + 1)
    if op == 1 then -- flip a byte
      return s:sub(1, p - 1) .. string.char(rand(256) - 1) .. s:sub(p + 1)
    elseif op == 2 then -- cut
      return s:sub(1, p - 1)
    elseif op == 3 then -- splice another seed in
      return s:sub(1, p - 1) .. seeds[rand(#seeds)] .. s:sub(p)
    elseif op == 4 then -- a byte from the alphabet
      local i = rand(#alphabet)
      return s:sub(1, p - 1) .. alphabet:sub(i, i) .. s:sub(p)
    elseif op == 5 then -- nest it
      return "*" .. rand(3) .. "\r\n" .. s .. s
    end
    local t = {} -- random alphabet bytes
    for i = 1, rand(40) do local j = rand(#alphabet); t[i] = alphabet:sub(j, j) end
    return table.concat(t)
  end
  local shapes = { complete = 0, need = 0, bad = 0 }
  local ITERS_R = math.max(2000, math.floor(ITERS / 2))
  for i = 1, ITERS_R do
    local s = seeds[rand(#seeds)]
    for _ = 1, rand(4) do s = mutate(s) end
    local ok, r = pcall(parse, s)
    if not ok then error("resp_parse raised on " .. string.format("%q", s) .. ": " .. tostring(r), 0) end
    local a, b, c = parse(s)
    if a == nil then
      if type(b) == "number" then
        assert(b > #s, "need beyond the buffer: " .. b .. " for " .. string.format("%q", s))
        shapes.need = shapes.need + 1
      else
        assert(type(b) == "string", "message expected for " .. string.format("%q", s))
        shapes.bad = shapes.bad + 1
      end
    else
      assert(type(a) == "boolean" and type(c) == "number" and c > 1 and c <= #s + 1,
        "complete reply shape for " .. string.format("%q", s))
      shapes.complete = shapes.complete + 1
      -- the same after other bytes
      local a2, _, c2 = parse("+x\r\n" .. s, 5)
      T.eq(a2, a, "ok at an offset, case " .. i .. " " .. string.format("%q", s)); T.eq(c2, c + 4, "next at an offset, case " .. i)
    end
    local okm, n, nxt, _, _, stop = pcall(many, s, 1, 3, nil, 0)
    if not okm then error("resp_parse_many raised on " .. string.format("%q", s) .. ": " .. tostring(n), 0) end
    assert(n >= 0 and n <= 3 and nxt >= 1 and nxt <= #s + 1, "resp_parse_many shape")
    if n < 3 then assert(type(stop) == "number" or type(stop) == "string", "stop") end
  end
  print(string.format("  resp fuzz: %d inputs: %d complete, %d incomplete, %d malformed",
    ITERS_R, shapes.complete, shapes.need, shapes.bad))
  assert(shapes.complete > 0 and shapes.need > 0 and shapes.bad > 0, "every shape seen")
end

return tests
