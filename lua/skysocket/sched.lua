-- skysocket.sched: a small coroutine scheduler driving skysocket's engine.
--
--   sched.run(main, ...)  run main(...) in a coroutine and drive the engine
--                         (socket.poll) until main and every forked coroutine have
--                         finished, or sched.exit() is called. Returns true, main's
--                         results -- or false, error if main raised one.
--   sched.fork(fn, ...)   start fn(...) in a new coroutine (runs at the next turn).
--   sched.sleep(ms)       suspend the calling coroutine for ms milliseconds.
--   sched.wait([ms])      suspend until sched.wakeup(co, ...): returns true, ... ;
--                         with ms, gives up after ms milliseconds: false, "timeout".
--   sched.wakeup(co, ...) wake a coroutine suspended in wait(); false if it was not.
--   sched.exit()          make run() return after the current turn.
--   sched.on_error(fn)    where errors of coroutines go (default: stderr); fn(text).
--   sched.on_finish(fn)   fn(co, ok) after every coroutine ends (used by the socket
--                         layer to close the sockets of a coroutine that raised).
--   sched.self()          the running scheduled coroutine.
--   sched.hold() / sched.release()
--                         count something that can start coroutines later (the socket
--                         layer holds one per listener with an accept callback and per
--                         UDP socket with a callback): run() also goes on while the
--                         count is positive, so a server's main may simply return.
--
-- run() gives up ("N coroutine(s) wait for nothing") only when coroutines are left
-- and the engine is idle (raw.idle(): no socket, timer or lookup that could wake
-- one); a poll that delivered nothing while flushing writes is not a deadlock.
-- Wakeups are queued and run after the current engine callback returns, so socket
-- callbacks never resume coroutines themselves. An error in a coroutine is reported
-- with its traceback and the others go on. Coroutines must suspend only through this
-- module (or the socket layer built on it): a bare coroutine.yield() parks them.
-- The scheduler is per Lua state; run() is not reentrant.
local raw = require "skysocket"
local compat = require "skysocket.compat"
local pack, unpack = compat.pack, compat.unpack

local S = {}

local queue, qhead, qtail = {}, 1, 0
-- co -> state, for the coroutines owned by the scheduler: false while running or
-- queued, the wait tag while suspended (true for wait(), a fresh table for sleep()).
-- One table for both keeps the per-coroutine bookkeeping to a single hash entry.
local threads = {}
local live = 0
local holds = 0
local exiting = false
local running = false
local main_co, main_result
local error_hook
local finish_hook   -- fn(co, ok) after each coroutine ends (the socket layer's cleanup)

local TIMEOUT = {}
-- debug may be absent (a sandboxed state): then errors go without a traceback.
local traceback = debug and debug.traceback or function(_, msg) return msg end
local create, resume, yield, status = coroutine.create, coroutine.resume, coroutine.yield, coroutine.status
-- The running coroutine; its second result (5.2+: true on the main thread) is not
-- needed: the main thread is never a key of `threads`, and t[nil] reads nil on 5.1.
local this = coroutine.running
local timers = {}    -- engine timer id -> true, for the sleeps and timed waits pending

local function report(text)
  if error_hook then
    local ok, err = pcall(error_hook, text)
    if ok then return end
    io.stderr:write("skysocket.sched: error hook failed: ", tostring(err), "\n")
  end
  io.stderr:write("skysocket.sched: error in coroutine: ", text, "\n")
end

-- The queue holds coroutines and their resume arguments in two parallel arrays;
-- NOARGS avoids a table per wake-up in the common case (no values passed).
local NOARGS = { n = 0 }
local qargs = {}

local function push(co, args)
  qtail = qtail + 1
  queue[qtail] = co
  qargs[qtail] = args
end

-- co -> fn(co, ok, err) run when co ends (see S.guard).
local guards = {}

local function finished(co, ok, ...)
  if status(co) ~= "dead" then return end
  threads[co] = nil
  live = live - 1
  if co == main_co then
    main_result = pack(ok, ...)
  end
  local guard = guards[co]
  if guard then guards[co] = nil end
  if not ok then
    if not (guard and guard(co, false, (...))) then
      report(traceback(co, tostring((...))))
    end
  elseif guard then
    guard(co, true)
  end
  if finish_hook then
    local hok, herr = pcall(finish_hook, co, ok)
    if not hok then report("finish hook: " .. tostring(herr)) end
  end
end

local function step(co, args)
  if args.n == 0 then
    finished(co, resume(co))
  else
    finished(co, resume(co, unpack(args, 1, args.n)))
  end
end

function S.fork(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'fork' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = create(fn)
  threads[co] = false
  live = live + 1
  push(co, select("#", ...) == 0 and NOARGS or pack(...))
  return co
end

function S.self()
  local co = this()
  if threads[co] ~= nil then return co end
  return nil
end

local function current(name)
  local co = this()
  if threads[co] == nil then
    error(name .. ": not inside a coroutine started by sched.run/fork", 3)
  end
  return co
end

-- Internal: suspend with `tag`; wake(co, tag, ...) resumes it with ... .
local function wake(co, tag, ...)
  if threads[co] ~= tag then return false end
  threads[co] = false
  push(co, select("#", ...) == 0 and NOARGS or pack(...))
  return true
end

local function resumed(timer, first, ...)
  if timer then
    timers[timer] = nil
    raw.cancel_timeout(timer)
  end
  if first == TIMEOUT then return false, "timeout" end
  return true, first, ...
end

local function suspend(co, tag, ms)
  threads[co] = tag
  local timer
  if ms then
    timer = raw.timeout(ms, function() timers[timer] = nil; wake(co, tag, TIMEOUT) end)
    timers[timer] = true
  end
  return resumed(timer, yield())
end

-- Without a timeout wait() yields from its own frame: every coroutine blocked in a
-- read sits in here, and each call level below the yield costs memory per coroutine
-- (a CallInfo, and a bigger Lua stack once the frames outgrow the initial one).
function S.wait(ms)
  local co = this()
  if threads[co] == nil then
    error("wait: not inside a coroutine started by sched.run/fork", 2)
  end
  if ms then return suspend(co, true, ms) end
  threads[co] = true
  return true, yield()
end

-- Internal, for skysocket.socket: park(co), where co is coroutine.running(), marks co
-- as waiting for wakeup(co) and returns true (false, changing nothing, if co is not
-- a scheduled coroutine); the caller must then coroutine.yield() itself, in the same
-- frame. It is wait() without a timeout minus a call level: a blocked reader sits
-- one level shallower, and the read/wake-up round trip makes fewer calls.
function S.park(co)
  if threads[co] == nil then return false end
  threads[co] = true
  return true
end

function S.wakeup(co, ...)
  return wake(co, true, ...)
end

-- ready(co): wakeup(co) with no values. The same, minus the cost of a vararg call:
-- the socket layer wakes a reader with it for every arrival.
function S.ready(co)
  if threads[co] ~= true then return false end
  threads[co] = false
  qtail = qtail + 1
  queue[qtail] = co
  qargs[qtail] = NOARGS
  return true
end

function S.sleep(ms)
  local co = current("sleep")
  local tag = {}
  local timer
  timer = raw.timeout(ms, function() timers[timer] = nil; wake(co, tag) end)
  timers[timer] = true
  suspend(co, tag)
end

function S.exit()
  exiting = true
end

function S.on_error(fn)
  local old = error_hook
  error_hook = fn
  return old
end

-- on_finish(fn): fn(co, ok) runs after every scheduled coroutine ends (ok false: it
-- raised; the error was reported first). One hook per state: skysocket.socket uses it
-- to close the sockets a failed coroutine owned. Returns the previous hook.
function S.on_finish(fn)
  local old = finish_hook
  finish_hook = fn
  return old
end

function S.running() return running end

-- Internal, for skysocket.service: run every ready coroutine until none is left, then
-- return (a service's turn: its worker delivers the messages, then calls this; the
-- root calls it after its mail when run() is not driving it).
function S.step()
  while qhead <= qtail do
    local h = qhead
    local co, args = queue[h], qargs[h]
    queue[h], qargs[h] = nil, nil
    qhead = h + 1
    step(co, args)
  end
  qhead, qtail = 1, 0
end

-- Internal: report(text) through the error hook (default: stderr).
S.report = report

-- Internal, for skysocket.service: guard(co, fn) runs fn(co, ok, err) when the
-- scheduled coroutine co ends (ok false: it raised err). If fn returns true for an
-- error, the error is not reported. fn must not yield. Unlike pcall, this works on
-- Lua 5.1, where a coroutine cannot yield across pcall.
function S.guard(co, fn)
  if threads[co] == nil then return false end
  guards[co] = fn
  return true
end

function S.hold() holds = holds + 1 end

function S.release() if holds > 0 then holds = holds - 1 end end

function S.run(main, ...)
  if running then error("sched.run: already running", 2) end
  running, exiting, main_result = true, false, nil
  main_co = S.fork(main, ...)
  while true do
    -- The common turn: a coroutine woken without values suspends again. It is
    -- resumed here directly; `finished` runs only if it failed or may have ended
    -- (a coroutine suspended by this module has a wait tag in `threads`).
    local q, qa = queue, qargs
    while qhead <= qtail and not exiting do
      local h = qhead
      local co, args = q[h], qa[h]
      q[h], qa[h] = nil, nil
      qhead = h + 1
      if args == NOARGS and co ~= main_co then
        local ok, err = resume(co)
        if not ok or threads[co] == false then finished(co, ok, err) end
      else
        step(co, args)
      end
    end
    if qhead > qtail then qhead, qtail = 1, 0 end
    if exiting or (live == 0 and holds == 0) then break end
    -- A poll may deliver nothing (it only flushed write queues, or accepted into a
    -- backoff): that is no deadlock. Only an idle engine -- no socket, timer, message
    -- or lookup left that could ever wake a coroutine -- means there is nothing to
    -- wait for (raw.poll() then returns at once).
    if raw.poll() == 0 and qhead > qtail and raw.idle() then
      if live > 0 then
        report(string.format("sched.run: %d coroutine(s) wait for nothing; giving up", live))
      end
      break
    end
  end
  -- Forget whatever is left (after exit()): a later run() starts clean, and the
  -- timers of abandoned sleeps do not keep the engine busy.
  for t in pairs(timers) do raw.cancel_timeout(t) end
  timers = {}
  queue, qargs, qhead, qtail = {}, {}, 1, 0
  threads, live, holds = {}, 0, 0
  guards = {}
  running, exiting = false, false
  main_co = nil
  local r = main_result
  main_result = nil
  if r == nil then return false, "exited before main finished" end
  return unpack(r, 1, r.n)
end

return S
