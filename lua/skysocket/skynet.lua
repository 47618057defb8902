-- skysocket.skynet: a `skynet` shim, so Skynet code written against skynet.socket
-- ports by changing nothing but the process that runs it.
--
--   local skynet = require "skysocket.skynet"
--
-- installs package.preload entries (only for names not already loaded or preloaded)
-- for "skynet", "skynet.socket", "skynet.socketdriver", "skynet.crypt" and
-- "skynet.dns", and returns the `skynet` module. Times are in centiseconds, as in
-- Skynet (skynet.sleep(100) is one second). docs/SKYNET.md lists what each module
-- covers and what differs.
local raw = require "skysocket"
local sched = require "skysocket.sched"
local socket = require "skysocket.socket"

local skynet = {}

-- skysocket.service, loaded on first use (the service functions below), and whether
-- this state is a service started by newservice rather than the root script.
local service_mod
local function svc()
  service_mod = service_mod or require "skysocket.service"
  return service_mod
end

local function in_service()
  local s = raw._service
  return s ~= nil and s.is_service()
end


local floor = math.floor
local running = coroutine.running

-- Time. now() counts centiseconds from the module's load (Skynet: from the process
-- start); starttime() is that moment in UTC seconds.
local START = os.time() - floor(raw.now() / 1000)

function skynet.now() return floor(raw.now() / 10) end
function skynet.starttime() return START end
function skynet.time() return START + raw.now() / 1000 end
function skynet.hpc() return raw.now() * 1000000 end

-- Coroutines. A token names a suspended coroutine for wakeup(token): by default the
-- coroutine itself, as in Skynet.
local BREAK = {}
local suspended = {}   -- token -> coroutine in sleep() or wait()

local function check_ticks(name, ti)
  if type(ti) ~= "number" or ti ~= ti or ti < 0 then
    error(string.format("bad argument #1 to '%s' (non-negative number expected, got %s)",
      name, type(ti) == "number" and tostring(ti) or type(ti)), 3)
  end
end

local function suspend_as(name, token, ms)
  local co = sched.self()
  if not co then
    error("skynet." .. name .. ": not inside a coroutine of skynet.start/fork", 3)
  end
  token = token == nil and co or token
  if suspended[token] then
    error("skynet." .. name .. ": token already in use", 3)
  end
  suspended[token] = co
  local ok, first = sched.wait(ms)
  suspended[token] = nil
  return ok and first == BREAK
end

-- sleep(ti [, token]): suspend for ti centiseconds. Returns "BREAK" if woken early by
-- wakeup(token), nothing otherwise.
function skynet.sleep(ti, token)
  check_ticks("sleep", ti)
  if suspend_as("sleep", token, floor(ti * 10)) then return "BREAK" end
end

function skynet.yield()
  return skynet.sleep(0)
end

-- wait([token]): suspend until wakeup(token).
function skynet.wait(token)
  suspend_as("wait", token, nil)
end

-- wakeup(token): wake the coroutine sleeping or waiting on token; true if there was one.
function skynet.wakeup(token)
  local co = suspended[token]
  if not co then return false end
  suspended[token] = nil
  return sched.wakeup(co, BREAK)
end

function skynet.fork(func, ...)
  return sched.fork(func, ...)
end

-- timeout(ti, func): run func in a new coroutine after ti centiseconds. The pending
-- call keeps skynet.start's loop alive, as a pending Skynet timer keeps a service.
function skynet.timeout(ti, func)
  check_ticks("timeout", ti)
  if type(func) ~= "function" then
    error("bad argument #2 to 'timeout' (function expected, got " .. type(func) .. ")", 2)
  end
  sched.hold()
  raw.timeout(floor(ti * 10), function()
    sched.release()
    sched.fork(func)
  end)
end

-- start(func): in the root (the script that required the shim), run func in a
-- coroutine and drive the engine until every coroutine is done and nothing can start
-- one (listeners with accept callbacks, pending timeouts), or until skynet.exit(). In
-- Skynet, start returns and the service lives on; a plain script has no framework to
-- return to, so there start is the root's whole life. In a service started with
-- skynet.newservice, start runs func and returns, and the service lives on.
function skynet.start(func)
  if type(func) ~= "function" then
    error("bad argument #1 to 'start' (function expected, got " .. type(func) .. ")", 2)
  end
  if in_service() then
    -- a service (skynet.newservice): the worker pool drives it. func runs now, in the
    -- main chunk's coroutine, so its dispatch handler is set before any message
    -- is handled; if it raises, the service ends (as a failed Skynet start does).
    func()
    return
  end
  local ok, err = sched.run(func)
  if not ok then error(err, 0) end
end

function skynet.exit()
  if in_service() then
    svc().exit()
    return
  end
  sched.exit()
  local co = running()
  if sched.self() == co then coroutine.yield() end
end

-- error(...): Skynet's log line (its default logger writes to stdout).
function skynet.error(...)
  local n = select("#", ...)
  local t = {}
  for i = 1, n do t[i] = tostring((select(i, ...))) end
  io.stdout:write(string.format("[:%08x] ", 0), table.concat(t, " ", 1, n), "\n")
  io.stdout:flush()
end

-- The environment Skynet reads from its config file: here set with setenv, falling
-- back to the process environment.
local env = {}
function skynet.getenv(key)
  local v = env[key]
  if v == nil then v = os.getenv(key) end
  return v
end

function skynet.setenv(key, value)
  if env[key] ~= nil then error("Can't setenv exist key : " .. tostring(key), 2) end
  env[key] = value
end

-- Services (skysocket.service, loaded on first use). Addresses are service ids; a
-- string address is a registered name. Only the "lua" protocol exists: messages are
-- Lua values (skynet.pack is a packed table, not a C buffer).
local function address(addr, fname)
  if type(addr) == "string" then
    local id = svc().query(addr)
    if not id then error(string.format("skynet.%s: no service named '%s'", fname, addr), 3) end
    return id
  end
  return addr
end

local function check_protocol(typename, fname)
  if typename ~= "lua" then
    error(string.format("bad argument #2 to '%s' (only the \"lua\" protocol is provided, got %s)",
      fname, tostring(typename)), 3)
  end
end

function skynet.self() return svc().self() end

-- newservice(name, ...): start the service file `name` (searched in package.path, as
-- Skynet's luaservice path is); raises if it cannot start, as Skynet does. Unlike
-- Skynet it returns as soon as the service is created, before its start function ran.
function skynet.newservice(name, ...)
  local id, err = svc().new(name, ...)
  if not id then error(err, 2) end
  return id
end

function skynet.register(name) svc().register(name) end
function skynet.localname(name) return svc().query(name) end

-- queryservice(name): wait until a service registered `name` (as Skynet does).
function skynet.queryservice(name)
  while true do
    local id = svc().query(name)
    if id then return id end
    sched.sleep(10)
  end
end

function skynet.send(addr, typename, ...)
  check_protocol(typename, "send")
  return svc().send(address(addr, "send"), ...)
end

function skynet.call(addr, typename, ...)
  check_protocol(typename, "call")
  return svc().call(address(addr, "call"), ...)
end

function skynet.kill(addr) return svc().kill(address(addr, "kill")) end

function skynet.pack(...) return { n = select("#", ...), ... } end
function skynet.unpack(msg) return (table.unpack or unpack)(msg, 1, msg.n or #msg) end

-- dispatch("lua", f): f(session, source, ...) for every message; skynet.ret(packed) /
-- skynet.retpack(...) inside f give a call its reply. The shim cannot tell a send
-- from a call: session is 1 for both, and a reply to a send is dropped.
local replies = setmetatable({}, { __mode = "k" }) -- handler coroutine -> packed reply (weak: a raising handler leaves its entry)
local NO_REPLY = {}
function skynet.dispatch(typename, func)
  check_protocol(typename, "dispatch")
  if type(func) ~= "function" then
    error("bad argument #2 to 'dispatch' (function expected, got " .. type(func) .. ")", 2)
  end
  svc().dispatch(function(from, ...)
    local co = sched.self()
    replies[co] = NO_REPLY
    func(1, from, ...)
    local r = replies[co]
    replies[co] = nil
    if r ~= NO_REPLY then return skynet.unpack(r) end
  end)
end

function skynet.ret(msg)
  local co = sched.self()
  if replies[co] == nil then error("skynet.ret: no message being handled in this coroutine", 2) end
  replies[co] = msg or { n = 0 }
  return true
end

function skynet.retpack(...) return skynet.ret(skynet.pack(...)) end

-- skynet.crypt: the functions Skynet's http, websocket and redis libraries use.
local crypt = {
  sha1 = raw.sha1,
  hmac_sha1 = raw.hmac_sha1,
  base64encode = raw.base64encode,
  base64decode = raw.base64decode,
  hexencode = raw.hexencode,
  hexdecode = raw.hexdecode,
  randomkey = raw.randomkey,
  xor_str = raw.xor_str,
}

-- skynet.dns: resolve(name [, ipv6]) -> ip, { every ip }, without blocking the loop.
local dns = {}
function dns.server() end   -- the system resolver is used; nothing to configure
function dns.resolve(name, ipv6)
  local co = sched.self()
  if not co then error("dns.resolve: not inside a coroutine of skynet.start/fork", 2) end
  local result, why
  raw.resolve(name, function(ips, msg)
    result, why = ips, msg
    sched.wakeup(co)
  end)
  sched.hold()
  sched.wait()
  sched.release()
  if not result then error(why or ("cannot resolve " .. tostring(name)), 2) end
  local picked = {}
  for _, ip in ipairs(result) do
    if (ip:find(":", 1, true) ~= nil) == (ipv6 == true) then picked[#picked + 1] = ip end
  end
  if #picked == 0 then error("no " .. (ipv6 and "IPv6" or "IPv4") .. " address for " .. name, 2) end
  return picked[1], picked
end

-- skynet.socketdriver: the C functions whose meaning is the same here.
local driver = {
  connect = raw.connect,
  bind = raw.bind,
  close = raw.close,
  shutdown = raw.shutdown,
  listen = raw.listen,
  send = raw.send,
  lsend = raw.lwrite,
  start = raw.start,
  pause = raw.pause,
  nodelay = raw.nodelay,
  udp = raw.udp,
  udp_connect = raw.udp_connect,
  udp_send = raw.sendto,
  udp_address = raw.udp_address,
  resolve = raw.resolve,
  info = raw.info,
}

local modules = {
  ["skynet"] = skynet,
  ["skynet.socket"] = socket,
  ["skynet.socketdriver"] = driver,
  ["skynet.crypt"] = crypt,
  ["skynet.dns"] = dns,
}
for name, mod in pairs(modules) do
  if package.loaded[name] == nil and package.preload[name] == nil then
    package.preload[name] = function() return mod end
  end
end

return skynet
