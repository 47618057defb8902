-- skysocket.service: Skynet's services as a plain `require`. A service is a Lua state
-- made by the module (own globals, own `require` cache, package.path/cpath copied
-- from its creator), run by a pool of worker threads; the interpreter that required
-- the module is the root service. Each service has a mailbox: its messages are
-- handled in arrival order, never by two threads at once.
--
--   service.new(name_or_path, ...)  -> id | nil, err   start a service from a file
--                                     (a name is searched in package.path, as require
--                                     does); its main chunk runs with ... as arguments
--   service.spawn(code, ...)      -> id | nil, err   the same from a source string
--   service.self()                -> this service's id
--   service.root()                -> the root service's id
--   service.dispatch(fn)          -> old; fn(from, ...) handles every message: its
--                                     results are the reply to a call
--   service.send(to, ...)         -> true | false, err   one-way
--   service.call(to, ...)         -> the handler's results; raises if the target is
--                                     dead, raises, or does not answer in time
--   service.timeout([ms])         -> ms   default call timeout of this state
--   service.register(name), service.query(name) -> id | nil
--   service.exit()                   end this service (in the root: sched.exit())
--   service.kill(id)              -> true | false, err
--   service.threads([n])          -> n   worker pool size (set before the first new)
--   service.count()               -> services alive, the root included
--   service.run(main, ...)           in the root: sched.run(main, ...)
--   service.fork/sleep/wait/wakeup   the scheduler's (skysocket.sched)
--
-- Values that cross: nil, booleans, numbers (integers and floats distinct where the
-- Lua version has both), strings (binary-safe) and tables of these (nested, without
-- cycles; metatables are not copied). Anything else raises
--   bad argument #2 to 'send' (.x.y: function cannot cross services)
local raw = require "skysocket"
local sched = require "skysocket.sched"
local compat = require "skysocket.compat"

local svc = raw._service
local ERR = svc.ERR
local pack, unpack = compat.pack, compat.unpack
local fork, wakeup, wait = sched.fork, sched.wakeup, sched.wait
local report = sched.report
local traceback = debug and debug.traceback or function(m) return m end
local format = string.format

local M = {}
local IS_SERVICE = svc.is_service()
local handler
local sessions = {}     -- session -> the coroutine waiting in call()
local next_session = 0
local call_timeout = 10000
local myid

local guard = sched.guard

-- Calls being handled: coroutine -> caller, session. The handler runs unprotected in
-- its coroutine (Lua 5.1 cannot yield across pcall); when the coroutine ends, the
-- scheduler's guard answers a call whose handler raised (the scheduler reports the
-- error with its traceback through its error hook).
local call_from, call_session = {}, {}

local function reply_values(from, session, ...)
  local r, err = svc.reply(from, session, true, ...)
  if r == ERR then
    err = err:gsub("bad argument (#%d+) to 'reply'", "reply value %1")
    report(format("service %d: reply to service %d: %s", myid, from, err))
    svc.reply(from, session, false, format("service %d: %s", myid, err))
  end
end

local function call_ended(co, ok, err)
  local from, session = call_from[co], call_session[co]
  call_from[co], call_session[co] = nil, nil
  if not ok and from then
    svc.reply(from, session, false, format("service %d raised: %s", myid, tostring(err)))
  end
end

local function run_call(from, session, ...)
  -- The handler is looked up when the message's coroutine runs: a service's main
  -- (forked first) sets it before the messages of the same turn are handled.
  local h = handler
  if not h then
    svc.reply(from, session, false, format("service %d has no dispatch handler", myid))
    return
  end
  reply_values(from, session, h(from, ...))
end

local function run_send(from, ...)
  local h = handler
  if not h then
    report(format("service %d: message from service %d dropped: no dispatch handler", myid, from))
    return
  end
  h(from, ...)
end

local function main_ended(_, ok)
  if not ok then svc.exit() end
end

-- deliver(kind, from, session, ...): 0 start (chunk, args...), 1 send, 2 call,
-- 3 reply (ok, values...). Called by Rust for each message of the mailbox.
local function deliver(kind, from, session, ...)
  if kind == 3 then
    local co = sessions[session]
    if co then
      sessions[session] = nil
      wakeup(co, ...)
    end
  elseif kind == 1 then
    fork(run_send, from, ...)
  elseif kind == 2 then
    local co = fork(run_call, from, session, ...)
    call_from[co], call_session[co] = from, session
    guard(co, call_ended)
  elseif kind == 0 then
    -- the service's main chunk: if it raises, the service ends
    guard(fork(...), main_ended)
  end
end

local step
if IS_SERVICE then
  step = sched.step
else
  step = function() if not sched.running() then sched.step() end end
end

svc.handler(deliver, step)
myid = svc.self()

function M.self() return myid end

function M.root() return svc.root() end

function M.dispatch(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("bad argument #1 to 'dispatch' (function expected, got " .. type(fn) .. ")", 2)
  end
  local old = handler
  handler = fn
  return old
end

function M.send(to, ...)
  local r, err = svc.send(to, ...)
  if r == ERR then error(err, 2) end
  return r, err
end

local function call_result(to, s, woke, ok, ...)
  if not woke then
    sessions[s] = nil
    error(format("call to service %d: timeout after %d ms", to, call_timeout), 0)
  end
  if ok then return ... end
  error((...), 0)
end

function M.call(to, ...)
  local co = sched.self()
  if not co then
    error("call: not inside a coroutine of skysocket.sched (a service's main or handler, sched.run/fork)", 2)
  end
  next_session = next_session + 1
  local s = next_session
  local r, err = svc.call(to, s, ...)
  if r == ERR then error(err, 2) end
  if not r then error(format("call to service %d: %s", to, err), 0) end
  sessions[s] = co
  return call_result(to, s, wait(call_timeout))
end

function M.timeout(ms)
  if ms ~= nil then
    if type(ms) ~= "number" or ms ~= ms or ms < 0 then
      error("bad argument #1 to 'timeout' (number >= 0 expected)", 2)
    end
    call_timeout = ms
  end
  return call_timeout
end

local function searchpath(name)
  if name:find("/", 1, true) or name:find("%.lua$") then return name end
  if package.searchpath then return package.searchpath(name, package.path) end
  local file = name:gsub("%.", "/")
  local tried = {}
  for template in package.path:gmatch("[^;]+") do
    local p = template:gsub("%?", file)
    local f = io.open(p, "rb")
    if f then f:close() return p end
    tried[#tried + 1] = "\n\tno file '" .. p .. "'"
  end
  return nil, table.concat(tried)
end

function M.new(name, ...)
  if type(name) ~= "string" then
    error("bad argument #1 to 'new' (string expected, got " .. type(name) .. ")", 2)
  end
  local path, err = searchpath(name)
  if not path then return nil, format("service '%s' not found:%s", name, err) end
  local f
  f, err = io.open(path, "rb")
  if not f then return nil, err end
  local code = f:read("*a")
  f:close()
  local id
  id, err = svc.new(code, "@" .. path, ...)
  if id == ERR then error(err, 2) end
  return id, err
end

function M.spawn(code, ...)
  local id, err = svc.spawn(code, "=(service)", ...)
  if id == ERR then error(err, 2) end
  return id, err
end

function M.register(name)
  local r, err = svc.register(name)
  if r == ERR then error(err, 2) end
  return r
end

function M.query(name)
  local r, err = svc.query(name)
  if r == ERR then error(err, 2) end
  return r
end

function M.kill(id)
  local r, err = svc.kill(id)
  if r == ERR then error(err, 2) end
  return r, err
end

function M.threads(n)
  local r, err = svc.threads(n)
  if r == ERR then error(err, 2) end
  return r, err
end

function M.count() return svc.count() end

-- pcall(f, ...) that f may suspend in (call, sleep, socket reads) on every Lua version:
-- f runs in a new coroutine of the scheduler and the caller waits for it.
function M.pcall(f, ...)
  local me = sched.self()
  if not me then return pcall(f, ...) end
  local result
  local co = fork(function(...) result = pack(true, f(...)) end, ...)
  guard(co, function(_, ok, err)
    if not ok then result = pack(false, err) end
    wakeup(me)
    return true
  end)
  while not result do wait() end
  return unpack(result, 1, result.n)
end

function M.exit()
  if not IS_SERVICE then
    sched.exit()
    return
  end
  svc.exit()
  -- The state closes after this turn; the calling coroutine never resumes.
  if sched.self() then
    while true do wait() end
  end
end

M.is_service = IS_SERVICE
M.run = sched.run
M.fork, M.sleep, M.wait, M.wakeup = sched.fork, sched.sleep, sched.wait, sched.wakeup

return M
