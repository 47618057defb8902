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
--   * settimeout(id, ms) bounds every wait on that socket: the read returns
--     nil, "timeout" (nothing is consumed); default_timeout(ms) applies to open and
--     new sockets. Without a timeout a wait lasts until data or close, as in Skynet.
--   * readline returns nil, "line too long" when limit(id) bytes hold no separator.
--   * limit(id, bytes) sets the read-buffer pause threshold (back-pressure) instead
--     of closing the socket on overflow; read(id, n) / readall lift it as needed.
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
-- id -> socket record. A TCP record starts as { connected = ..., co = false } (two
-- hash slots: an idle server holds one per connection); co is the coroutine waiting
-- in a read (false when none), and the rare fields (limit when not the default,
-- timeout, closer, err, paused, ...) are added only when used.
local pool = {}
local onclose = {}   -- id -> callback
local DEFAULT_LIMIT = 128 * 1024
local default_timeout

M.run, M.fork, M.sleep, M.exit = sched.run, sched.fork, sched.sleep, sched.exit
M.sched = sched
local wait, wakeup, self, park = sched.wait, sched.wakeup, sched.self, sched.park
local yield, running = coroutine.yield, coroutine.running
local readsome = raw.readsome

local function warn(fmt, ...)
  io.stderr:write("skysocket.socket: ", string.format(fmt, ...), "\n")
end

local function wake(s)
  if s.co then wakeup(s.co) end
  if s.closer then wakeup(s.closer) end
end

local function finished(id)
  local cb = onclose[id]
  onclose[id] = nil
  if cb then cb(id) end
end

-- The handler every socket of this module is started with.
local H = {}

function H.open(id)
  local s = pool[id]
  if s then
    s.connected, s.connecting = true, nil
    wake(s)
  end
end

function H.readable(id)
  local s = pool[id]
  if s and s.co then wakeup(s.co) end
end

function H.close(id)
  local s = pool[id]
  if s then
    s.connected, s.connecting = false, nil
    wake(s)
  else
    raw.unbuffer(id)
  end
  finished(id)
end

function H.error(id, msg)
  local s = pool[id]
  if s and (s.listen or s.protocol == "UDP") then
    warn("error on %s %d: %s", s.listen and "listener" or "udp socket", id, msg)
    return -- these errors do not close the socket
  end
  if s then
    s.err = msg
    s.connected, s.connecting = false, nil
    wake(s)
  else
    raw.unbuffer(id)
  end
  finished(id)
end

function H.accept(lid, id, addr)
  local s = pool[lid]
  if not s or not s.accept then
    raw.close(id, true)
    return
  end
  sched.fork(s.accept, id, addr)
end

function H.warning(id, kb)
  local s = pool[id]
  if s and s.on_warning then
    s.on_warning(id, kb)
  elseif s and kb > 0 then
    warn("WARNING: %d K bytes need to send out (id = %d)", kb, id)
  end
end

function H.udp(id, data, from)
  local s = pool[id]
  if s and s.callback then s.callback(data, from) end
end

local function new_socket(id, connected)
  local s = { connected = connected, co = false }
  if default_timeout then s.timeout = default_timeout end
  pool[id] = s
  return s
end

-- Argument checks in the style of luaL_argerror, raised at the caller's line.
local function argcheck(ok, n, fname, msg)
  if not ok then error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3) end
end

local function check(id)
  local s = pool[id]
  if not s then error("socket " .. tostring(id) .. " is not open in skysocket.socket", 3) end
  return s
end

-- Wait for the socket's next event (data, close, open). Returns true, or false, "timeout".
-- Kept shallow (it calls sched.wait, which yields): see sched.wait.
local function suspend(id, s)
  if s.co then error("socket " .. id .. " already has a waiting reader", 3) end
  local co = self()
  if not co then error("skysocket.socket: waiting outside a sched coroutine", 3) end
  s.co = co
  local ok, err = wait(s.timeout)
  s.co = false
  local closer = s.closer
  if closer then wakeup(closer) end
  if not ok then return false, err end
  return true
end

local function rest(id)
  return raw.readsome(id) or ""
end

---------------------------------------------------------------- TCP

function M.open(host, port)
  local id, err = raw.connect(host, port)
  if not id then return nil, err end
  local s = new_socket(id, false)
  s.connecting = true
  raw.start(id, H)
  raw.buffered(id, DEFAULT_LIMIT)
  local ok = suspend(id, s)
  if s.connected then return id end
  pool[id] = nil
  raw.unbuffer(id)
  if not ok then
    raw.close(id, true)
    return nil, "timeout"
  end
  return nil, s.err or "connect failed"
end

function M.listen(host, port, backlog)
  local id, ip, p = raw.listen(host, port, backlog)
  if not id then return nil, ip end
  pool[id] = { id = id, listen = true, connected = false }
  return id, ip, p
end

-- start(listener, accept_cb): accept_cb(id, addr) runs in a new coroutine per client.
-- start(id): take an accepted (or abandoned, or paused) socket and read from it.
function M.start(id, func)
  local s = pool[id]
  if func or (s and s.listen) then
    s = s or { id = id, listen = true, connected = false }
    pool[id] = s
    s.accept = func or s.accept
    local ok, err = raw.start(id, H)
    if not ok then pool[id] = nil; return nil, err end
    if s.accept and not s.held then s.held = true; sched.hold() end
    return id
  end
  if s and s.connected then
    if s.paused then
      s.paused = nil
      raw.resume(id)
    end
    return id
  end
  local ok, err = raw.start(id, H)
  if not ok then return nil, err end
  s = new_socket(id, true)
  raw.buffered(id, DEFAULT_LIMIT)
  raw.resume(id) -- an abandoned socket was paused
  return id
end

function M.read(id, n)
  local s = check(id)
  if n == nil then
    while true do
      local d = readsome(id)
      if d then return d end
      if not s.connected then return false, "" end
      -- suspend(id, s) inlined, and without a timeout the yield is done right here
      -- (sched.park): an idle connection's coroutine waits in this frame. A coroutine
      -- keeps the CallInfos (and Lua stack) of its deepest call chain, so nothing
      -- here goes more than one call below read.
      if s.co then error("socket " .. id .. " already has a waiting reader", 2) end
      local timeout, co = s.timeout, running()
      if timeout then co = self() elseif not park(co) then co = nil end
      if not co then error("skysocket.socket: waiting outside a sched coroutine", 2) end
      s.co = co
      local ok, err = true, nil
      if timeout then ok, err = wait(timeout) else yield() end
      s.co = false
      local closer = s.closer
      if closer then wakeup(closer) end
      if not ok then return nil, err end
    end
  end
  local d = raw.readn(id, n)
  if d then return d end
  local limit = s.limit or DEFAULT_LIMIT
  if limit > 0 and n > limit then raw.buffered(id, n) end
  while true do
    if not s.connected then
      d = rest(id)
      break
    end
    local ok, err = suspend(id, s)
    if not ok then
      raw.buffered(id, limit)
      return nil, err
    end
    d = raw.readn(id, n)
    if d then
      raw.buffered(id, limit)
      return d
    end
  end
  return false, d
end

function M.readline(id, sep)
  sep = sep or "\n"
  local s = check(id)
  while true do
    local line = raw.readline(id, sep)
    if line then return line end
    if not s.connected then return false, rest(id) end
    local unread = raw.unread(id) or 0
    local limit = s.limit or DEFAULT_LIMIT
    if limit > 0 and unread >= limit then return nil, "line too long" end
    local ok, err = suspend(id, s)
    if not ok then return nil, err end
  end
end

function M.readall(id)
  local s = check(id)
  if s.connected then
    raw.buffered(id, 0) -- no pause: we wait for the end of the stream
    while s.connected do
      local ok, err = suspend(id, s)
      if not ok then
        raw.buffered(id, s.limit or DEFAULT_LIMIT)
        return nil, err
      end
    end
  end
  return rest(id)
end

-- block(id): wait until something can be read (or the socket closes). Returns true if
-- data is buffered or the socket is still open, false otherwise.
function M.block(id)
  local s = pool[id]
  if not s then return false end
  if (raw.unread(id) or 0) > 0 then return true end
  if not s.connected then return false end
  local ok, err = suspend(id, s)
  if not ok then return nil, err end
  return s.connected or (raw.unread(id) or 0) > 0
end

M.write = raw.send
M.lwrite = raw.lwrite
M.close_write = raw.close_write
M.keepopen = raw.keepopen
M.nodelay = raw.nodelay

-- close(id): flush and close; waits for the close and for a reader of this socket to
-- finish (bounded by settimeout: then the socket is closed by force).
function M.close(id)
  local s = pool[id]
  if not s then return end
  if s.listen or s.protocol == "UDP" then
    raw.close(id, true)
    if s.held then sched.release() end
    pool[id] = nil
    finished(id)
    return
  end
  if s.connected or s.connecting then
    raw.close(id)
    local me = sched.self()
    if me then
      s.closer = me
      while s.connected or s.connecting or s.co do
        local ok = sched.wait(s.timeout)
        if not ok then
          raw.close(id, true)
          break
        end
      end
      s.closer = nil
    end
  else
    raw.close(id) -- the peer closed first: release a socket kept open by keepopen
  end
  s.connected = false
  raw.unbuffer(id)
  pool[id] = nil
end

-- shutdown(id): forced close (drops unsent data); the reader sees the close.
function M.shutdown(id)
  local s = pool[id]
  if s then raw.shutdown(id) end
end

function M.pause(id)
  local s = pool[id]
  if not s then return end
  s.paused = true
  raw.pause(id)
end

-- abandon(id): forget the socket here without closing it (reading is paused and
-- unread bytes are dropped); start(id) takes it back.
function M.abandon(id)
  local s = pool[id]
  if not s then return end
  s.connected = false
  wake(s)
  pool[id], onclose[id] = nil, nil
  raw.pause(id)
  raw.unbuffer(id)
end

function M.limit(id, bytes)
  local s = check(id)
  s.limit = bytes
  raw.buffered(id, bytes)
end

function M.settimeout(id, ms)
  check(id).timeout = ms
end

function M.default_timeout(ms)
  default_timeout = ms
end

function M.invalid(id)
  return pool[id] == nil
end

function M.disconnected(id)
  local s = pool[id]
  if s then return not (s.connected or s.connecting) end
end

function M.warning(id, cb)
  check(id).on_warning = cb
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
  local s = check(id)
  while true do
    local f = raw.readframe(id)
    if f then return f end
    if not s.connected then return false, s.err or "closed" end
    local ok, err = suspend(id, s)
    if not ok then return nil, err end
  end
end

M.sendframe = raw.sendframe
M.pack = raw.pack

---------------------------------------------------------------- UDP

local function udp_object(id, cb)
  pool[id] = { id = id, connected = true, protocol = "UDP", callback = cb, held = cb ~= nil }
  if cb then sched.hold() end
  raw.start(id, H)
  return id
end

-- udp(callback [, host, port]): callback(data, from) for each datagram.
function M.udp(callback, host, port)
  local id, err
  if host then id, err = raw.udp(host, port) else id, err = raw.udp() end
  if not id then return nil, err end
  return udp_object(id, callback)
end

function M.udp_connect(id, host, port, callback)
  local s = pool[id]
  if s then
    if callback and not s.held then s.held = true; sched.hold() end
    if callback then s.callback = callback end
  else
    udp_object(id, callback)
  end
  return raw.udp_connect(id, host, port)
end

function M.udp_listen(host, port, callback)
  local id, err = raw.udp_listen(host, port)
  if not id then return nil, err end
  return udp_object(id, callback)
end

function M.udp_dial(host, port, callback)
  local id, err = raw.udp_dial(host, port)
  if not id then return nil, err end
  return udp_object(id, callback)
end

M.sendto = raw.sendto
M.udp_address = raw.udp_address
M.netstat = raw.info
M.resolve = raw.resolve

return M
