-- Runs each example as a child process of the same interpreter and talks to it.
local socket = require "skysocket.socket"
local raw = require "skysocket"
local T = require "testlib"
local tests = {}

-- Only under a real interpreter (arg[-1]); the in-process Rust run has none to spawn.
if not (arg and arg[-1]) then return {} end
local interp = arg[-1]
local i = -1
while arg and arg[i - 1] do i = i - 1 end -- the interpreter is the lowest index
interp = arg[i] or interp

local function free_port()
  local id, _, port = assert(raw.listen("127.0.0.1", 0))
  raw.close(id)
  return port
end

-- Start an example (or a test server: a path with a "/") in the background; `prefix`
-- goes before the command (environment settings), or is run by a shell first when it
-- sets a ulimit. Returns a function that stops the child and returns its log, and
-- the child's pid.
local children = {} -- pids of the servers started by the running test

local function spawn_with(prefix, script, ...)
  local args = table.concat({ ... }, " ")
  local pidfile = os.tmpname()
  local log = os.tmpname()
  local path = script:find("/", 1, true) and script or ("examples/" .. script)
  local cmd = string.format("%s %s %s", interp, path, args)
  if prefix:find("ulimit", 1, true) then
    cmd = string.format("sh -c '%s; exec %s'", prefix, cmd)
  else
    cmd = prefix .. " " .. cmd
  end
  os.execute(string.format("%s >%s 2>&1 & echo $! > %s", cmd, log, pidfile))
  local f = assert(io.open(pidfile)); local pid = f:read("*l"); f:close()
  os.remove(pidfile)
  children[#children + 1] = pid
  return function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    local lf = io.open(log); local text = lf and lf:read("*a") or ""; if lf then lf:close() end
    os.remove(log)
    return text
  end, pid
end

local function spawn(script, ...) return spawn_with("", script, ...) end

-- A field of /proc/PID/status in KiB (e.g. "VmHWM", the peak resident set), or nil.
local function status_kib(pid, field)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)"))
end

-- CPU seconds (user + system) the process has used, or nil.
local function cpu_seconds(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local fields = {}
  for w in text:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- USER_HZ ticks
end

local function alive(pid)
  local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
  return r == true or r == 0
end

local function run(main, ms)
  local done = false
  local wd = raw.timeout(ms or 8000, function() socket.exit() end)
  local ok, err = socket.run(function() main(); done = true end)
  raw.cancel_timeout(wd)
  if not done then error("example test failed or timed out: " .. tostring(err), 2) end
end

-- Connect, retrying while the child starts up.
local function connect(port)
  for _ = 1, 100 do
    local id = socket.open("127.0.0.1", port)
    if id then return id end
    socket.sleep(20)
  end
  error("cannot connect to example on port " .. port)
end

local function capture(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

function tests.echo_co()
  local port = free_port()
  local stop = spawn("echo_co.lua", port)
  run(function()
    local c = connect(port)
    socket.write(c, "hello echo")
    T.eq(socket.read(c, 10), "hello echo", "echo")
    socket.close(c)
  end)
  stop()
end

-- Read lines until one contains `text` (plain); returns it, or fails after 50 lines.
local function until_line(c, text, what)
  for _ = 1, 50 do
    local l = socket.readline(c)
    if not l then error((what or text) .. ": connection closed", 2) end
    if l:find(text, 1, true) then return l end
  end
  error((what or text) .. ": not seen", 2)
end

function tests.chat_broadcasts_and_drops_slow_clients()
  local port = free_port()
  local stop = spawn("chat.lua", port, 1024)
  run(function()
    local a = connect(port)
    T.truthy(socket.readline(a):find("welcome"), "welcome a")
    local b = connect(port)
    T.truthy(socket.readline(b):find("welcome"), "welcome b")
    until_line(a, "joined", "a sees b join")
    until_line(b, "joined", "b's own join")
    socket.write(a, "/nick alice\n")
    until_line(a, "is now alice", "rename seen by a")
    until_line(b, "is now alice", "rename seen by b")
    socket.write(a, "hi all\n")
    T.eq(until_line(b, "hi all"), "alice: hi all", "broadcast")
    T.eq(until_line(a, "hi all"), "alice: hi all", "own line")
    socket.write(b, "/quit\n")
    until_line(a, " left", "b left")
    local r
    repeat r = socket.readline(b) until not r
    T.eq(r, false, "b closed by the server")
    socket.close(b)
    -- A client that stops reading gets dropped once its queue passes the threshold.
    local slow = connect(port)
    socket.readline(slow)
    until_line(a, "joined", "slow joined")
    socket.pause(slow)
    local dropped = false
    socket.fork(function()
      while true do
        local l = socket.readline(a)
        if not l then break end
        if l:find("too slow", 1, true) then dropped = true; break end
      end
    end)
    local line = string.rep("z", 4000) .. "\n"
    for _ = 1, 3000 do
      if dropped then break end
      socket.write(a, line)
      socket.sleep(1)
    end
    T.eq(dropped, true, "slow client dropped")
    socket.close(slow)
    socket.close(a)
  end, 20000)
  stop()
end

function tests.udp_echo_ipv4_and_ipv6()
  local port = free_port()
  local stop = spawn("udp_echo.lua", port)
  raw.timeout(300, function() end)
  T.settle(300)
  local out4 = capture(interp .. " examples/udp_echo.lua client " .. port .. " 127.0.0.1")
  local out6 = capture(interp .. " examples/udp_echo.lua client " .. port .. " ::1")
  local log = stop()
  T.eq(out4, "ping from 127.0.0.1\n", "ipv4 answer (" .. log .. ")")
  if log:find("no ::1", 1, true) then return end -- no IPv6 loopback on this host
  T.eq(out6, "ping from ::1\n", "ipv6 answer")
end

-- Skynet's gate -> agent pattern: 1,000 connections through the gate to 8 agent
-- services, packets written in random pieces, every echo checked byte for byte; each
-- agent serves its share (round robin), and every connection's close reaches the
-- watchdog.
function tests.gate_1000_connections_through_8_agents()
  local port = free_port()
  -- 1,000 connections at once need more than the common 1,024-descriptor soft limit
  -- leaves room for: raise it where the hard limit allows.
  local nofile = "ulimit -n 4096 2>/dev/null || ulimit -n $(ulimit -Hn) 2>/dev/null"
  local stop = spawn_with(nofile, "gate.lua", port, 8)
  run(function() socket.close(connect(port)) end)
  local out = capture(string.format("sh -c '%s; exec %s examples/gate.lua client %d 1000 12'",
    nofile, interp, port))
  T.truthy(out:find("^ok 1000 connections, %d+ bytes echoed\n$"), out)
  -- The watchdog hears of every close (the probe connection above makes 1,001).
  run(function() socket.sleep(300) end)
  local log = stop()
  T.truthy(log:find("1000 connections closed", 1, true), log)
end

function tests.framed_rpc_client_and_server()
  local port = free_port()
  local stop = spawn("framed_rpc.lua", port)
  run(function() socket.close(connect(port)) end)
  local out = capture(interp .. " examples/framed_rpc.lua client " .. port .. " 5")
  stop()
  T.eq(out, "ok hello\nok SKYSOCKET\nok 42\nok 1000\nerr unknown method nope\n", "rpc answers")
end

function tests.resp_pipelining_and_redis_cli()
  local port = free_port()
  local stop = spawn("resp.lua", port)
  run(function()
    local c = connect(port)
    -- pipelined: RESP arrays and an inline command in one write
    socket.write(c, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n41\r\n" ..
      "*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" ..
      "PING\r\n*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n*3\r\n$6\r\nEXISTS\r\n$1\r\nk\r\n$1\r\nz\r\n" ..
      "*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nNOPE\r\n")
    local want = "+OK\r\n:42\r\n$2\r\n42\r\n+PONG\r\n$4\r\na\r\nb\r\n:1\r\n:1\r\n$-1\r\n-ERR unknown command 'NOPE'\r\n"
    T.eq(socket.read(c, #want), want, "pipelined replies")
    socket.close(c)
  end)
  if os.execute("command -v redis-cli >/dev/null 2>&1") == true or os.execute("command -v redis-cli >/dev/null 2>&1") == 0 then
    local cli = "redis-cli -p " .. port .. " "
    T.eq(capture(cli .. "set x 9"), "OK\n", "redis-cli set")
    T.eq(capture(cli .. "incr x"), "10\n", "redis-cli incr")
    T.eq(capture(cli .. "get x"), "10\n", "redis-cli get")
    T.eq(capture(cli .. "ping"), "PONG\n", "redis-cli ping")
  end
  stop()
end

---------------------------------------------------------------- hostile clients (issue 19)

-- Item 1: a coroutine server must not exit while a slow reader drains a large echo
-- (sched.run took polls that only flushed writes for a deadlock).
function tests.echo_co_survives_a_slow_reader_of_64_mib()
  local port = free_port()
  local stop = spawn("echo_co.lua", port)
  local TOTAL, HIGH, LOW = 64 * 1024 * 1024, 24 * 1024 * 1024, 8 * 1024 * 1024
  local got = 0
  run(function()
    local c = connect(port)
    local sent = 0
    local chunk = string.rep("e", 256 * 1024)
    -- Write in bursts up to HIGH bytes in flight, then wait until the reader is down
    -- to LOW: between bursts the server has nothing to read and only flushes.
    local reading = true
    socket.warning(c, function() end) -- our own queue grows by design
    socket.fork(function()
      while sent < TOTAL and reading do
        while sent < TOTAL and sent - got < HIGH do
          socket.write(c, chunk)
          sent = sent + #chunk
        end
        while reading and sent - got > LOW do socket.sleep(5) end
      end
    end)
    -- Read slowly: 64 KiB, then a pause.
    while got < TOTAL do
      local d = socket.read(c, 65536)
      if not d then break end
      got = got + #d
      socket.sleep(2)
    end
    reading = false
    socket.close(c)
    T.eq(got, TOTAL, "the whole echo arrived")
    local c2 = connect(port)
    socket.write(c2, "still there")
    T.eq(socket.read(c2, 11), "still there", "server still serves")
    socket.close(c2)
  end, 50000)
  local log = stop()
  T.eq(log:find("giving up", 1, true), nil, "server log: " .. log)
end

-- Item 2: a handler that raises must close its socket. Under a descriptor limit of 64
-- a few hundred failing requests (each followed by more than the 128 KiB read pause
-- threshold) would otherwise lock every new client out.
function tests.raising_handlers_do_not_exhaust_descriptors()
  local port = free_port()
  local stop = spawn_with("ulimit -n 64", "tests/lua/servers/raising.lua", port)
  local closed, failed = 0, 0
  run(function()
    socket.close(connect(port))
    local tail = string.rep("t", 200 * 1024)
    for wave = 1, 6 do
      local left = 40
      for _ = 1, 40 do
        socket.fork(function()
          local c = socket.open("127.0.0.1", port)
          if c then
            socket.settimeout(c, 5000)
            socket.write(c, "boom\n" .. tail)
            local r = socket.read(c)
            if r == false then closed = closed + 1 else failed = failed + 1 end
            socket.close(c)
          else
            failed = failed + 1
          end
          left = left - 1
        end)
      end
      while left > 0 do socket.sleep(10) end
    end
    local c = connect(port)
    socket.settimeout(c, 5000)
    socket.write(c, "hello\n")
    T.eq(socket.readline(c), "ok hello", "a good client is served afterwards")
    socket.close(c)
  end, 50000)
  stop()
  T.eq(failed, 0, "bad clients not closed by the server")
  T.eq(closed, 240, "bad clients closed")
end

-- Item 3: a client that sends and never reads is dropped at the module's write limit
-- (64 MiB); the server's peak RSS stays near that bound.
function tests.echo_co_and_resp_drop_clients_that_never_read()
  for _, ex in ipairs { "echo_co.lua", "resp.lua" } do
    local port = free_port()
    local stop, pid = spawn(ex, port)
    local dropped, sent = false, 0
    run(function()
      local c = connect(port)
      socket.pause(c) -- never read
      if ex == "resp.lua" then
        -- 1 MiB value, then GETs of it: 14 bytes of request for 1 MiB of reply.
        local v = string.rep("v", 1024 * 1024)
        socket.write(c, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" .. #v .. "\r\n" .. v .. "\r\n")
        local get = string.rep("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 16)
        for _ = 1, 64 do -- up to 1 GiB of replies
          if not socket.write(c, get) then dropped = true; break end
          sent = sent + 16
          socket.sleep(5)
          if socket.disconnected(c) then dropped = true; break end
        end
      else
        local chunk = string.rep("n", 1024 * 1024)
        local function own_queue()
          for _, s in ipairs(socket.netstat()) do if s.id == c then return s.wbuffer end end
          return 0
        end
        for _ = 1, 256 do -- up to 256 MiB
          -- keep our own queue short: our write limit must not be what ends this
          while own_queue() > 4 * 1024 * 1024 and not socket.disconnected(c) do socket.sleep(5) end
          local ok, e = socket.write(c, chunk)
          if not ok then
            assert(not tostring(e):find("limit", 1, true), e)
            dropped = true
            break
          end
          sent = sent + 1
          if socket.disconnected(c) then dropped = true; break end
        end
      end
      -- A client that does not read learns of the drop only when it writes again.
      for _ = 1, 300 do
        if dropped or socket.disconnected(c) then dropped = true; break end
        local ok, e = socket.write(c, ex == "resp.lua" and "PING\r\n" or "x")
        if not ok then
          assert(not tostring(e):find("limit", 1, true), e)
          dropped = true
          break
        end
        socket.sleep(10)
      end
      socket.close(c)
    end, 40000)
    local hwm = status_kib(pid, "VmHWM")
    local up = alive(pid)
    stop()
    T.eq(dropped, true, ex .. ": the client was dropped")
    T.eq(up, true, ex .. ": the server lives on")
    io.write(string.format("  %s: non-reading client dropped after %d MiB sent (resp: GETs of 1 MiB), server peak RSS %d KiB\n",
      ex, sent, hwm or -1))
    assert(hwm and hwm < 200 * 1024, ex .. ": peak RSS " .. tostring(hwm) .. " KiB")
  end
end

-- Descriptors the process has open, or nil.
local function fd_count(pid)
  local p = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
  local n = tonumber(p:read("*a"))
  p:close()
  return n
end

-- Item 3: with its own slow-client policy off, chat.lua facing 100 clients that never
-- read (a stopped process) while one talks is held to the module's write budget
-- (256 MiB): once the kernel buffers are full, the backlogged clients are dropped.
function tests.chat_with_stopped_clients_stays_within_the_write_budget()
  local port = free_port()
  local stop, pid = spawn("chat.lua", port, 100000000) -- slow_kb: never
  local N = 100
  local fds0, fds_full, fds_end
  run(function()
    socket.close(connect(port))
    fds0 = fd_count(pid)
    local stopped = {}
    for i = 1, N do
      stopped[i] = assert(raw.connect("127.0.0.1", port))
      raw.start(stopped[i], { open = function(id) raw.pause(id) end }) -- never reads
    end
    local talker = connect(port)
    socket.warning(talker, function() end)
    socket.fork(function() -- the talker reads its own broadcasts
      while socket.read(talker) do end
    end)
    while (fd_count(pid) or 0) < fds0 + N + 1 do socket.sleep(20) end
    fds_full = fd_count(pid)
    local line = string.rep("w", 4000) .. "\n"
    for i = 1, 20000 do -- up to 8 GB of broadcast
      socket.write(talker, line)
      if i % 50 == 0 then
        socket.sleep(10)
        if (fd_count(pid) or 0) <= fds0 + N / 2 then break end -- dropped
        if (status_kib(pid, "VmRSS") or 0) > 600 * 1024 then break end -- unbounded
      end
    end
    fds_end = fd_count(pid)
    socket.close(talker)
    for i = 1, N do raw.close(stopped[i], true) end
  end, 50000)
  local hwm = status_kib(pid, "VmHWM")
  local up = alive(pid)
  stop()
  io.write(string.format("  chat: %d stopped clients, server fds %d -> %d, peak RSS %d KiB\n",
    N, fds_full or -1, fds_end or -1, hwm or -1))
  T.eq(up, true, "server lives on")
  T.truthy(fds_end <= fds0 + N / 2, "stopped clients dropped")
  assert(hwm and hwm < 450 * 1024, "peak RSS " .. tostring(hwm) .. " KiB over the budget")
end

-- Item 4: idle and slowloris clients are disconnected by the examples' timeouts.
function tests.examples_disconnect_idle_and_slowloris_clients()
  for _, ex in ipairs { "echo.lua", "echo_co.lua", "resp.lua", "framed_rpc.lua", "chat.lua" } do
    local port = free_port()
    local stop = spawn_with("SKYSOCKET_IDLE_MS=300", ex, port)
    run(function()
      -- silent after connecting
      local c = connect(port)
      local t0 = os.time()
      local r
      repeat r = socket.read(c) until r == false or os.time() - t0 > 5
      T.eq(r, false, ex .. ": idle client disconnected")
      socket.close(c)
      if not ex:find("^echo") then -- for an echo every byte is a whole request
        -- one byte every 100 ms, never a complete request
        local s = connect(port)
        local cut = false
        socket.fork(function()
          while true do
            local d = socket.read(s)
            if not d then cut = true; break end
          end
        end)
        local partial = ex == "framed_rpc.lua" and "\255\255" .. string.rep("a", 60) or
          ex == "resp.lua" and "*1\r\n$40\r\n" .. string.rep("a", 60) or string.rep("a", 60)
        for i = 1, #partial do
          if cut then break end
          socket.write(s, partial:sub(i, i))
          socket.sleep(100)
        end
        T.eq(cut, true, ex .. ": slowloris client cut off within " .. #partial / 10 .. " s")
        socket.close(s)
      end
    end, 15000)
    stop()
  end
end

-- Item 5: chat announces a burst of joins with gathered writes (one per client per
-- tick) and keeps answering.
function tests.chat_handles_a_burst_of_1000_joins()
  local N = tonumber(os.getenv("SKYSOCKET_CHAT_BURST") or "") or 1000
  local port = free_port()
  local stop, pid = spawn("chat.lua", port)
  local welcomed, bytes, took = 0, 0, nil
  run(function()
    socket.close(connect(port))
    local cpu0 = cpu_seconds(pid)
    local t0 = os.clock()
    local ids = {}
    local h = {
      data = function(id, d)
        if not ids[id] then ids[id] = true; welcomed = welcomed + 1 end
        bytes = bytes + #d
      end,
    }
    local clock0 = os.time()
    for i = 1, N do
      local id = assert(raw.connect("127.0.0.1", port))
      raw.start(id, h)
      ids[i] = nil
    end
    while welcomed < N and os.time() - clock0 < 30 do socket.sleep(20) end
    T.eq(welcomed, N, "every client welcomed")
    -- a line still goes round quickly
    local a, b = connect(port), connect(port)
    socket.write(a, "/nick probe\n")
    local t1 = os.time()
    socket.write(a, "ping after burst\n")
    until_line(b, "probe: ping after burst", "broadcast after the burst")
    T.truthy(os.time() - t1 <= 2, "line delivered within 2 s")
    took = os.clock() - t0
    local cpu = cpu_seconds(pid) - cpu0
    io.write(string.format("  chat: %d joins, server CPU %.2f s, %.1f KiB to the burst clients\n",
      N, cpu, bytes / 1024))
    -- O(N^2) join broadcasts took 1.26 s for 1,000 joins here; gathered: ~0.1 s
    T.truthy(cpu < 0.6 * N / 1000, "server CPU " .. cpu .. " s for " .. N .. " joins")
    for _, s in ipairs(raw.info()) do raw.close(s.id, true) end
    socket.close(a)
    socket.close(b)
  end, 60000)
  stop()
  T.truthy(took, "ran")
end

-- Item 6: resp.lua protocol bugs.
local function resp_reply(port, request)
  local out
  run(function()
    local c = connect(port)
    socket.settimeout(c, 3000)
    socket.write(c, request)
    out = socket.readall(c) -- the server closes after a protocol error
    socket.close(c)
  end)
  return out
end

local function resp_exchange(port, request, n)
  local out
  run(function()
    local c = connect(port)
    socket.settimeout(c, 3000)
    socket.write(c, request)
    out = {}
    for i = 1, n do out[i] = socket.readline(c, "\r\n") end
    socket.close(c)
  end)
  return out
end

function tests.resp_rejects_malformed_requests_and_does_not_echo_them()
  local port = free_port()
  local stop = spawn("resp.lua", port)
  run(function() socket.close(connect(port)) end)
  -- lengths must be plain integers; the connection is closed after the error
  T.eq(resp_reply(port, "*1\r\n$1.5\r\nx\r\n"), "-ERR Protocol error: invalid bulk length\r\n", "$1.5")
  T.eq(resp_reply(port, "*1\r\n$0x4\r\nPING\r\n"), "-ERR Protocol error: invalid bulk length\r\n", "$0x4")
  T.eq(resp_reply(port, "*1\r\n$1e1\r\nPINGPINGPI\r\n"), "-ERR Protocol error: invalid bulk length\r\n", "$1e1")
  T.eq(resp_reply(port, "*1.5\r\n"), "-ERR Protocol error: invalid multibulk length\r\n", "*1.5")
  -- the CRLF after a bulk string is checked
  T.eq(resp_reply(port, "*1\r\n$4\r\nPINGxx"), "-ERR Protocol error: expected CRLF after a bulk string\r\n", "CRLF")
  -- a CR/LF in a command name cannot inject a reply; a huge name is not echoed
  local r = resp_exchange(port, "*1\r\n$10\r\nX\r\n+OK\r\n:1\r\nPING\r\n", 2)
  T.eq(r[1], "-ERR unknown command 'X??+OK??:1'", "injection")
  T.eq(r[2], "+PONG", "next reply in step")
  local big = string.rep("N", 4 * 1024 * 1024)
  r = resp_exchange(port, "*1\r\n$" .. #big .. "\r\n" .. big .. "\r\nPING\r\n", 2)
  T.truthy(#r[1] < 100, "error about a 4 MiB name is short: " .. #r[1])
  T.eq(r[2], "+PONG", "served after the long name")
  -- requests followed at once by the client's FIN (printf ... | nc -q1) are answered
  run(function()
    local c = connect(port)
    socket.settimeout(c, 3000)
    socket.write(c, "PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
    socket.close_write(c)
    T.eq(socket.readall(c), "+PONG\r\n$2\r\nhi\r\n", "replies after a half-close")
    socket.close(c)
  end)
  -- an inline command ended by LF only
  r = resp_exchange(port, "PING\nECHO hi\n", 2)
  T.eq(r[1], "+PONG", "inline PING with LF")
  T.eq(r[2], "$2", "inline ECHO with LF")
  -- INCR: Redis's overflow error at 2^63 - 1, exact near the bounds on every Lua
  r = resp_exchange(port, "SET n 9223372036854775806\r\nINCR n\r\nINCR n\r\nGET n\r\n" ..
    "SET m -9223372036854775808\r\nINCR m\r\nSET z -1\r\nINCR z\r\nINCR z\r\nSET o 012\r\nINCR o\r\n", 13)
  T.eq(r[2], ":9223372036854775807", "INCR to the maximum")
  T.eq(r[3], "-ERR increment or decrement would overflow", "INCR past the maximum")
  T.eq(r[5], "9223372036854775807", "value unchanged")
  T.eq(r[7], ":-9223372036854775807", "INCR from the minimum")
  T.eq(r[9], ":0", "-1 + 1")
  T.eq(r[10], ":1", "0 + 1")
  T.eq(r[12], "-ERR value is not an integer or out of range", "leading zero is not an integer")
  -- a request is bounded: a bulk over 8 MiB is refused before it is read
  T.eq(resp_reply(port, "*2\r\n$3\r\nGET\r\n$536870912\r\n"), "-ERR Protocol error: invalid bulk length\r\n", "huge bulk")
  stop()
end

-- Item 6: framed_rpc.lua protocol bugs.
function tests.framed_rpc_replies_fit_a_frame_and_do_not_leak_internals()
  local port = free_port()
  local stop = spawn("framed_rpc.lua", port)
  run(function()
    local c = connect(port)
    socket.framed(c)
    socket.settimeout(c, 3000)
    socket.sendframe(c, string.rep("m", 65535))         -- unknown, huge name
    socket.sendframe(c, "echo " .. string.rep("e", 65530)) -- the largest reply
    socket.sendframe(c, "add 9223372036854775807 1")     -- would wrap
    socket.sendframe(c, "add 99999999999999999999 1")    -- %d of a float: an internal error
    socket.sendframe(c, "add 999999999999999 1")
    socket.sendframe(c, "echo still here")                -- pipelined behind them
    local r1 = socket.readframe(c)
    T.truthy(#r1 < 120, "short error for a long method name")
    T.eq(r1:sub(1, 19), "err unknown method ", "unknown method")
    local r2 = socket.readframe(c)
    T.eq(#r2, 65533, "largest echo")
    T.eq(socket.readframe(c), "err add takes integers of at most 15 digits", "no wrap")
    local r4 = socket.readframe(c)
    T.eq(r4:find(".lua", 1, true), nil, "no file path in: " .. r4)
    T.eq(socket.readframe(c), "ok 1000000000000000", "exact add")
    T.eq(socket.readframe(c), "ok still here", "the connection survived")
    socket.close(c)
  end)
  stop()
end

-- A failing test never reaches its stop(): every child it started is killed here.
for name, f in pairs(tests) do
  tests[name] = function()
    local ok, err = xpcall(f, function(e) return debug and debug.traceback(tostring(e)) or e end)
    for _, pid in ipairs(children) do os.execute("kill " .. pid .. " 2>/dev/null") end
    children = {}
    if not ok then error(err, 0) end
  end
end

return tests
