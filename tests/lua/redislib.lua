-- A real redis-server for the tests: started on a free loopback port with its own temp
-- dir (--save '' --appendonly no), stopped afterwards, also when the test fails. A
-- `timeout -s KILL` wrapper ends the server even if the test process dies first.
local raw = require "skysocket"
local R = {}

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end
R.sh = sh

local function read_cmd(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("*a")
  f:close()
  return out
end
R.read_cmd = read_cmd

function R.available()
  return sh("command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1")
end

local function sleep_ms(ms)
  sh(string.format("sleep %.3f", ms / 1000))
end
R.sleep_ms = sleep_ms

-- A port that was free a moment ago (bound by the kernel's choice, then released).
function R.free_port()
  local id, _, port = assert(raw.listen("127.0.0.1", 0))
  raw.close(id, true)
  raw.poll(0)
  return port
end

local Server = {}
Server.__index = Server

function Server:cli(args)
  local auth = self.password and (" -a " .. self.password .. " --no-auth-warning") or ""
  if self.tls then auth = auth .. " --tls --cacert " .. self.tls.ca end
  return read_cmd(string.format("redis-cli -h 127.0.0.1 -p %d%s %s 2>&1", self.port, auth, args))
end

function Server:pid()
  local f = io.open(self.dir .. "/redis.pid")
  if not f then return nil end
  local pid = tonumber(f:read("*l") or "")
  f:close()
  return pid
end

function Server:launch()
  os.remove(self.dir .. "/redis.pid")
  local ports = string.format("--port %d", self.port)
  if self.tls then
    -- TLS only: the plain port is off; clients need not present a certificate
    ports = string.format("--port 0 --tls-port %d --tls-cert-file %s --tls-key-file %s --tls-ca-cert-file %s --tls-auth-clients no",
      self.port, self.tls.cert, self.tls.key, self.tls.ca)
  end
  local args = string.format(
    "%s --bind 127.0.0.1 --save '' --appendonly no --dir %s --pidfile %s/redis.pid --logfile %s/redis.log --daemonize no --protected-mode no",
    ports, self.dir, self.dir, self.dir)
  if self.password then args = args .. " --requirepass " .. self.password end
  if self.extra then args = args .. " " .. self.extra end
  assert(sh(string.format("(timeout -s KILL %d redis-server %s >>%s/stdout.log 2>&1 &)",
    self.lifetime, args, self.dir)), "could not start redis-server")
  for _ = 1, 200 do
    if self:pid() and self:cli("ping"):find("PONG", 1, true) then return true end
    sleep_ms(25)
  end
  error("redis-server did not start on port " .. self.port .. ": " ..
    read_cmd("cat " .. self.dir .. "/redis.log " .. self.dir .. "/stdout.log 2>/dev/null | tail -5"))
end

-- kill -9 and wait until the process is gone and the port is free.
function Server:kill()
  local pid = self:pid()
  if pid then
    sh("kill -CONT " .. pid .. " 2>/dev/null; kill -KILL " .. pid .. " 2>/dev/null")
    for _ = 1, 200 do
      if not sh("kill -0 " .. pid .. " 2>/dev/null") then break end
      sleep_ms(10)
    end
  end
  os.remove(self.dir .. "/redis.pid")
end

function Server:stop_signal() sh("kill -STOP " .. assert(self:pid())) end
function Server:cont_signal() sh("kill -CONT " .. assert(self:pid())) end

function Server:stop()
  self:kill()
  if self.dir and self.dir:match("^/tmp/skysocket%-redis%.") then sh("rm -rf " .. self.dir) end
end

-- start{password=, extra=, tls={cert=, key=, ca=}} -> server {port, dir, password}
function R.start(opts)
  opts = opts or {}
  local dir = read_cmd("mktemp -d /tmp/skysocket-redis.XXXXXX"):gsub("%s+$", "")
  assert(dir ~= "", "mktemp failed")
  local s = setmetatable({ dir = dir, password = opts.password, extra = opts.extra, tls = opts.tls,
    lifetime = opts.lifetime or 300 }, Server)
  local last
  for _ = 1, 5 do -- the free port may be taken by someone else in between
    s.port = R.free_port()
    local ok, err = pcall(s.launch, s)
    if ok then return s end
    last = err
    s:kill()
  end
  s:stop()
  error(last)
end

-- with(opts, fn): fn(server), the server stopped afterwards whatever happens.
function R.with(opts, fn)
  local s = R.start(opts)
  local ok, err = pcall(fn, s)
  s:stop()
  if not ok then error(err, 0) end
end

return R
