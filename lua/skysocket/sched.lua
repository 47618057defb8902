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

-- The run queue: queue[qhead .. queue[0]] are the coroutines to resume, in order, and
-- qargs[i] the values to resume queue[i] with (nil: none, the common case). The tail
-- index lives in queue[0] because the socket layer's readable handler, a C closure
-- (raw.waker, made by S.waker), appends to the queue too. The tables are cleared in
-- place, never replaced: that closure holds them.
local queue, qhead = { [0] = 0 }, 1
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
-- The timers of the sleeps and timed waits pending (and of the socket layer's read
-- timeouts): run() cancels them when it returns. Kept in reused slots (slot -> engine
-- timer id, false when free; tfree the free slots), not in a table keyed by timer id:
-- in Lua 5.4 such a table (ever-increasing keys, each removed soon) rehashes on nearly
-- every insert whenever the number of live keys is a power of two (see
-- src/lua/timer_fns.rs). A slot is released when its timer fires or is cancelled:
-- arm returns the slot and the timer id, and disarm(k, t) does nothing unless slot k
-- still holds timer t. tsettle[k]: fn again if it is to be called when run() returns
-- with the timer pending (skysocket.channel settles its abandoned waits so), else false.
local tslots, tfree, tnext, tsettle = {}, {}, 0, {}

local function arm(ms, fn, settle)
  local n = #tfree
  local k = tfree[n]
  if k then
    tfree[n] = nil
  else
    tnext = tnext + 1
    k = tnext
  end
  local t = raw.timeout(ms, function()
    tslots[k] = false
    tfree[#tfree + 1] = k
    fn()
  end)
  tslots[k] = t
  tsettle[k] = settle and fn or false
  return k, t
end

local function disarm(k, t)
  if t and tslots[k] == t then
    raw.cancel_timeout(t)
    tslots[k] = false
    tfree[#tfree + 1] = k
  end
end

local function report(text)
  if error_hook then
    local ok, err = pcall(error_hook, text)
    if ok then return end
    io.stderr:write("skysocket.sched: error hook failed: ", tostring(err), "\n")
  end
  io.stderr:write("skysocket.sched: error in coroutine: ", text, "\n")
end

local qargs = {}
-- How many queued entries have values (qargs[i] set). queue[-1] tells the runner's C
-- loop what it must look at: nil, nothing (the common case: no qargs lookup per
-- resume); true, exit() was called; a number, some entries have values.
local nargs = 0
-- What this module's coroutines yield when they suspend: the run loop then knows,
-- without a lookup keyed by the coroutine, that it did not end.
local PARKED = {}

local function push(co, args)
  local t = queue[0] + 1
  queue[0] = t
  queue[t] = co
  if args then
    qargs[t] = args
    nargs = nargs + 1
    if queue[-1] == nil then queue[-1] = 1 end
  end
end

-- co -> fn(co, ok, err) run when co ends (see S.guard).
local guards = {}

local function finished(co, ok, ...)
  if status(co) ~= "dead" then return end
  threads[co] = nil
  live = live - 1
  if co == main_co and not ok then
    main_result = pack(false, ...) -- (run's wrapper records main's results)
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
  finished(co, resume(co, unpack(args, 1, args.n)))
end

function S.fork(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'fork' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = create(fn)
  threads[co] = false
  live = live + 1
  push(co, select("#", ...) > 0 and pack(...) or nil)
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
  push(co, select("#", ...) > 0 and pack(...) or nil)
  return true
end

local function resumed(k, t, first, ...)
  if k then disarm(k, t) end
  if first == TIMEOUT then return false, "timeout" end
  return true, first, ...
end

local function suspend(co, tag, ms)
  threads[co] = tag
  local k, t
  if ms then k, t = arm(ms, function() wake(co, tag, TIMEOUT) end) end
  return resumed(k, t, yield(PARKED))
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
  return true, yield(PARKED)
end

-- Internal, for skysocket.socket: park(co), where co is coroutine.running(), marks co
-- as waiting for wakeup(co) and returns true (false, changing nothing, if co is not
-- a scheduled coroutine); the caller must then coroutine.yield(sched.PARKED) itself
-- (a bare yield() works too, a little slower), in the same frame. It is wait() without
-- a timeout minus a call level: a blocked reader sits one level shallower, and the
-- read/wake-up round trip makes fewer calls. (skysocket.socket's reads wait per
-- socket instead, see S.waker; they use S.threads, the state table itself, only to
-- check that a new owner is a scheduled coroutine: threads[co] ~= nil.)
function S.park(co)
  if threads[co] == nil then return false end
  threads[co] = true
  return true
end
S.PARKED = PARKED
S.threads = threads

-- Internal, for skysocket.socket, whose reads wait per socket rather than per
-- coroutine: reader[id] = co, then yield(PARKED) with threads[co] left false (so no
-- lookup keyed by the coroutine is made on the way). Whoever wakes such a reader sets
-- reader[id] = false and queues co with push(co); the readable handler waker(reader)
-- (raw.waker, src/lua/fast/co.rs) does that in C for every arrival. on_reset(fn):
-- fn() runs when run() returns, so that the socket layer forgets the readers of the
-- coroutines abandoned there.
-- On LuaJIT the waker and the run loop stay in Lua: its interpreter and traces do the
-- table work faster than calls through the C API (callgrind, coroutine echo: 4,131
-- instructions per message with the Lua versions, 5,056 with the C closures); on
-- Lua 5.x the C closures are the faster (see BENCHMARKS.md).
local JIT = type(rawget(_G, "jit")) == "table"

-- waker(socks, slot [, hand]): the same for readers recorded per socket in a field of
-- a record, socks[id][slot] (skysocket.socket's records). With `hand`, the delivery
-- loop gives bytes straight to a reader whose record field `hand` is true (it waits
-- for whatever comes): the field then holds them as a string (see raw.waker). That
-- needs the C closure, which the loop recognises, on LuaJIT too.
function S.waker(reader, slot, hand)
  if not JIT or hand then return raw.waker(reader, queue, slot, hand) end
  if slot then
    return function(id)
      local rec = reader[id]
      if not rec then return end
      local co = rec[slot]
      if co == true then
        rec[slot] = nil
      elseif co then
        rec[slot] = false
        push(co)
      end
    end
  end
  return function(id)
    local co = reader[id]
    if co == true then
      reader[id] = nil
    elseif co then
      reader[id] = false
      push(co)
    end
  end
end

-- drain(): resume the queued coroutines (see run). The C loop (src/lua/fast/co.rs)
-- resumes those woken without values and comes back for the rest.
local drain
if JIT then
  drain = function()
    local q, qa = queue, qargs
    while qhead <= q[0] and not exiting do
      local h = qhead
      local co, args = q[h], qa[h]
      q[h] = nil
      qhead = h + 1
      if args == nil then
        local ok, v = resume(co)
        if v ~= PARKED then finished(co, ok, v) end
      else
        qa[h] = nil
        nargs = nargs - 1
        if nargs == 0 and q[-1] == 1 then q[-1] = nil end
        step(co, args)
      end
    end
  end
else
  local runq = raw.runner(queue, qargs, PARKED)
  drain = function()
    local q, qa = queue, qargs
    while qhead <= q[0] and not exiting do
      local h, co, ok, v = runq(qhead)
      qhead = h
      if co then
        finished(co, ok, v)
      else
        local args = qa[h]
        if args and h <= q[0] and not exiting then
          co = q[h]
          q[h], qa[h] = nil, nil
          qhead = h + 1
          nargs = nargs - 1
          if nargs == 0 and q[-1] == 1 then q[-1] = nil end
          step(co, args)
        end
      end
    end
  end
end

function S.push(co)
  push(co)
end

local reset_hook
function S.on_reset(fn)
  local old = reset_hook
  reset_hook = fn
  return old
end

function S.wakeup(co, ...)
  return wake(co, true, ...)
end

-- ready(co): wakeup(co) with no values. The same, minus the cost of a vararg call:
-- the socket layer wakes a reader with it for every arrival.
function S.ready(co)
  if threads[co] ~= true then return false end
  threads[co] = false
  push(co)
  return true
end

function S.sleep(ms)
  local co = current("sleep")
  local tag = {}
  arm(ms, function() wake(co, tag) end)
  suspend(co, tag)
end

-- Internal, for skysocket.channel: timer(ms, fn [, settle]) -> k, t and
-- untimer(k, t): the scheduler's timers (see arm/disarm above), which run() cancels
-- when it returns; with `settle`, it then calls fn, as if the timer had fired.
S.timer, S.untimer = arm, disarm

function S.exit()
  exiting = true
  queue[-1] = true -- seen by the runner's C loop
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
  drain()
  if qhead > queue[0] then qhead, queue[0] = 1, 0 end
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
  queue[-1], nargs = nil, 0
  main_co = S.fork(function(...) main_result = pack(true, main(...)) end, ...)
  local q = queue
  while true do
    -- The common turn: a coroutine woken without values suspends again by yielding
    -- PARKED; `finished` runs only for one that did not suspend through this module
    -- (it failed, ended, or yielded by itself).
    drain()
    if qhead > q[0] then qhead, q[0] = 1, 0 end
    if exiting or (live == 0 and holds == 0) then break end
    -- A poll may deliver nothing (it only flushed write queues, or accepted into a
    -- backoff): that is no deadlock. Only an idle engine -- no socket, timer, message
    -- or lookup left that could ever wake a coroutine -- means there is nothing to
    -- wait for (raw.poll() then returns at once).
    if raw.poll() == 0 and qhead > q[0] and raw.idle() then
      if live > 0 then
        report(string.format("sched.run: %d coroutine(s) wait for nothing; giving up", live))
      end
      break
    end
  end
  -- Forget whatever is left (after exit()): a later run() starts clean, and the
  -- timers of abandoned sleeps do not keep the engine busy.
  local settle = {}
  for k = 1, tnext do
    local t = tslots[k]
    if t then
      settle[#settle + 1] = tsettle[k] or nil
      disarm(k, t)
    end
  end
  for k in pairs(queue) do queue[k] = nil end
  for k in pairs(qargs) do qargs[k] = nil end
  for k in pairs(threads) do threads[k] = nil end
  queue[0], qhead = 0, 1
  nargs = 0
  live, holds = 0, 0
  guards = {}
  running, exiting = false, false
  main_co = nil
  for i = 1, #settle do
    local ok, err = pcall(settle[i])
    if not ok then report("settling a timeout: " .. tostring(err)) end
  end
  if reset_hook then
    local ok, err = pcall(reset_hook)
    if not ok then report("reset hook: " .. tostring(err)) end
  end
  local r = main_result
  main_result = nil
  if r == nil then return false, "exited before main finished" end
  return unpack(r, 1, r.n)
end

return S
