-- skysocket.channel: one client connection shared by any number of coroutines
-- (Skynet's socketchannel, rebuilt on skysocket.socket).
--
--   local channel = require "skysocket.channel"
--   local ch = channel.new { host = "127.0.0.1", port = 6379, auth = hook, timeout = 2000 }
--   local ok, value = ch:request(bytes, reader)     -- order mode
--
-- * Order mode (default): replies come back in request order. request(bytes, reader)
--   writes at once (requests of many coroutines go out back to back: pipelining) and
--   queues reader; a dispatcher coroutine runs each reader on the reply stream in turn
--   and wakes its caller.
-- * Session mode (opts.response given): every reply carries a session id;
--   opts.response(sock) reads one reply and returns session, ok, value, and
--   request(bytes, session) waits for the reply with that session.
-- * Readers never wait: reader(sock) parses from a receive buffer held in Lua with
--   sock:read(n) / sock:readline(sep) (or sock.buf / sock.pos directly). When the
--   reply is not complete yet these raise an internal signal: the channel rewinds to
--   the start of the reply, waits for more bytes and calls the reader again. A reader
--   must therefore have no side effects before it returns, and must not catch errors
--   raised by sock:read / sock:readline. Any other error raised by a reader (a
--   malformed reply) drops the connection.
-- * Connect on first use; one coroutine connects while the others wait. The auth hook
--   runs on every (re)connect before any queued request goes out; its own requests
--   pass. After a drop the next request reconnects; failed attempts are spaced by an
--   exponential backoff (backoff_min .. backoff_max ms).
-- * Requests in flight when the connection drops, times out or is closed get
--   nil, message. Nothing is retried behind the caller's back once it was written.
-- * Return convention: request returns what the reader returned (ok, value: ok is
--   true or false, a nil ok is turned into false), or nil, message for a transport
--   failure: "timeout", "channel closed", "connect to H:P failed: ...",
--   "handshake with H:P failed: ...", "connection to H:P lost".
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"

local M = {}

local find, sub, concat = string.find, string.sub, table.concat
local yield, running = coroutine.yield, coroutine.running
local park, wakeup, ready, fork = sched.park, sched.wakeup, sched.ready, sched.fork
local PARKED = sched.PARKED
local threads = sched.threads
local send, timeout = raw.send, raw.timeout
local sread = socket.read

-- The timeouts of the waits in progress are scheduler timers that settle when
-- sched.run() returns: the coroutines still waiting are abandoned with it, and their
-- timeouts are settled at once, as if they had expired (the channel's bookkeeping
-- done, nobody resumed: sched.wakeup ignores an abandoned coroutine), so no timer of an
-- abandoned wait keeps the engine busy after run() (raw.idle(), configure{}).
local timer, untimer = sched.timer, sched.untimer

-- NEED: raised by sock:read / sock:readline when the reply is not complete yet.
local NEED = setmetatable({}, { __tostring = function() return "skysocket.channel: incomplete reply" end })
M.NEED = NEED

-- Can a coroutine yield inside pcall? (Lua 5.2+ and LuaJIT: yes; PUC Lua 5.1: no.)
local pcall_yields = (function()
  local co = coroutine.create(function() return pcall(coroutine.yield) end)
  local ok = coroutine.resume(co)
  if not ok then return false end
  local ok2, inner = coroutine.resume(co)
  return ok2 and inner == true
end)()
M.pcall_yields = pcall_yields

---------------------------------------------------------------- receive buffer

local Sock = {}
Sock.__index = Sock

-- sock:readline([sep]) -> the bytes up to sep (default "\r\n"), sep consumed.
function Sock:readline(sep)
  sep = sep or "\r\n"
  local buf, pos = self.buf, self.pos
  local s, e = find(buf, sep, pos, true)
  if not s then error(NEED, 0) end
  self.pos = e + 1
  return sub(buf, pos, s - 1)
end

-- sock:read(n) -> exactly n bytes.
function Sock:read(n)
  local pos = self.pos
  local e = pos + n - 1
  if e > #self.buf then
    self.need = e
    error(NEED, 0)
  end
  self.pos = e + 1
  return sub(self.buf, pos, e)
end

-- sock:need(last): the reply needs the buffer to reach index `last`; raises NEED if
-- it does not (for readers that parse sock.buf themselves).
function Sock:want(last)
  if last > #self.buf then
    self.need = last
    error(NEED, 0)
  end
end

local function new_sock(id)
  return setmetatable({ id = id, buf = "", pos = 1, start = 1, need = nil, dispatching = false,
    flushing = false, wq = {}, nw = 0, ch = nil }, Sock)
end

---------------------------------------------------------------- argument checks

local function argerror(n, fname, msg, level)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 2) + 1)
end

local function opt_ms(opts, key)
  local v = opts[key]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v < 0 then
    argerror(1, "new", "field '" .. key .. "' must be a number of milliseconds >= 0", 3)
  end
  if v == 0 then return nil end
  return v
end

---------------------------------------------------------------- channel

local Channel = {}
Channel.__index = Channel

local DEFAULT_CONNECT_TIMEOUT = 5000

-- new(opts): a channel (no connection is made until the first request or connect()).
function M.new(opts)
  if type(opts) ~= "table" then argerror(1, "new", "table expected, got " .. type(opts)) end
  local host, port = opts.host, opts.port
  if type(host) ~= "string" and type(host) ~= "number" then
    argerror(1, "new", "field 'host' must be a string")
  end
  if port ~= nil and type(port) ~= "number" and type(port) ~= "string" then
    argerror(1, "new", "field 'port' must be a number")
  end
  for _, k in ipairs { "auth", "response", "open" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      argerror(1, "new", "field '" .. k .. "' must be a function")
    end
  end
  if opts.tls ~= nil and opts.tls ~= false and not opts.open then
    -- TLS runs in the engine: the channel only ever sees plaintext.
    if not raw.tls then
      argerror(1, "new", "field 'tls': TLS is not available in this build")
    end
    if opts.tls ~= true and type(opts.tls) ~= "userdata" then
      argerror(1, "new", "field 'tls' must be true or a TLS context (skysocket.tls_context)")
    end
  end
  local self = setmetatable({
    host = host, port = port, tls = opts.tls,
    name = port and (tostring(host) .. ":" .. tostring(port)) or tostring(host),
    auth = opts.auth, response = opts.response, opener = opts.open,
    timeout = opt_ms(opts, "timeout"),
    connect_timeout = opt_ms(opts, "connect_timeout") or (opts.connect_timeout == nil and DEFAULT_CONNECT_TIMEOUT or nil),
    backoff_min = opt_ms(opts, "backoff_min") or 100,
    backoff_max = opt_ms(opts, "backoff_max") or 5000,
    nodelay = opts.nodelay ~= false,
    sock = nil,        -- the receive buffer of the current connection (also its identity)
    ready = false,     -- connected and the auth hook done
    closed = false,
    authco = nil,      -- coroutine running the auth hook
    connecting = false,
    waiters = {}, whead = 1, wtail = 0, -- coroutines waiting for `ready`
    fails = 0, cooling = false, cooler = nil,
    -- order mode: parallel arrays of callers and readers, head..tail in flight
    qco = {}, qrd = {}, qa = {}, qb = {}, head = 1, tail = 0,
    -- session mode: session -> caller
    sessions = {}, npending = 0,
  }, Channel)
  return self
end

-- Wake every caller in flight with nil, msg and forget them.
local function fail_pending(self, msg)
  local qco, qrd = self.qco, self.qrd
  for i = self.head, self.tail do
    local co = qco[i]
    qco[i], qrd[i] = nil, nil
    if co then wakeup(co, nil, msg) end
  end
  self.head, self.tail = 1, 0
  local sessions = self.sessions
  for k, co in pairs(sessions) do
    sessions[k] = nil
    wakeup(co, nil, msg)
  end
  self.npending = 0
end

local function fail_waiters(self, msg)
  local w = self.waiters
  for i = self.whead, self.wtail do
    local co = w[i]
    w[i] = nil
    if co then wakeup(co, nil, msg) end
  end
  self.whead, self.wtail = 1, 0
end

-- Drop connection `s` (if it is still the current one): fail what is in flight, close.
local function drop(self, s, msg, force)
  if self.sock ~= s then return end
  self.sock, self.ready = nil, false
  fail_pending(self, msg)
  if sched.self() then
    if force then socket.shutdown(s.id) end
    socket.close(s.id) -- waits for the close and for the dispatcher's read to end
  else
    -- Not in a coroutine (the end-of-turn writer is an engine timer; close() may be
    -- called from a callback): socket.close could not wait, and would forget the
    -- socket without waking the dispatcher parked in its read. abandon() wakes it.
    socket.abandon(s.id)
    raw.close(s.id, force)
  end
end

-- End of a scheduler turn: write the requests gathered since the first one.
local function flush(self, s)
  s.flushing = false
  local n = s.nw
  if n == 0 then return end
  local wq = s.wq
  local data = n == 1 and wq[1] or concat(wq, "", 1, n)
  for i = 1, n do wq[i] = nil end
  s.nw = 0
  if self.sock ~= s then return end
  if not send(s.id, data) then drop(self, s, "connection to " .. self.name .. " lost") end
end

-- The connections with requests gathered in this turn, and whether the writer of them
-- (one per turn, for all channels) is scheduled: a 0 ms engine timer, which fires in the
-- scheduler's next poll, after every coroutine of this turn ran. (An engine timer, not
-- a forked coroutine: it survives a sched.run that ends with sched.exit().)
local dirty, ndirty, flusher = {}, 0, false

local function flush_all()
  flusher = true -- no new timer while this runs: requests it causes join this flush
  local i = 1
  while i <= ndirty do -- a flush may drop a connection: the list can change meanwhile
    local s = dirty[i]
    dirty[i] = nil
    flush(s.ch, s)
    i = i + 1
  end
  ndirty, flusher = 0, false
end

local IDLE, MORE = 1, 2

local function drain_order(self, s)
  local qco, qrd, qa, qb = self.qco, self.qrd, self.qa, self.qb
  local h = self.head
  while h <= self.tail do
    if s.pos > #s.buf then return MORE end
    s.start = s.pos
    local a, b = qrd[h](s)
    local co = qco[h]
    qco[h], qrd[h] = nil, nil
    if co then
      -- The caller finds its results in qa/qb[slot] (it runs before the next poll, so
      -- before any later reply can reuse the slot); ready() wakes it without packing.
      if a == nil then a = false end
      qa[h], qb[h] = a, b
      ready(co)
    end
    h = h + 1
    self.head = h
  end
  self.head, self.tail = 1, 0
  return IDLE
end

local function drain_session(self, s)
  local sessions, response = self.sessions, self.response
  while self.npending > 0 do
    if s.pos > #s.buf then return MORE end
    s.start = s.pos
    local session, a, b = response(s)
    local co = sessions[session]
    if co then
      sessions[session] = nil
      self.npending = self.npending - 1
      if a == nil then a = false end
      wakeup(co, a, b)
    end
  end
  return IDLE
end

-- Before the dispatcher ends, it lets the callers its last drain woke run first (it
-- queues itself behind them): a caller that sends its next request in this turn finds
-- it still there, and no new dispatcher is forked (on lua5.4 a fork costs ~14,000
-- instructions, this wait ~5,000; BENCHMARKS.md, issue 17 session 6). Returns true if
-- requests came meanwhile (the dispatcher goes on), false if it is to end.
local function linger(self, s)
  local co = running()
  park(co)
  ready(co)
  yield(PARKED)
  if self.sock ~= s then return false end
  if self.response then return self.npending > 0 end
  return self.tail >= self.head
end

-- The dispatcher of connection s: runs while replies are expected, then ends (an idle
-- channel has no coroutine). Readers run under pcall but never yield (Lua 5.1 safe).
local function dispatch(self, s)
  local drain = self.response and drain_session or drain_order
  local id = s.id
  while self.sock == s do
    local ok, r = pcall(drain, self, s)
    -- Idle: linger; if requests came meanwhile, drain again (bytes for them may be in
    -- the buffer already).
    while ok and r == IDLE and linger(self, s) do
      ok, r = pcall(drain, self, s)
    end
    local want = 0
    if ok then
      if r == IDLE then break end
    elseif r == NEED then
      s.pos = s.start
      if s.need then want = s.need - s.pos + 1 end
    else
      drop(self, s, "protocol error from " .. self.name .. ": " .. tostring(r), true)
      return
    end
    s.need = nil
    -- Wait for more bytes: at least one, or `want` from the start of the reply.
    local buf, pos = s.buf, s.pos
    local have = #buf - pos + 1
    local data = sread(id)
    if self.sock ~= s then return end
    if not data then
      drop(self, s, "connection to " .. self.name .. " lost")
      return
    end
    if have == 0 then
      buf = data
    else
      local parts, n = { sub(buf, pos), data }, 2
      have = have + #data
      while have < want do
        data = sread(id)
        if self.sock ~= s then return end
        if not data then
          drop(self, s, "connection to " .. self.name .. " lost")
          return
        end
        n = n + 1
        parts[n] = data
        have = have + #data
      end
      buf = concat(parts)
    end
    s.buf, s.pos, s.start = buf, 1, 1
  end
  s.dispatching = false
end

-- Open a TCP/Unix connection bounded by `ms` (nil: no bound). Returns id or nil, err.
-- The client context for opts.tls: the context itself, or for `true` one shared
-- context that verifies the server against the system CA store.
local system_tls
local function tls_client(tls)
  if tls ~= true then return tls end
  if not system_tls then
    local ctx, err = raw.tls_context {}
    if not ctx then return nil, "tls: " .. tostring(err) end
    system_tls = ctx
  end
  return system_tls
end

-- ctx: a TLS client context: the socket opens once the handshake is done.
local function timed_open(host, port, ms, self, ctx)
  local id, err
  if ctx then
    id, err = raw.tls_connect(host, port, ctx)
  else
    id, err = raw.connect(host, port)
  end
  if not id then return nil, err end
  local co = running()
  local result, why
  local function settle(r, w)
    if result == nil then
      result, why = r, w
      wakeup(co)
    end
  end
  raw.start(id, {
    open = function() settle(true) end,
    error = function(_, msg) settle(false, msg) end,
    close = function() settle(false, "connection closed") end,
  })
  raw.buffered(id) -- bytes sent at once by the server wait in the buffer
  local k, t
  if ms then k, t = timer(ms, function() settle(false, "timeout") end, true) end
  if self then self.abort_open = function() settle(false, "channel closed") end end
  if park(co) then yield() end
  if self then self.abort_open = nil end
  if k then untimer(k, t) end
  if not result then
    raw.close(id, true)
    raw.unbuffer(id)
    return nil, why
  end
  socket.start(id) -- hand the socket to skysocket.socket (buffered mode kept)
  return id
end

local function cooled(self)
  self.cooling = false
  local c = self.cooler
  self.cooler = nil
  if c then wakeup(c) end
end

-- Connect, then run the auth hook. Returns true, or nil, err.
local function connect_once(self)
  local id, err
  if self.opener then
    id, err = self.opener(self.host, self.port, self.connect_timeout, self.tls)
  elseif self.tls then
    local ctx
    ctx, err = tls_client(self.tls)
    if ctx then id, err = timed_open(self.host, self.port, self.connect_timeout, self, ctx) end
  else
    id, err = timed_open(self.host, self.port, self.connect_timeout, self)
  end
  if not id then return nil, "connect to " .. self.name .. " failed: " .. tostring(err) end
  if self.closed then
    socket.close(id)
    return nil, "channel closed"
  end
  if self.nodelay then raw.nodelay(id) end
  local s = new_sock(id)
  s.ch = self
  self.sock = s
  if self.auth then
    local co = running()
    self.authco = co
    local r
    if pcall_yields then
      r = { pcall(self.auth, self) }
      if not r[1] then r = { false, r[2] } else table.remove(r, 1) end
    else
      r = { self.auth(self) } -- Lua 5.1: cannot be protected (see docs)
    end
    self.authco = nil
    if self.sock ~= s then
      return nil, "handshake with " .. self.name .. " failed: " .. tostring(r[2] or "connection lost")
    end
    if #r > 0 and not r[1] or (r[1] == nil and r[2] ~= nil) then
      drop(self, s, "handshake failed", true)
      return nil, "handshake with " .. self.name .. " failed: " .. tostring(r[2])
    end
  end
  self.ready = true
  return true
end

local function connector(self)
  while not self.closed do
    if self.cooling then
      self.cooler = running()
      if park(self.cooler) then yield() end
    end
    if self.closed then break end
    local ok, err = connect_once(self)
    if ok then
      self.fails = 0
      local w = self.waiters
      for i = self.whead, self.wtail do
        local co = w[i]
        w[i] = nil
        if co then wakeup(co, true) end
      end
      self.whead, self.wtail = 1, 0
      break
    end
    if self.closed then break end
    self.fails = self.fails + 1
    local delay = self.backoff_min * 2 ^ (self.fails - 1)
    if delay > self.backoff_max then delay = self.backoff_max end
    self.cooling = true
    timeout(math.floor(delay), function() cooled(self) end)
    fail_waiters(self, err)
    break
  end
  self.connecting = false
end

-- The timed wait shared by connect() and request(): returns what wakeup passed.
local function await(self, co, ms, slot, session)
  local k, t
  if ms then
    k, t = timer(ms, function()
      if slot then
        if slot < 0 then
          if self.waiters[-slot] == co then self.waiters[-slot] = false end
        elseif self.qco[slot] == co then
          self.qco[slot] = false
        end
      elseif session ~= nil and self.sessions[session] == co then
        self.sessions[session] = nil
        self.npending = self.npending - 1
      end
      wakeup(co, nil, "timeout")
    end, true)
  end
  park(co)
  local a, b = yield()
  if k then untimer(k, t) end
  if a == nil and b == nil and slot and slot > 0 then -- woken by drain_order's ready()
    a, b = self.qa[slot], self.qb[slot]
    self.qa[slot], self.qb[slot] = nil, nil
  end
  return a, b
end

-- Wait until the connection is ready (starting a connect if needed).
local function wait_ready(self, co, ms)
  local t = self.wtail + 1
  self.wtail = t
  self.waiters[t] = co
  if not self.connecting then
    self.connecting = true
    fork(connector, self)
  end
  return await(self, co, ms, -t)
end

-- ch:connect() -> true | nil, err: connect now (waits for the auth hook).
function Channel:connect(ms)
  if ms ~= nil and (type(ms) ~= "number" or ms < 0) then
    argerror(1, "connect", "number of milliseconds expected, got " .. type(ms))
  end
  if self.closed then return nil, "channel closed" end
  local co = running()
  if self.ready then
    if socket.disconnected(self.sock.id) == false then return true end
    drop(self, self.sock, "connection to " .. self.name .. " lost")
  end
  if not co or sched.self() ~= co then
    error("skysocket.channel: 'connect' must be called from a coroutine of skysocket.sched", 2)
  end
  return wait_ready(self, co, ms or self.connect_timeout)
end

-- ch:request(data, reader | session [, ms]) -> ok, value | nil, err
-- data: a string or an array of strings (sent as one write). In order mode `reader`
-- is nil for a request without a reply (returns true once written).
function Channel:request(data, reader, ms)
  local td = type(data)
  if td == "table" then
    data = concat(data)
  elseif td ~= "string" then
    argerror(1, "request", "string or table expected, got " .. td)
  end
  local session_mode = self.response ~= nil
  if session_mode then
    if reader == nil then argerror(2, "request", "session expected, got nil") end
  elseif reader ~= nil and type(reader) ~= "function" then
    argerror(2, "request", "function expected, got " .. type(reader))
  end
  if ms ~= nil and (type(ms) ~= "number" or ms < 0) then
    argerror(3, "request", "number of milliseconds expected, got " .. type(ms))
  end
  return self:_request(data, reader, ms, session_mode)
end

-- ch:_request(data, reader, ms, session_mode): request() without the argument checks
-- (data a string, reader a function or nil / a session), for protocol modules.
function Channel:_request(data, reader, ms, session_mode)
  if self.closed then return nil, "channel closed" end
  local co = running()
  if not co or sched.self() ~= co then
    error("skysocket.channel: 'request' must be called from a coroutine of skysocket.sched", 3)
  end
  local authing = self.authco == co
  ms = ms or (authing and self.connect_timeout) or self.timeout
  local s = self.sock
  -- Write. A connection found dead before the request was written is replaced (the
  -- request never left, so it is safe to send it on the new connection).
  for _ = 1, 3 do
    if not authing and not self.ready then
      local ok, err = wait_ready(self, co, ms)
      if not ok then return nil, err end
      if self.closed then return nil, "channel closed" end
      s = self.sock
    end
    if session_mode and self.sessions[reader] ~= nil then
      return nil, "session " .. tostring(reader) .. " is already in flight"
    end
    if s then
      -- The first request of a scheduler turn is written at once; the ones that follow
      -- in the same turn are gathered and written together when the turn ends (one
      -- write for many coroutines' requests).
      if s.flushing then
        local n = s.nw + 1
        s.nw = n
        s.wq[n] = data
        break
      end
      if send(s.id, data) then
        s.flushing = true
        ndirty = ndirty + 1
        dirty[ndirty] = s
        if not flusher then
          flusher = true
          timeout(0, flush_all)
        end
        break
      end
      drop(self, s, "connection to " .. self.name .. " lost")
    end
    if authing then return nil, "connection to " .. self.name .. " lost" end
    s = nil
  end
  if not s then return nil, "connection to " .. self.name .. " lost" end
  local slot
  if session_mode then
    self.sessions[reader] = co
    self.npending = self.npending + 1
  else
    if reader == nil then return true end
    slot = self.tail + 1
    self.tail = slot
    self.qco[slot], self.qrd[slot] = co, reader
  end
  -- (A dispatcher that sched.run forgot, after sched.exit(), is replaced: run() clears
  -- its table of coroutines.)
  if not s.dispatching or threads[s.dispatching] == nil then
    s.dispatching = fork(dispatch, self, s)
  end
  return await(self, co, ms, slot, session_mode and reader or nil)
end

-- ch:close(): fail every waiter with "channel closed" and close the connection. The
-- channel cannot be used afterwards (requests return nil, "channel closed").
function Channel:close()
  if self.closed then return end
  self.closed = true
  fail_waiters(self, "channel closed")
  local s = self.sock
  if s then
    local busy = (self.tail >= self.head) or self.npending > 0
    drop(self, s, "channel closed", busy)
  end
  if self.cooler then cooled(self) end
  if self.abort_open then self.abort_open() end
end

-- ch:pending() -> number of requests waiting for a reply.
function Channel:pending()
  return (self.tail - self.head + 1) + self.npending
end

-- ch:connected() -> true while a connection is up and authenticated.
function Channel:connected()
  return self.ready and self.sock ~= nil and socket.disconnected(self.sock.id) == false
end

-- open(host, port [, ms]) -> id | nil, err: skysocket.socket's open with a timeout
-- (used by the channel; exported for protocol modules that need a plain connection).
function M.open(host, port, ms)
  local co = running()
  if not co or sched.self() ~= co then
    error("skysocket.channel: 'open' must be called from a coroutine of skysocket.sched", 2)
  end
  return timed_open(host, port, ms)
end

-- tls_open(host, port, ms, tls) -> id | nil, err: open with a TLS handshake (tls: true or
-- a client context); the id carries plaintext on skysocket.socket.
function M.tls_open(host, port, ms, tls)
  local co = running()
  if not co or sched.self() ~= co then
    error("skysocket.channel: 'tls_open' must be called from a coroutine of skysocket.sched", 2)
  end
  local ctx, err = tls_client(tls)
  if not ctx then return nil, err end
  return timed_open(host, port, ms, nil, ctx)
end

M.Channel = Channel
M.Sock = Sock
return M
