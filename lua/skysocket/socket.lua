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
-- Per-socket state lives in parallel tables keyed by id, so that an idle connection
-- costs two hash entries here and no table of its own (a coroutine server holds one
-- per client):
local state = {}   -- id -> connected (true/false; UDP true, listeners false); nil: the
                   --       id is not a socket of this module
local reader = {}  -- id -> the coroutine waiting in a read of the socket, else false
local rare = {}    -- id -> the fields few sockets use, in a table made when one is set:
                   --   TCP: connecting, closer, err, timeout, limit, paused, on_warning;
                   --   listeners: listen, accept, held; UDP: protocol, callback, held
local NONE = {}    -- stands for a missing rare table when reading (never written)
local onclose = {}   -- id -> callback
local DEFAULT_LIMIT = 128 * 1024
local default_timeout

M.run, M.fork, M.sleep, M.exit = sched.run, sched.fork, sched.sleep, sched.exit
M.sched = sched
local wait, ready, self, park = sched.wait, sched.ready, sched.self, sched.park
local yield, running = coroutine.yield, coroutine.running
local readsome = raw.readsome

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

local function forget(id)
  state[id], reader[id], rare[id] = nil, nil, nil
end

local function wake(id)
  local co = reader[id]
  if co then ready(co) end
  local x = rare[id]
  if x and x.closer then ready(x.closer) end
end

-- The socket's connection state changed (opened, closed, failed): record it, end a
-- pending open, and wake whoever waits on the socket.
local function settle(id, connected)
  state[id] = connected
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
  if state[id] ~= nil then settle(id, true) end
end

-- A TLS handshake finished (for tls_open it follows `open`).
function H.handshake(id)
  if state[id] == nil then return end
  local x = ext(id)
  x.tls = "done"
  wake(id)
end

function H.readable(id)
  local co = reader[id]
  if co then ready(co) end
end

function H.close(id)
  if state[id] ~= nil then
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
  if state[id] ~= nil then
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
  sched.fork(x.accept, id, addr)
end

function H.warning(id, kb)
  if state[id] == nil then return end
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
  state[id], reader[id], rare[id] = connected, false, nil
  if default_timeout then ext(id).timeout = default_timeout end
end

-- Argument checks in the style of luaL_argerror, raised at the caller's line.
local function argcheck(ok, n, fname, msg)
  if not ok then error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3) end
end

local function check(id)
  if state[id] == nil then error("socket " .. tostring(id) .. " is not open in skysocket.socket", 3) end
end

-- Wait for the socket's next event (data, close, open). Returns true; false, "timeout";
-- or nil if the socket was abandoned meanwhile (it is not ours any more: the caller
-- reports it closed, reading nothing).
local function suspend(id)
  if reader[id] then error("socket " .. id .. " already has a waiting reader", 3) end
  local co = self()
  if not co then error("skysocket.socket: waiting outside a sched coroutine", 3) end
  reader[id] = co
  local ok, err = wait((rare[id] or NONE).timeout)
  if reader[id] ~= co then return nil end
  reader[id] = false
  local x = rare[id]
  if x and x.closer then ready(x.closer) end
  if not ok then return false, err end
  return true
end

local function rest(id)
  return raw.readsome(id) or ""
end

---------------------------------------------------------------- TCP

-- Wait for a connect started by raw.connect/raw.tls_connect to open (or fail).
local function opened(id)
  new_socket(id, false)
  ext(id).connecting = true
  raw.start(id, H)
  raw.buffered(id, DEFAULT_LIMIT)
  local ok = suspend(id)
  if ok == nil then return nil, "connect failed" end
  if state[id] then return id end
  local why = (rare[id] or NONE).err
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

function M.listen(host, port, backlog)
  local id, ip, p = raw.listen(host, port, backlog)
  if not id then return nil, ip end
  state[id], rare[id] = false, { listen = true }
  return id, ip, p
end

-- start(listener, accept_cb): accept_cb(id, addr) runs in a new coroutine per client.
-- start(id): take an accepted (or abandoned, or paused) socket and read from it.
function M.start(id, func)
  local x = rare[id]
  if func or (x and x.listen) then
    if state[id] == nil then state[id], rare[id] = false, { listen = true } end
    x = ext(id)
    x.accept = func or x.accept
    local ok, err = raw.start(id, H)
    if not ok then forget(id); return nil, err end
    if x.accept and not x.held then x.held = true; sched.hold() end
    return id
  end
  if state[id] then
    if x and x.paused then
      x.paused = nil
      raw.resume(id)
    end
    return id
  end
  local ok, err = raw.start(id, H)
  if not ok then return nil, err end
  new_socket(id, true)
  raw.buffered(id, DEFAULT_LIMIT)
  raw.resume(id) -- an abandoned socket was paused
  return id
end

function M.read(id, n)
  local connected = state[id]
  if connected == nil then error("socket " .. tostring(id) .. " is not open in skysocket.socket", 2) end
  if n == nil then
    while true do
      local d = readsome(id)
      if d then return d end
      if not connected then return false, "" end
      -- suspend(id) inlined, and without a timeout the yield is done right here
      -- (sched.park): an idle connection's coroutine waits in this frame. A coroutine
      -- keeps the CallInfos (and Lua stack) of its deepest call chain, so nothing
      -- here goes more than one call below read.
      if reader[id] then error("socket " .. id .. " already has a waiting reader", 2) end
      local x = rare[id]
      local timeout, co = x and x.timeout, running()
      if timeout then co = self() elseif not park(co) then co = nil end
      if not co then error("skysocket.socket: waiting outside a sched coroutine", 2) end
      reader[id] = co
      local ok, err = true, nil
      if timeout then ok, err = wait(timeout) else yield() end
      if reader[id] ~= co then return false, "" end -- abandoned meanwhile
      reader[id] = false
      x = rare[id]
      if x and x.closer then ready(x.closer) end
      if not ok then return nil, err end
      connected = state[id]
    end
  end
  local d = raw.readn(id, n)
  if d then return d end
  local limit = (rare[id] or NONE).limit or DEFAULT_LIMIT
  if limit > 0 and n > limit then raw.buffered(id, n) end
  while true do
    if not state[id] then
      d = rest(id)
      break
    end
    local ok, err = suspend(id)
    if ok == nil then
      d = ""
      break
    end
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
  check(id)
  while true do
    local line = raw.readline(id, sep)
    if line then return line end
    if not state[id] then return false, rest(id) end
    local unread = raw.unread(id) or 0
    local limit = (rare[id] or NONE).limit or DEFAULT_LIMIT
    if limit > 0 and unread >= limit then return nil, "line too long" end
    local ok, err = suspend(id)
    if ok == nil then return false, "" end
    if not ok then return nil, err end
  end
end

function M.readall(id)
  check(id)
  if state[id] then
    raw.buffered(id, 0) -- no pause: we wait for the end of the stream
    while state[id] do
      local ok, err = suspend(id)
      if ok == nil then return "" end
      if not ok then
        raw.buffered(id, (rare[id] or NONE).limit or DEFAULT_LIMIT)
        return nil, err
      end
    end
  end
  return rest(id)
end

-- block(id): wait until something can be read (or the socket closes). Returns true if
-- data is buffered or the socket is still open, false otherwise.
function M.block(id)
  if state[id] == nil then return false end
  if (raw.unread(id) or 0) > 0 then return true end
  if not state[id] then return false end
  local ok, err = suspend(id)
  if ok == nil then return false end
  if not ok then return nil, err end
  return state[id] or (raw.unread(id) or 0) > 0
end

M.write = raw.send
M.lwrite = raw.lwrite
M.close_write = raw.close_write
M.keepopen = raw.keepopen
M.nodelay = raw.nodelay

-- close(id): flush and close; waits for the close and for a reader of this socket to
-- finish (bounded by settimeout: then the socket is closed by force).
function M.close(id)
  local connected = state[id]
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
      x.closer = me
      while state[id] or x.connecting or reader[id] do
        local ok = sched.wait(x.timeout)
        if not ok then
          raw.close(id, true)
          break
        end
      end
      x.closer = nil
    end
  else
    raw.close(id) -- the peer closed first: release a socket kept open by keepopen
  end
  forget(id)
  raw.unbuffer(id)
end

-- shutdown(id): forced close (drops unsent data); the reader sees the close.
function M.shutdown(id)
  if state[id] ~= nil then raw.shutdown(id) end
end

function M.pause(id)
  if state[id] == nil then return end
  ext(id).paused = true
  raw.pause(id)
end

-- abandon(id): forget the socket here without closing it (reading is paused and
-- unread bytes are dropped); start(id) takes it back. A reader waiting on it returns
-- as on a close, having read nothing.
function M.abandon(id)
  if state[id] == nil then return end
  local co, x = reader[id], rare[id]
  forget(id)
  onclose[id] = nil
  if co then ready(co) end
  if x and x.closer then ready(x.closer) end
  raw.pause(id)
  raw.unbuffer(id)
end

function M.limit(id, bytes)
  check(id)
  ext(id).limit = bytes
  raw.buffered(id, bytes)
end

function M.settimeout(id, ms)
  check(id)
  ext(id).timeout = ms
end

function M.default_timeout(ms)
  default_timeout = ms
end

function M.invalid(id)
  return state[id] == nil
end

function M.disconnected(id)
  local connected = state[id]
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
  while true do
    local f = raw.readframe(id)
    if f then return f end
    if not state[id] then return false, (rare[id] or NONE).err or "closed" end
    local ok, err = suspend(id)
    if ok == nil then return false, "closed" end
    if not ok then return nil, err end
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
  if timeout then x.timeout = timeout end
  local ok, err = true, nil
  while x.tls ~= "done" and state[id] do
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

-- tls_listen(host, port, ctx [, backlog]): as listen; accepted sockets handshake once
-- started (call handshake(id) in the accept coroutine to wait for it).
function M.tls_listen(host, port, ctx, backlog)
  local id, ip, p = raw.tls_listen(host, port, ctx, backlog)
  if not id then return nil, ip end
  state[id], rare[id] = false, { listen = true }
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
  if not state[id] then return nil, "socket is closed" end
  raw.readsome(id) -- drop unprotected bytes read before the upgrade
  local ok, err = raw.tls_upgrade(id, ctx, server_name)
  if not ok then return nil, err end
  ext(id).tls = "handshaking"
  return handshaken(id, "starttls", timeout)
end

local function udp_object(id, cb)
  state[id], reader[id] = true, nil
  rare[id] = { protocol = "UDP", callback = cb, held = cb ~= nil }
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
  if state[id] ~= nil then
    local x = ext(id)
    if callback and not x.held then x.held = true; sched.hold() end
    if callback then x.callback = callback end
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
