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

-- Start an example in the background; returns a function that stops it.
local function spawn(script, ...)
  local args = table.concat({ ... }, " ")
  local pidfile = os.tmpname()
  local log = os.tmpname()
  os.execute(string.format("%s examples/%s %s >%s 2>&1 & echo $! > %s", interp, script, args, log, pidfile))
  local f = assert(io.open(pidfile)); local pid = f:read("*l"); f:close()
  os.remove(pidfile)
  return function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    local lf = io.open(log); local text = lf and lf:read("*a") or ""; if lf then lf:close() end
    os.remove(log)
    return text
  end
end

local function run(main)
  local done = false
  local wd = raw.timeout(8000, function() socket.exit() end)
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

function tests.chat_broadcasts_and_drops_slow_clients()
  local port = free_port()
  local stop = spawn("chat.lua", port, 1024)
  run(function()
    local a = connect(port)
    T.truthy(socket.readline(a):find("welcome"), "welcome a")
    local b = connect(port)
    T.truthy(socket.readline(b):find("welcome"), "welcome b")
    T.truthy(socket.readline(a):find("joined"), "a sees b join")
    socket.write(a, "/nick alice\n")
    T.truthy(socket.readline(a):find("is now alice", 1, true), "rename seen by a")
    T.truthy(socket.readline(b):find("is now alice", 1, true), "rename seen by b")
    socket.write(a, "hi all\n")
    T.eq(socket.readline(b), "alice: hi all", "broadcast")
    T.eq(socket.readline(a), "alice: hi all", "own line")
    socket.write(b, "/quit\n")
    T.eq(socket.readline(a):find("left", 1, true) ~= nil, true, "b left")
    T.eq(socket.read(b), false, "b closed by the server")
    socket.close(b)
    -- A client that stops reading gets dropped once its queue passes the threshold.
    local slow = connect(port)
    socket.readline(slow)
    T.truthy(socket.readline(a):find("joined"), "slow joined")
    socket.pause(slow)
    local dropped = false
    socket.fork(function()
      while true do
        local l = socket.readline(a)
        if not l then break end
        if l:find("too slow", 1, true) then dropped = true; break end
      end
    end)
    local line = string.rep("z", 60000) .. "\n"
    for _ = 1, 600 do
      if dropped then break end
      socket.write(a, line)
      socket.sleep(1)
    end
    T.eq(dropped, true, "slow client dropped")
    socket.close(slow)
    socket.close(a)
  end)
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

return tests
