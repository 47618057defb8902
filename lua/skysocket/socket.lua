-- skysocket.socket: Skynet's coroutine socket API (lualib/skynet/socket.lua) on top of
-- the skysocket engine. Functions that wait must run inside a coroutine of
-- skysocket.sched (sched.run / sched.fork, re-exported here as run/fork/sleep).
--
-- TCP sockets opened or started here are in *buffered mode*: received bytes stay in a
-- Rust buffer and read/readline/readall take one Lua string out of it. Reading pauses
-- while more than limit(id) bytes (default 128 KiB) are unread.
--
-- Return conventions (as Skynet): open -> id | nil, err; read(id, n) -> exactly n
-- bytes | false, rest (closed); read(id) -> >= 1 byte | false, "" ; readline(id, sep)
-- -> line | false, rest; readall(id) -> everything until close.
-- Differences from Skynet, all deliberate:
--   * settimeout(id, ms) bounds every read call on that socket (read, readline,
--     readall, readframe: the whole call, so bytes trickling in do not extend it;
--     block and close: each wait): it returns nil, "timeout" (nothing is consumed);
--     default_timeout(ms) applies to open and new sockets. Without a timeout a wait
--     lasts until data or close, as in Skynet.
--   * a coroutine that raises closes the sockets it owns (see "Ownership" below).
--   * readline returns nil, "line too long" when 64 MiB hold no separator (Skynet
--     has no bound); shorter lines are returned whatever limit(id) is.
--   * limit(id, bytes) sets the read-buffer pause threshold (back-pressure) instead
--     of closing the socket on overflow; read(id, n) / readall / readline lift it as
--     needed.
-- Same as Skynet (issue 14): listen, udp*, udp_connect and resolve raise on failure;
-- listen("", port) is every interface; a read that waits on a paused socket, or
-- start(id), resumes it; a second start on an active socket raises; readall on a
-- closed, drained socket returns false; netstat has Skynet's field names; write takes
-- a string or an array of strings, and on a UDP socket with a peer sends to it.
--   * close_write(id) is a true half-close (FIN after queued data); Skynet has none.
--   * keepopen(id): after the peer's FIN (read returns false) the socket stays open for
--     writing until close(id), so a reply to a half-closed request still goes out
--     (without it, as in Skynet, the socket closes once nothing is queued).
--   * shutdown(id) is a forced close (drops unsent data), as in Skynet; call close(id)
--     afterwards to release the id here.
--   * udp callbacks run as plain engine callbacks (they must not wait).
--   * framed(id [, opts]) / readframe(id) / sendframe(id, data): length-prefixed
--     packets parsed in Rust (see src/lua/buffer.rs).
local raw = require "skysocket"
local sched = require "skysocket.sched"

local M = {}
-- Per-socket state: one small record per socket of this module, its three fields in
-- the array part, so that a read makes one lookup keyed by the (large) id and then
-- only array accesses (a lookup keyed by a large integer costs about 85 instructions
-- on Lua 5.4, an array access a few):
local socks = {}   -- id -> { connected, reader, owner }; nil: the id is not a socket
                   --       of this module. Fields:
                   -- [1] connected: true/false (UDP true, listeners false)
                   -- [2] reader: the coroutine waiting in a read of the socket (not yet
                   --     woken); false: that reader was woken and has not run yet;
                   --     true: the last read(id) drained the buffer and nothing arrived
                   --     since (read(id) then waits without looking); nil: none of
                   --     these. A read waits per socket: whoever wakes it sets the field
                   --     to false and queues the coroutine (sched.push); the coroutine's
                   --     sched state stays false. A woken reader that finds anything but
                   --     false in its record was abandoned meanwhile (forget clears the
                   --     fields of a record it drops).
                   -- [3] owner: see "Ownership" below.
                   -- [4] (LuaJIT and 5.1 only, see HAND) true while read(id) waits
                   --     for whatever comes; the bytes handed to it, as a string.
-- (The fields are written as literals, r[1], r[2], r[3]: on Lua 5.4 a constant index
-- compiles to one GETI/SETI, a named one to an upvalue read and a table access.)
local rare = {}    -- id -> the fields few sockets use, in a table made when one is set:
                   --   TCP: connecting, closer, err, timeout, limit, paused, on_warning,
                   --   rt (the last read timer, see arm);
                   --   listeners: listen, accept, held; UDP: protocol, callback, held
local NONE = {}    -- stands for a missing rare table when reading (never written)
local onclose = {}   -- id -> callback
-- Ownership, so that a coroutine that dies with an error does not leak its sockets:
-- a TCP socket belongs to the coroutine that last took it -- the accept handler
-- started for it, the coroutine that opened or started it, or the last one that
-- waited to read it. When that coroutine raises, the socket is closed by force
-- (unsent data and unread bytes dropped). A coroutine that ends normally leaves its
-- sockets open and ownerless (another coroutine may be serving them).
local pend = {}      -- id -> owner coroutine of a socket with no record here yet (an
                     --       accepted socket not started); the record's [3] otherwise
local owned = {}     -- coroutine -> id, or a set {id = true} when it owns several
local DEFAULT_LIMIT = 128 * 1024
-- How many close(id) calls wait for a reader to finish (x.closer set): while none
-- does, a woken reader skips the look for a closer to wake (the rare[id] lookup).
-- Counted up before x.closer is set and down after it is cleared, so it is never 0
-- while one waits (a closer abandoned in its wait keeps it above 0: only slower).
local closing = 0
-- Whether any socket was ever given a read timeout or paused (rare fields `timeout`,
-- `paused`): until then a read that waits skips looking for them. Set before either
-- field is, and never cleared.
local slow = false
local default_timeout

local setflag -- see LV below
local function set_slow()
  slow = true
  if setflag then setflag(true) end
end

M.run, M.fork, M.sleep, M.exit = sched.run, sched.fork, sched.sleep, sched.exit
M.sched = sched
local ready, self, push = sched.ready, sched.self, sched.push
local threads, PARKED = sched.threads, sched.PARKED
local yield, running = coroutine.yield, coroutine.running
local floor = math.floor
local readsome = raw.readsome
-- On Lua 5.3+ read is a C function (raw.coreader, src/lua/fast/coread.rs) that does
-- the common turns and calls the Lua read below for the rest: that one's errors then
-- name its caller's caller (LV levels further up). setflag(true) makes the C read
-- leave every wait to the Lua one (kept set while `slow` or a close waits: `closing`).
local LV = raw.coreader and 1 or 0
-- On LuaJIT read(id) returns at most CHUNK bytes: its allocator maps and unmaps every
-- block of 128 KiB or more (a string that size cost two system calls and 32 page
-- faults; see LUAJIT_MAX_READ in src/lua/mod.rs). nil elsewhere: everything buffered.
local CHUNK = type(rawget(_G, "jit")) == "table" and 127 * 1024 or nil
-- Where the C read is absent (LuaJIT, 5.1), read(id) waiting for whatever comes sets
-- its record's field 4 to true; the delivery loop then gives it bytes that arrive on an
-- empty buffer as a string in that field, instead of copying them into the buffer and
-- out again (src/lua/fast/deliver.rs). nil elsewhere (5.4+ hand bytes to the C read).
local HAND = not raw.coreader and 4 or nil

local function warn(fmt, ...)
  io.stderr:write("skysocket.socket: ", string.format(fmt, ...), "\n")
end

local function ext(id)
  local x = rare[id]
  if not x then
    x = {}
    rare[id] = x
  end
  return x
end

local function owner_of(id)
  local r = socks[id]
  if r then return r[3] end
  return pend[id]
end

local function disown(id)
  local r = socks[id]
  local co
  if r then
    co = r[3]
    if not co then return end
    r[3] = nil
  else
    co = pend[id]
    if not co then return end
    pend[id] = nil
  end
  local o = owned[co]
  if o == id then
    owned[co] = nil
  elseif type(o) == "table" then
    o[id] = nil
  end
end

local function own(id, co)
  local old = owner_of(id)
  if old == co or not co then return end
  if old then disown(id) end
  local r = socks[id]
  if r then r[3] = co else pend[id] = co end
  local o = owned[co]
  if o == nil then
    owned[co] = id
  elseif type(o) == "table" then
    o[id] = true
  else
    owned[co] = { [o] = true, [id] = true }
  end
end

local function forget(id)
  if owner_of(id) then disown(id) end
  local x = rare[id]
  if x and x.rt then -- its reader returns at once, abandoned: its timer is moot
                     -- (or spent: cancelling that does nothing)
    raw.cancel_timeout(x.rt)
    x.rt = nil
  end
  local r = socks[id]
  if r then
    socks[id] = nil
    r[1], r[2] = nil, nil
  end
  rare[id] = nil
end

-- Register socket `id` here (connected: as record field 1), keeping its owner. A
-- record it replaces loses its reader (as forget does).
-- Whether socket `id` is connected (nil: not a socket of this module).
local function conn(id)
  local r = socks[id]
  if r then return r[1] end
end

local function register(id, connected)
  local old = socks[id]
  local co
  if old then
    co = old[3]
    old[2] = nil
  else
    co = pend[id]
    pend[id] = nil
  end
  if HAND then
    socks[id] = { connected, nil, co, nil } -- room for field 4
  else
    socks[id] = { connected, nil, co }
  end
end

-- Wake the coroutine parked in a read of `id`, if any (as the readable handler does).
local function kick(id)
  local r = socks[id]
  if not r then return end
  local co = r[2]
  if co and co ~= true then
    r[2] = false
    push(co)
  end
end

-- Wake the close(id) that waits for the socket's reader to finish, if any.
local function wake_closer(id)
  local x = rare[id]
  if x and x.closer then ready(x.closer) end
end

local function wake(id)
  kick(id)
  wake_closer(id)
end

-- The socket's connection state changed (opened, closed, failed): record it, end a
-- pending open, and wake whoever waits on the socket.
local function settle(id, connected)
  local r = socks[id]
  if r then r[1] = connected end
  local x = rare[id]
  if x then x.connecting = nil end
  wake(id)
end

local function finished(id)
  local cb = onclose[id]
  onclose[id] = nil
  if cb then cb(id) end
end

-- The handler every socket of this module is started with.
local H = {}

function H.open(id)
  if not socks[id] then return end
  -- Remembered for the opener: the peer may close before it runs (open and close in
  -- one poll), and the connection, with the bytes that came before the close, is
  -- still the opener's.
  local x = rare[id]
  if x and x.connecting then x.opened = true end
  settle(id, true)
end

-- A TLS handshake finished (for tls_open it follows `open`).
function H.handshake(id)
  if not socks[id] then return end
  local x = ext(id)
  x.tls = "done"
  wake(id)
end

-- readable(id, unread): wake the coroutine waiting in a read of id (a C closure; see
-- sched.waker).
H.readable = sched.waker(socks, 2, HAND)

function H.close(id)
  local x = rare[id]
  if x and (x.listen or x.protocol == "UDP") then
    -- A listener or UDP socket closed from elsewhere (raw.close): nobody reads it, so
    -- forget it now, and stop holding the scheduler for its callback.
    if x.held then sched.release() end
    forget(id)
  elseif socks[id] then
    settle(id, false)
  else
    raw.unbuffer(id)
  end
  finished(id)
end

function H.error(id, msg)
  local x = rare[id]
  if x and (x.listen or x.protocol == "UDP") then
    warn("error on %s %d: %s", x.listen and "listener" or "udp socket", id, msg)
    return -- these errors do not close the socket
  end
  if socks[id] then
    ext(id).err = msg
    settle(id, false)
  else
    raw.unbuffer(id)
  end
  finished(id)
end

function H.accept(lid, id, addr)
  local x = rare[lid]
  if not x or not x.accept then
    raw.close(id, true)
    return
  end
  own(id, sched.fork(x.accept, id, addr))
end

function H.warning(id, kb)
  if not socks[id] then return end
  local x = rare[id]
  if x and x.on_warning then
    x.on_warning(id, kb)
  elseif kb > 0 then
    warn("WARNING: %d K bytes need to send out (id = %d)", kb, id)
  end
end

function H.udp(id, data, from)
  local x = rare[id]
  if x and x.callback then x.callback(data, from) end
end

local function new_socket(id, connected)
  register(id, connected)
  rare[id] = nil
  if default_timeout then
    set_slow()
    ext(id).timeout = default_timeout
  end
end

-- Argument checks in the style of luaL_argerror, raised at the caller's line.
local function argcheck(ok, n, fname, msg, lv)
  if not ok then error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3 + (lv or 0)) end
end

local function check(id)
  if not socks[id] then error("socket " .. tostring(id) .. " is not open in skysocket.socket", 3) end
end

-- The deadline of one read call on a socket with a timeout (nil without one): a
-- single timer for the whole call, so bytes trickling in (a slowloris client) do not
-- extend it. The timer wakes the call's reader; suspend() then reports "timeout".
-- A read's timer is also kept as `rare[id].rt`, so that the timers of readers abandoned
-- when run() returns can be cancelled (see the reset hook below). It is left there when
-- the timer fires or is cancelled: timer ids are never reused, and cancelling a spent
-- one does nothing.
local function arm(id)
  local x = slow and rare[id]
  local ms = x and x.timeout
  if not ms then return nil end
  local dl = { co = false, expired = false }
  dl.timer = raw.timeout(ms, function()
    dl.expired, dl.timer = true, nil
    local co, rec = dl.co, socks[id]
    if co and rec and rec[2] == co then kick(id) end
  end)
  x.rt = dl.timer
  return dl
end

-- Cancel a call's deadline and pass its results through.
local function done(dl, ...)
  if dl and dl.timer then
    raw.cancel_timeout(dl.timer)
    dl.timer = nil
  end
  return ...
end

-- A read that has to wait on a socket paused by pause(id) resumes it first, as in
-- Skynet (otherwise it would wait for data that can never arrive).
local function unpause(id)
  local x = rare[id]
  if x and x.paused then
    x.paused = nil
    raw.resume(id)
  end
end

-- Wait for the socket's next event (data, close, open). Returns true; false, "timeout";
-- or nil if the socket was abandoned meanwhile (it is not ours any more: the caller
-- reports it closed, reading nothing). With a call deadline `dl` the wait ends when
-- it expires; without one, a timeout set on the socket bounds this wait.
-- (Called only on a socket registered here: its callers check `connected` first.)
local function suspend(id, dl, lv)
  local rec = socks[id]
  local r = rec[2]
  lv = 3 + (lv or 0)
  if r ~= nil and r ~= true then error("socket " .. id .. " already has a waiting reader", lv) end
  local co = self()
  if not co then error("skysocket.socket: waiting outside a sched coroutine", lv) end
  if dl then
    if dl.expired then return false, "timeout" end
    dl.co = co
  end
  if rec[3] ~= co then own(id, co) end
  if slow then unpause(id) end
  rec[2] = co
  local t, fired
  local x = slow and not dl and rare[id]
  local ms = x and x.timeout
  if ms then
    t = raw.timeout(ms, function()
      t = nil
      if rec[2] == co then fired = true; kick(id) end
    end)
    x.rt = t
  end
  yield(PARKED)
  if t then raw.cancel_timeout(t) end
  r = rec[2]
  if r ~= false and r ~= co then
    return nil -- forgotten (abandoned, or closed by force) or taken over
  end
  rec[2] = nil
  if closing > 0 then wake_closer(id) end
  if fired then return false, "timeout" end
  return true
end

local function rest(id)
  return raw.readsome(id) or ""
end

-- Lines longer than the read buffer's pause threshold are still returned (Skynet
-- returns any line): while a readline waits, the threshold is lifted up to MAX_LINE.
-- Only a line longer than that fails, with nil, "line too long", so a peer that never
-- sends a separator cannot grow the buffer without bound.
local MAX_LINE = 64 * 1024 * 1024

-- Runtime failures of the functions that Skynet's module raises for (listen, udp*,
-- resolve) are raised here too, at the caller's line.
local function failure(fname, err)
  err = tostring(err)
  if err:sub(1, #fname) == fname then return err end
  return fname .. ": " .. err
end

local function raise_on_fail(fname, v, err, ...)
  if v == nil or v == false then error(failure(fname, err), 3) end
  return v, err, ...
end

---------------------------------------------------------------- TCP

-- Wait for a connect started by raw.connect/raw.tls_connect to open (or fail).
local function opened(id)
  new_socket(id, false)
  own(id, self())
  ext(id).connecting = true
  raw.start(id, H)
  raw.buffered(id, DEFAULT_LIMIT)
  local ok = suspend(id)
  if ok == nil then return nil, "connect failed" end
  local x = rare[id] or NONE
  local was_open = x.opened
  if was_open then x.opened = nil end
  local rec = socks[id]
  if (rec and rec[1]) or was_open then return id end
  local why = x.err
  forget(id)
  raw.unbuffer(id)
  if not ok then
    raw.close(id, true)
    return nil, "timeout"
  end
  return nil, why or "connect failed"
end

function M.open(host, port)
  local id, err = raw.connect(host, port)
  if not id then return nil, err end
  return opened(id)
end

-- bind(os_fd): adopt an open descriptor (a pipe, a terminal, a socket made elsewhere)
-- and read and write it as a socket (Skynet's socket.bind). Returns id or nil, err.
-- The engine works on a duplicate: closing the id leaves os_fd open. Like Skynet, it
-- makes the descriptor non-blocking; half-close (close_write) needs a real socket.
function M.bind(os_fd)
  argcheck(type(os_fd) == "number", 1, "bind", "number expected, got " .. type(os_fd))
  local id, err = raw.bind(os_fd)
  if not id then return nil, err end
  return opened(id)
end

-- stdin(): bind(0), Skynet's console input.
function M.stdin()
  return M.bind(0)
end

-- close_fd(id): close a socket this module does not manage (Skynet: one never
-- started, e.g. an accepted id handed elsewhere); use close for the others.
function M.close_fd(id)
  if socks[id] ~= nil then error("Use socket.close instead", 2) end
  raw.close(id)
end

function M.listen(host, port, backlog)
  if host == "" then host = "0.0.0.0" end -- Skynet: an empty host is every interface
  local id, ip, p = raw.listen(host, port, backlog)
  if not id then error(failure("listen", ip), 2) end
  register(id, false)
  rare[id] = { listen = true }
  return id, ip, p
end

-- start(listener, accept_cb): accept_cb(id, addr) runs in a new coroutine per client.
-- start(id): take an accepted (or abandoned, or paused) socket and read from it.
function M.start(id, func)
  argcheck(func == nil or type(func) == "function", 2, "start",
    "function expected, got " .. type(func))
  local x = rare[id]
  if func or (x and x.listen) then
    if not socks[id] then
      register(id, false)
      rare[id] = { listen = true }
    end
    x = ext(id)
    x.accept = func or x.accept
    local ok, err = raw.start(id, H)
    if not ok then forget(id); return nil, err end
    if x.accept and not x.held then x.held = true; sched.hold() end
    return id
  end
  local rec = socks[id]
  if rec and rec[1] then
    if x and x.paused then
      unpause(id)
      return id
    end
    error("socket is not closed", 2) -- Skynet: a second start on an active socket
  end
  -- Buffered before started: with services, the socket thread may read (and see the
  -- peer close) as soon as the start is carried out.
  raw.buffered(id, DEFAULT_LIMIT)
  local ok, err = raw.start(id, H)
  if not ok then raw.unbuffer(id); return nil, err end
  new_socket(id, true)
  own(id, self())
  raw.resume(id) -- an abandoned socket was paused
  return id
end

local function read(id, n)
  local rec = socks[id]
  if not rec then error("socket " .. tostring(id) .. " is not open in skysocket.socket", 2 + LV) end
  if n == nil then
    local connected = rec[1]
    local r = rec[2]
    if r ~= true then -- true: the last read drained the buffer, nothing arrived since
      local d = readsome(id, CHUNK)
      if d then
        if r == nil and (not CHUNK or #d < CHUNK) then rec[2] = true end
        return d
      end
    end
    while true do
      if not connected then return false, "" end
      -- suspend(id) inlined, and the yield is done right here: an idle connection's
      -- coroutine waits in this frame. A coroutine keeps the CallInfos (and Lua
      -- stack) of its deepest call chain, so nothing here goes more than one call
      -- below read.
      if r ~= nil and r ~= true then error("socket " .. id .. " already has a waiting reader", 2 + LV) end
      local co = running()
      -- The owner of a socket is always a scheduled coroutine (own() is given no
      -- other), so only a new owner needs the check.
      if rec[3] ~= co then
        if threads[co] == nil then error("skysocket.socket: waiting outside a sched coroutine", 2 + LV) end
        own(id, co)
      end
      local x = slow and rare[id]
      local t, fired
      if x then
        if x.paused then unpause(id) end
        local ms = x.timeout
        if ms then
          t = raw.timeout(ms, function()
            t = nil
            if rec[2] == co then fired = true; kick(id) end
          end)
          x.rt = t
        end
      end
      rec[2] = co
      local h
      if HAND then
        rec[HAND] = true
        yield(PARKED)
        h = rec[HAND]
        rec[HAND] = nil
      else
        yield(PARKED)
      end
      if t then raw.cancel_timeout(t) end
      r = rec[2]
      if r ~= false and r ~= co then return false, "" end -- abandoned meanwhile
      if closing > 0 then wake_closer(id) end
      if h and h ~= true then
        rec[2] = nil -- bytes that came after these may be buffered
        return h
      end
      local d = not fired and readsome(id, CHUNK)
      if d then
        if not CHUNK or #d < CHUNK then rec[2] = true else rec[2] = nil end
        return d
      end
      rec[2], r = nil, nil
      if fired then return nil, "timeout" end
      connected = rec[1]
    end
  end
  if type(n) ~= "number" or n < 0 or n ~= floor(n) then
    argcheck(false, 2, "read", "size must be a non-negative integer, got " .. tostring(n), LV)
  end
  local d = raw.readn(id, n)
  if d then return d end
  local limit = (rare[id] or NONE).limit or DEFAULT_LIMIT
  if limit > 0 and n > limit then raw.buffered(id, n) end
  local dl = arm(id)
  while true do
    if not conn(id) then
      d = rest(id)
      break
    end
    local ok, err = suspend(id, dl, LV)
    if ok == nil then
      d = ""
      break
    end
    if not ok then
      raw.buffered(id, limit)
      return done(dl, nil, err)
    end
    d = raw.readn(id, n)
    if d then
      raw.buffered(id, limit)
      return done(dl, d)
    end
  end
  return done(dl, false, d)
end

if raw.coreader then
  -- After a wait in the C read while the flag is set: what the Lua read does after
  -- its wait before taking the bytes (wake a close waiting for this reader).
  local function after_park(id)
    if closing > 0 then wake_closer(id) end
  end
  M.read, setflag = raw.coreader(PARKED, socks, read, after_park)
else
  M.read = read
end

function M.readline(id, sep)
  sep = sep or "\n"
  check(id)
  argcheck(type(sep) == "string" and sep ~= "", 2, "readline",
    "non-empty string expected, got " .. (sep == "" and "empty string" or type(sep)))
  local line = raw.readline(id, sep)
  if line then return line end
  if not conn(id) then return false, rest(id) end
  local limit = (rare[id] or NONE).limit or DEFAULT_LIMIT
  local lifted = false
  local dl
  local function finish(...)
    if lifted then raw.buffered(id, limit) end
    return done(dl, ...)
  end
  while true do
    line = raw.readline(id, sep)
    if line then return finish(line) end
    if not conn(id) then return finish(false, rest(id)) end
    local unread = raw.unread(id) or 0
    if unread >= MAX_LINE then return finish(nil, "line too long") end
    if limit > 0 and unread >= limit and not lifted then
      lifted = true
      raw.buffered(id, MAX_LINE)
    end
    dl = dl or arm(id)
    local ok, err = suspend(id, dl)
    if ok == nil then return finish(false, "") end
    if not ok then return finish(nil, err) end
  end
end

function M.readall(id)
  check(id)
  if not conn(id) then
    local r = rest(id)
    return r ~= "" and r -- Skynet: false once a closed socket is drained
  end
  if conn(id) then
    raw.buffered(id, 0) -- no pause: we wait for the end of the stream
    local dl = arm(id)
    while conn(id) do
      local ok, err = suspend(id, dl)
      if ok == nil then return done(dl, "") end
      if not ok then
        raw.buffered(id, (rare[id] or NONE).limit or DEFAULT_LIMIT)
        return done(dl, nil, err)
      end
    end
    done(dl)
  end
  return rest(id)
end

-- block(id): wait until something can be read (or the socket closes). Returns true if
-- data is buffered or the socket is still open, false otherwise.
function M.block(id)
  if socks[id] == nil then return false end
  if (raw.unread(id) or 0) > 0 then return true end
  if not conn(id) then return false end
  local ok, err = suspend(id)
  if ok == nil then return false end
  if not ok then return nil, err end
  return conn(id) or (raw.unread(id) or 0) > 0
end

M.write = raw.send
M.lwrite = raw.lwrite
M.close_write = raw.close_write
M.keepopen = raw.keepopen
M.nodelay = raw.nodelay

-- close(id): flush and close; waits for the close and for a reader of this socket to
-- finish (bounded by settimeout: then the socket is closed by force).
function M.close(id)
  local connected = conn(id)
  if connected == nil then return end
  local x = rare[id]
  if x and (x.listen or x.protocol == "UDP") then
    raw.close(id, true)
    if x.held then sched.release() end
    forget(id)
    finished(id)
    return
  end
  if connected or (x and x.connecting) then
    raw.close(id)
    local me = sched.self()
    if me then
      x = ext(id)
      closing = closing + 1
      if setflag then setflag(true) end
      x.closer = me
      while true do
        local rec = socks[id]
        local r = rec and rec[2]
        if not ((rec and rec[1]) or x.connecting or (r ~= nil and r ~= true)) then break end
        local ok = sched.wait(x.timeout)
        if not ok then
          raw.close(id, true)
          break
        end
      end
      x.closer = nil
      closing = closing - 1
      if setflag then setflag(slow or closing > 0) end
    end
  else
    raw.close(id) -- the peer closed first: release a socket kept open by keepopen
  end
  forget(id)
  raw.unbuffer(id)
end

-- shutdown(id): forced close (drops unsent data); the reader sees the close.
function M.shutdown(id)
  if socks[id] ~= nil then raw.shutdown(id) end
end

function M.pause(id)
  if socks[id] == nil then return end
  set_slow()
  ext(id).paused = true
  raw.pause(id)
end

-- abandon(id): forget the socket here without closing it; start(id) takes it back, or
-- another service takes it over (its unread bytes and what arrives meanwhile go to the
-- next owner, in order; in a program without services they are dropped). A reader
-- waiting on it returns as on a close, having read nothing.
function M.abandon(id)
  if socks[id] == nil then return end
  local co, x = socks[id][2], rare[id]
  forget(id)
  onclose[id] = nil
  if co and co ~= true then push(co) end
  if x and x.closer then ready(x.closer) end
  raw.abandon(id)
end

function M.limit(id, bytes)
  check(id)
  ext(id).limit = bytes
  raw.buffered(id, bytes)
end

function M.settimeout(id, ms)
  check(id)
  set_slow()
  ext(id).timeout = ms
end

function M.default_timeout(ms)
  local prev = default_timeout
  default_timeout = ms
  return prev
end

function M.invalid(id)
  return socks[id] == nil
end

function M.disconnected(id)
  local connected = conn(id)
  if connected ~= nil then return not (connected or (rare[id] or NONE).connecting) end
end

function M.warning(id, cb)
  check(id)
  ext(id).on_warning = cb
end

function M.onclose(id, cb)
  onclose[id] = cb
end

-- header(s): big-endian integer of a 1-4 byte string (Skynet's socket.header).
function M.header(str)
  argcheck(type(str) == "string", 1, "header", "string expected, got " .. type(str))
  local n = #str
  if n < 1 or n > 4 then error("Invalid read " .. str, 2) end
  local v = 0
  for i = 1, n do v = v * 256 + str:byte(i) end
  return v
end

---------------------------------------------------------------- framing

-- framed(id [, opts]): length-prefixed packets (opts: header = 2|4, max = bytes).
function M.framed(id, opts)
  check(id)
  local o = { buffered = true }
  if opts then for k, v in pairs(opts) do o[k] = v end end
  o.buffered = true
  return raw.framed(id, o)
end

-- readframe(id) -> payload | false, err (closed, or "frame ... exceeds the maximum").
function M.readframe(id)
  check(id)
  local dl
  while true do
    local f = raw.readframe(id)
    if f then return done(dl, f) end
    if not conn(id) then return done(dl, false, (rare[id] or NONE).err or "closed") end
    dl = dl or arm(id)
    local ok, err = suspend(id, dl)
    if ok == nil then return done(dl, false, "closed") end
    if not ok then return done(dl, nil, err) end
  end
end

M.sendframe = raw.sendframe
M.pack = raw.pack

---------------------------------------------------------------- UDP

---------------------------------------------------------------- TLS
-- Contexts come from skysocket.tls_context{...} (re-exported as tls_context). The
-- handshake runs in the engine; these calls wait for it in the calling coroutine.

M.tls_context = raw.tls_context
M.tls_info = raw.tls_info

-- Wait until the handshake of a TLS socket is done. Returns true, or nil, err (the
-- handshake failed: the socket is closed; or "timeout": it stays open).
local function handshaken(id, fname, timeout)
  local x = ext(id)
  local saved = x.timeout
  if timeout then
    set_slow()
    x.timeout = timeout
  end
  local ok, err = true, nil
  while x.tls ~= "done" and conn(id) do
    ok, err = suspend(id)
    if ok == nil then err = "socket abandoned"; break end
    if not ok then break end
    x = ext(id)
  end
  x = rare[id]
  if x then x.timeout = saved end
  if x and x.tls == "done" then return true end
  if ok and not err then err = (x and x.err) or "closed during the TLS handshake" end
  return nil, err
end

-- tls_open(host, port, ctx [, server_name]): connect and handshake; id or nil, err.
function M.tls_open(host, port, ctx, server_name)
  local id, err = raw.tls_connect(host, port, ctx, server_name)
  if not id then return nil, err end
  return opened(id)
end

-- tls_listen(host, port, ctx [, backlog]): as listen (raises on failure); accepted sockets handshake once
-- started (call handshake(id) in the accept coroutine to wait for it).
function M.tls_listen(host, port, ctx, backlog)
  local id, ip, p = raw.tls_listen(host, port, ctx, backlog)
  if not id then error(failure("tls_listen", ip), 2) end -- as listen
  register(id, false)
  rare[id] = { listen = true }
  return id, ip, p
end

-- handshake(id [, timeout_ms]): wait for the TLS handshake of a started socket.
function M.handshake(id, timeout)
  check(id)
  argcheck(timeout == nil or type(timeout) == "number", 2, "handshake", "number expected")
  return handshaken(id, "handshake", timeout)
end

-- starttls(id, ctx [, server_name [, timeout_ms]]): upgrade a connected socket in place
-- and wait for the handshake. Bytes already buffered unread are plaintext that came
-- before the upgrade: they are discarded (they cannot be trusted as part of the
-- protected stream).
function M.starttls(id, ctx, server_name, timeout)
  check(id)
  argcheck(timeout == nil or type(timeout) == "number", 4, "starttls", "number expected")
  if not conn(id) then return nil, "socket is closed" end
  raw.readsome(id) -- drop unprotected bytes read before the upgrade
  local ok, err = raw.tls_upgrade(id, ctx, server_name)
  if not ok then return nil, err end
  ext(id).tls = "handshaking"
  return handshaken(id, "starttls", timeout)
end

-- Registers the socket here only once the engine has taken it (a bad or unknown id
-- raises or fails in raw.start and leaves no state behind).
local function udp_object(id, cb)
  local ok, err = raw.start(id, H)
  if not ok then return nil, err end
  register(id, true)
  rare[id] = { protocol = "UDP", callback = cb, held = cb ~= nil }
  if cb then sched.hold() end
  return id
end

-- udp(callback [, host, port]): callback(data, from) for each datagram.
function M.udp(callback, host, port)
  local id, err
  if host then id, err = raw.udp(host, port) else id, err = raw.udp() end
  if not id then error(failure("udp", err), 2) end
  return raise_on_fail("udp", udp_object(id, callback))
end

function M.udp_connect(id, host, port, callback)
  if socks[id] ~= nil then
    local x = ext(id)
    if callback and not x.held then x.held = true; sched.hold() end
    if callback then x.callback = callback end
  else
    local ok, err = udp_object(id, callback)
    if not ok then error(failure("udp_connect", err), 2) end
  end
  return raise_on_fail("udp_connect", raw.udp_connect(id, host, port))
end

function M.udp_listen(host, port, callback)
  local id, err = raw.udp_listen(host, port)
  if not id then error(failure("udp_listen", err), 2) end
  return raise_on_fail("udp_listen", udp_object(id, callback))
end

function M.udp_dial(host, port, callback)
  local id, err = raw.udp_dial(host, port)
  if not id then error(failure("udp_dial", err), 2) end
  return raise_on_fail("udp_dial", udp_object(id, callback))
end

M.sendto = raw.sendto
M.udp_address = raw.udp_address
-- netstat(): Skynet's field names (type "LISTEN", "TCP", "UDP", "CLOSING"; reading,
-- writing; accept for listeners; peer/sock) beside the callback module's (as proto,
-- state, paused ...). address is Skynet's owning service: always 0 here.
function M.netstat()
  local out = raw.info()
  for _, s in ipairs(out) do
    s.proto = s.type
    if s.state == "listen" or s.state == "plisten" then
      s.type, s.accept = "LISTEN", s.read
    elseif s.type == "udp" then
      s.type = "UDP"
    elseif s.state == "halfclose_read" or s.state == "halfclose_write" then
      s.type = "CLOSING"
    else
      s.type = "TCP"
    end
    s.address = 0
    s.reading = not s.paused
    s.writing = (s.wbuffer or 0) > 0
  end
  return out
end

-- resolve(host) -> array of addresses; raises on failure, as Skynet's driver does.
function M.resolve(host, fn)
  if fn ~= nil then return raw.resolve(host, fn) end
  return raise_on_fail("resolve", raw.resolve(host))
end

---------------------------------------------------------------- ownership

-- A socket whose owner raised: close it by force, drop its buffer, and wake whoever
-- else waits on it (they see a close, as after abandon).
local function drop(id)
  if socks[id] == nil then
    raw.close(id, true) -- accepted, never started: still silent in the engine
    return
  end
  local co, x = socks[id][2], rare[id]
  if x and (x.listen or x.protocol == "UDP") then return end -- connections only
  forget(id)
  if co and co ~= true then push(co) end
  if x and x.closer then ready(x.closer) end
  raw.close(id, true)
  raw.unbuffer(id)
end

-- run() returned: the coroutines still parked in reads were abandoned with it.
local chained
chained = sched.on_reset(function()
  for _, rec in pairs(socks) do
    if rec[2] ~= true then rec[2] = nil end
    if HAND then rec[HAND] = nil end
  end
  -- The read timeouts of the readers abandoned with run(): no timer outlives it.
  for _, x in pairs(rare) do
    if x.rt then
      raw.cancel_timeout(x.rt)
      x.rt = nil
    end
  end
  if chained then chained() end
end)

sched.on_finish(function(co, ok)
  local o = owned[co]
  if o == nil then return end
  owned[co] = nil
  if type(o) ~= "table" then o = { [o] = true } end
  for id in pairs(o) do
    if owner_of(id) == co then
      local rec = socks[id]
      if rec then rec[3] = nil else pend[id] = nil end
      if not ok then drop(id) end
    end
  end
end)

return M
