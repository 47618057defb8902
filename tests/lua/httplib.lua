-- Helpers for the HTTP/WebSocket tests: a scheduler run with a watchdog, and child
-- processes (curl, python, chromium, interpreters) that run while the loop goes on.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local compat = require "skysocket.compat"
local T = require "testlib"
local L = {}

-- The interpreter running the suite (lowest arg index), or nil in-process.
if arg and arg[-1] then
  local i = -1
  while arg[i - 1] do i = i - 1 end
  L.interp = arg[i]
end
L.root = (arg and arg[0] and arg[0]:match("^(.*)/tests/lua/[^/]*$")) or "."

local children = {} -- handles of L.sh commands started during the current L.run

-- T.run_co with a 15 s default watchdog; whatever happened, no child started by
-- L.sh during the run outlives it.
function L.run(main, ms)
  local r = compat.pack(pcall(T.run_co, main, ms or 15000))
  for h in pairs(children) do h:kill() end
  children = {}
  if not r[1] then error(r[2], 2) end
  return compat.unpack(r, 2, r.n)
end

function L.have(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == true or r == 0
end

local function exists(p)
  local f = io.open(p)
  if f then f:close() end
  return f ~= nil
end

local function slurp(p)
  local g = io.open(p, "rb")
  if not g then return "" end
  local s = g:read("*a")
  g:close()
  return s
end

-- Start a shell command in the background; returns a handle:
--   h:wait([ms]) -> stdout, exit code (suspends the calling coroutine; kills the
--   command and raises on timeout); h:kill(); h:output() (stdout so far)
function L.sh(cmd)
  local base = os.tmpname()
  os.execute(string.format("( (%s) >%s.out 2>%s.err </dev/null; echo $? >%s.rc ) >/dev/null 2>&1 & echo $! >%s.pid",
    cmd, base, base, base, base))
  local pid = slurp(base .. ".pid"):match("%d+")
  local h = { pid = pid }
  children[h] = true
  function h:kill()
    -- never signal a pid that may have been reused: only while the command runs
    if self.done or exists(base .. ".rc") then return end
    if pid then os.execute("pkill -P " .. pid .. " 2>/dev/null; kill " .. pid .. " 2>/dev/null") end
    self.done = true
    for _ = 1, 50 do -- the wrapper writes .rc once the command is gone
      if exists(base .. ".rc") then break end
      os.execute("sleep 0.01")
    end
    for _, s in ipairs { "", ".out", ".err", ".pid", ".rc" } do os.remove(base .. s) end
  end
  function h:output()
    return slurp(base .. ".out")
  end
  function h:wait(ms)
    local waited = 0
    while not exists(base .. ".rc") do
      if waited > (ms or 10000) then
        self:kill()
        error("command timed out: " .. cmd .. "\n" .. slurp(base .. ".err"), 2)
      end
      sched.sleep(20)
      waited = waited + 20
    end
    sched.sleep(1)
    local out, rc = slurp(base .. ".out"), tonumber(slurp(base .. ".rc"):match("%d+"))
    self.stderr = slurp(base .. ".err")
    self.done = true
    for _, s in ipairs { "", ".out", ".err", ".pid", ".rc" } do os.remove(base .. s) end
    return out, rc
  end
  return h
end

-- Wait for a child to print its port (the first number on its first line).
function L.port_of(h)
  for _ = 1, 500 do
    local port = h:output():match("^[^\n]-(%d+)/?\n")
    if port then return tonumber(port) end
    sched.sleep(20)
  end
  h:kill()
  error("child printed no port")
end

function L.free_port()
  local id, _, port = assert(raw.listen("127.0.0.1", 0))
  raw.close(id)
  return port
end

-- Connect with retries while a child starts.
function L.connect(port)
  for _ = 1, 150 do
    local id = socket.open("127.0.0.1", port)
    if id then return id end
    sched.sleep(20)
  end
  error("cannot connect to 127.0.0.1:" .. port)
end

return L
