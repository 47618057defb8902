-- skysocket.websocket: RFC 6455 WebSocket server and client on the coroutine layer.
--
--   websocket.upgrade(req, res [, opts]) -> conn | nil, err   inside an http handler
--   websocket.accept(id [, opts])        -> conn, req | nil, err   standalone server
--   websocket.connect(url [, opts])      -> conn | nil, err   client (ws://)
--   conn:read()  -> message, "text"|"binary" | nil, err [, code, reason]
--   conn:send(data [, "text"|"binary" [, fragment_size]]), conn:ping([data]),
--   conn:close([code [, reason]])
--
-- Pings are answered inside read(); a protocol violation closes the connection with
-- the RFC's code (1002 protocol error, 1007 invalid UTF-8, 1009 message too big).
-- SHA-1, base64, the payload mask and UTF-8 validation run in Rust
-- (skysocket.sha1, base64encode, base64decode, randomkey, ws_mask, utf8_valid). See docs/API.md.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local http = require "skysocket.http"

local M = {}

local char, byte, sub, lower, format, floor = string.char, string.byte, string.sub, string.lower, string.format, math.floor
local concat, tonumber, type = table.concat, tonumber, type
local ws_mask, utf8_valid = raw.ws_mask, raw.utf8_valid

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
local DEFAULT_MAX = 16 * 1024 * 1024
local CLOSE_WAIT = 3000 -- ms to wait for the peer's close frame in close()

M.GUID = GUID

-- accept_key(key) -> the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
function M.accept_key(key)
  return raw.base64encode(raw.sha1(key .. GUID))
end

-- Mask keys and handshake nonces come from the OS random source (raw.randomkey gives
-- 8 bytes per call), as RFC 6455 §5.3 asks for unpredictable masks.
local random_pool = ""
local function random_bytes(n)
  while #random_pool < n do random_pool = random_pool .. raw.randomkey() end
  local out = sub(random_pool, 1, n)
  random_pool = sub(random_pool, n + 1)
  return out
end

local function valid_close_code(code)
  return (code >= 1000 and code <= 1003) or (code >= 1007 and code <= 1014)
    or (code >= 3000 and code <= 4999)
end

-- The frame bytes for one frame (header, mask key when masking, payload).
local function frame(opcode, payload, fin, mask)
  local n = #payload
  local b1 = (fin and 128 or 0) + opcode
  local m = mask and 128 or 0
  local hdr
  if n < 126 then
    hdr = char(b1, m + n)
  elseif n < 65536 then
    hdr = char(b1, m + 126, floor(n / 256), n % 256)
  else
    local t, x = {}, n
    for i = 8, 1, -1 do t[i] = x % 256; x = floor(x / 256) end
    hdr = char(b1, m + 127) .. char((table.unpack or unpack)(t))
  end
  if mask then
    local key = random_bytes(4)
    return hdr .. key, ws_mask(payload, key)
  end
  return hdr, payload
end

local Conn = {}
Conn.__index = Conn

local function new_conn(id, is_server, opts)
  opts = opts or {}
  socket.limit(id, 128 * 1024)
  socket.settimeout(id, opts.timeout)
  return setmetatable({
    id = id, server = is_server, max_message = opts.max_message or DEFAULT_MAX,
    on_pong = opts.on_pong, state = "open",
  }, Conn)
end

local function send_frame(c, opcode, payload, fin)
  local hdr, body = frame(opcode, payload, fin, not c.server)
  if #body > 4096 then
    local ok, err = socket.write(c.id, hdr)
    if not ok then return false, err end
    return socket.write(c.id, body)
  end
  return socket.write(c.id, hdr .. body)
end

local function close_payload(code, reason)
  if not code then return "" end
  return char(floor(code / 256), code % 256) .. (reason or "")
end

-- The connection is over: release the socket (the server closes TCP first, RFC 6455
-- 7.1.1; a client closes after the server or when giving up).
local function finish(c, code, reason)
  if c.state ~= "closed" then
    c.state = "closed"
    c.close_code = c.close_code or code
    c.close_reason = c.close_reason or reason
    socket.close(c.id)
  end
end

-- Fail the connection (RFC 6455 7.1.7): send a close frame with `code`, close.
local function fail(c, code, why)
  if not c.close_sent and c.state == "open" then
    c.close_sent = true
    send_frame(c, 8, close_payload(code), true)
  end
  c.close_code = code
  c.close_reason = why
  finish(c, code, why)
  return nil, why, code
end

-- Read exactly n bytes: data | nil, err (mid-frame: the connection is failed).
local function readn(c, n, first)
  local d, rest = socket.read(c.id, n)
  if d then return d end
  if d == nil and first then return nil, rest end -- timeout before a frame: retryable
  if d == nil then return fail(c, 1002, "timeout in the middle of a frame") end
  c.close_code = c.close_code or 1006
  finish(c, 1006, "connection closed")
  return nil, "closed", 1006
end

-- Read one frame: fin, opcode, payload | nil, err, code.
local function read_frame(c, size_so_far)
  local h, err, code = readn(c, 2, true)
  if not h then return nil, err, code end
  local b1, b2 = byte(h, 1, 2)
  local fin = b1 >= 128
  local rsv = floor(b1 / 16) % 8
  local op = b1 % 16
  local masked = b2 >= 128
  local len = b2 % 128
  if rsv ~= 0 then return fail(c, 1002, "reserved bits set") end
  if op >= 3 and op <= 7 or op >= 11 then return fail(c, 1002, "unknown opcode " .. op) end
  if op >= 8 and (not fin or len > 125) then return fail(c, 1002, "bad control frame") end
  if c.server and not masked then return fail(c, 1002, "unmasked client frame") end
  if not c.server and masked then return fail(c, 1002, "masked server frame") end
  if len == 126 then
    local x
    x, err, code = readn(c, 2)
    if not x then return nil, err, code end
    local a, b = byte(x, 1, 2)
    len = a * 256 + b
  elseif len == 127 then
    local x
    x, err, code = readn(c, 8)
    if not x then return nil, err, code end
    if byte(x, 1) >= 128 then return fail(c, 1002, "bad frame length") end
    len = 0
    for i = 1, 8 do len = len * 256 + byte(x, i) end
  end
  if op < 8 and size_so_far + len > c.max_message then
    return fail(c, 1009, "message too big")
  end
  local key
  if masked then
    key, err, code = readn(c, 4)
    if not key then return nil, err, code end
  end
  local payload = ""
  if len > 0 then
    payload, err, code = readn(c, len)
    if not payload then return nil, err, code end
    if key then payload = ws_mask(payload, key) end
  end
  return fin, op, payload
end

-- conn:read() -> message, "text" | "binary"; or nil, err [, code, reason] once the
-- connection is closed (err "closed": by the peer with `code`), or nil, "timeout"
-- (the connection stays usable).
function Conn:read()
  if self.state == "closed" then return nil, "closed", self.close_code, self.close_reason end
  if self._reading then error("websocket: another coroutine is reading this connection", 2) end
  self._reading = true
  local parts, kind, size = nil, nil, 0
  local r1, r2, r3, r4
  while true do
    local fin, op, payload = read_frame(self, size)
    if fin == nil then
      r1, r2, r3 = nil, op, payload
      break
    end
    if op == 8 then
      local code, reason
      if #payload == 1 then
        r1, r2, r3 = fail(self, 1002, "bad close frame")
        break
      elseif #payload >= 2 then
        code = byte(payload, 1) * 256 + byte(payload, 2)
        reason = sub(payload, 3)
        if not valid_close_code(code) then
          r1, r2, r3 = fail(self, 1002, "invalid close code " .. code)
          break
        end
        if not utf8_valid(reason) then
          r1, r2, r3 = fail(self, 1007, "invalid UTF-8 in close reason")
          break
        end
      end
      self.close_code, self.close_reason = code or 1005, reason or ""
      if not self.close_sent then
        self.close_sent = true
        send_frame(self, 8, close_payload(code, reason), true)
      end
      finish(self)
      r1, r2, r3, r4 = nil, "closed", self.close_code, self.close_reason
      break
    elseif op == 9 then
      if not self.close_sent then send_frame(self, 10, payload, true) end
    elseif op == 10 then
      if self.on_pong then self.on_pong(payload) end
    elseif op == 0 then
      if not parts then
        r1, r2, r3 = fail(self, 1002, "continuation frame without a message")
        break
      end
      parts[#parts + 1] = payload
      size = size + #payload
      if fin then
        r1, r2 = concat(parts), kind
        break
      end
    else
      if parts then
        r1, r2, r3 = fail(self, 1002, "new message inside a fragmented one")
        break
      end
      kind = op == 1 and "text" or "binary"
      if fin then
        r1, r2 = payload, kind
        break
      end
      parts, size = { payload }, #payload
    end
  end
  self._reading = false
  if r1 and r2 == "text" and not utf8_valid(r1) then
    return fail(self, 1007, "invalid UTF-8 in text message")
  end
  return r1, r2, r3, r4
end

-- conn:send(data [, kind [, fragment]]): kind "text" (default) or "binary"; with
-- `fragment`, the message goes in frames of at most that many bytes.
function Conn:send(data, kind, fragment)
  if type(data) ~= "string" then
    error(format("bad argument #1 to 'send' (string expected, got %s)", type(data)), 2)
  end
  if kind ~= nil and kind ~= "text" and kind ~= "binary" then
    error("bad argument #2 to 'send' ('text' or 'binary' expected)", 2)
  end
  if self.state ~= "open" or self.close_sent then return false, "closed" end
  local op = kind == "binary" and 2 or 1
  if not fragment or fragment >= #data then return send_frame(self, op, data, true) end
  if fragment < 1 then error("bad argument #3 to 'send' (fragment size must be positive)", 2) end
  local pos, n = 1, #data
  while pos <= n do
    local last = pos + fragment > n
    local ok, err = send_frame(self, op, sub(data, pos, pos + fragment - 1), last)
    if not ok then return false, err end
    op, pos = 0, pos + fragment
  end
  return true
end

-- conn:ping([data]) -> true | false, err. The pong goes to opts.on_pong in read().
function Conn:ping(data)
  data = data or ""
  if #data > 125 then error("bad argument #1 to 'ping' (at most 125 bytes)", 2) end
  if self.state ~= "open" or self.close_sent then return false, "closed" end
  return send_frame(self, 9, data, true)
end

-- conn:close([code [, reason]]): the close handshake. Sends a close frame; when no
-- other coroutine is reading, waits (at most 3 s) for the peer's and releases the
-- socket; else the reader finishes the handshake.
function Conn:close(code, reason)
  if code ~= nil and (type(code) ~= "number" or not valid_close_code(code)) then
    error("bad argument #1 to 'close' (valid close code expected)", 2)
  end
  reason = reason or ""
  if #reason > 123 then error("bad argument #2 to 'close' (reason longer than 123 bytes)", 2) end
  if self.state == "closed" then return true end
  if not self.close_sent then
    self.close_sent = true
    send_frame(self, 8, close_payload(code or 1000, reason), true)
  end
  if self._reading then return true end
  socket.settimeout(self.id, CLOSE_WAIT)
  self._reading = true
  while self.state ~= "closed" do
    local fin, op, payload = read_frame(self, 0)
    if fin == nil then break end -- closed, failed or timed out
    if op == 8 then
      if #payload >= 2 then
        self.close_code = byte(payload, 1) * 256 + byte(payload, 2)
        self.close_reason = sub(payload, 3)
      else
        self.close_code = 1005
      end
      finish(self)
    end
  end
  self._reading = false
  finish(self, code or 1000, reason)
  return true
end

---------------------------------------------------------------- handshakes

-- Check an upgrade request's headers: key | nil, status, why.
local function check_request(method, version, h)
  if method ~= "GET" then return nil, 405, "WebSocket upgrade needs GET" end
  if version ~= "1.1" then return nil, 400, "WebSocket upgrade needs HTTP/1.1" end
  if not http.has_token(h.upgrade, "websocket") then return nil, 426, "not a WebSocket upgrade" end
  if not http.has_token(h.connection, "upgrade") then return nil, 400, "Connection: upgrade missing" end
  if h["sec-websocket-version"] ~= "13" then return nil, 426, "unsupported WebSocket version" end
  local key = h["sec-websocket-key"]
  local decoded = key and raw.base64decode(key)
  if not decoded or #decoded ~= 16 then return nil, 400, "bad Sec-WebSocket-Key" end
  return key
end

local function choose_protocol(h, opts)
  local offered = h["sec-websocket-protocol"]
  if not offered or not opts or not opts.protocols then return nil end
  for p in offered:gmatch("[^,%s]+") do
    for _, mine in ipairs(opts.protocols) do
      if p == mine then return p end
    end
  end
end

local function response_101(key, protocol)
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Accept: " .. M.accept_key(key) .. "\r\n" ..
    (protocol and ("Sec-WebSocket-Protocol: " .. protocol .. "\r\n") or "") .. "\r\n"
end

local function refuse(id, status, why)
  local reason = http.reasons[status] or "Bad Request"
  local extra = status == 426 and "Sec-WebSocket-Version: 13\r\n" or ""
  local body = why .. "\n"
  socket.write(id, format("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s",
    status, reason, #body, extra, body))
end

-- upgrade(req, res [, opts]) -> conn | nil, err. On failure the error response has
-- been sent (400/405/426) and the server closes the connection.
-- opts: protocols (array), max_message (bytes, default 16 MiB), timeout (ms per read
-- wait, default none), on_pong(fn).
function M.upgrade(req, res, opts)
  local key, status, why = check_request(req.method, req.version, req.headers)
  if not key then
    res.status = status
    res._close = true
    if status == 426 then res.headers["Sec-WebSocket-Version"] = "13" end
    res:finish(why .. "\n")
    return nil, why
  end
  local protocol = choose_protocol(req.headers, opts)
  local id = res:hijack()
  local ok, err = socket.write(id, response_101(key, protocol))
  if not ok then return nil, err end
  local c = new_conn(id, true, opts)
  c.protocol = protocol
  return c
end

-- accept(id [, opts]) -> conn, req | nil, err: a standalone WebSocket server on a
-- started connection: reads the upgrade request (at most 8 KiB, `opts.timeout` per
-- wait, default 10 s), answers it; on failure answers 400/426 and closes `id`.
function M.accept(id, opts)
  socket.limit(id, 8192)
  socket.settimeout(id, opts and opts.timeout or 10000)
  local head, err = http._read_head(id)
  if not head then
    if err == "too large" then socket.write(id, http._simple_response(431)) end
    socket.close(id)
    return nil, err
  end
  local e = head:find("\r\n", 1, true) or #head + 1
  local method, target, version = sub(head, 1, e - 1):match("^(%S+) (%S+) HTTP/(%d%.%d)$")
  local h, herr = nil, "bad request line"
  if method then h, herr = http.parse_headers(head, e + 2, 100) end
  if not h then
    refuse(id, 400, herr)
    socket.close(id)
    return nil, herr
  end
  local key, status, why = check_request(method, version, h)
  if not key then
    refuse(id, status, why)
    socket.close(id)
    return nil, why
  end
  local protocol = choose_protocol(h, opts)
  local ok, werr = socket.write(id, response_101(key, protocol))
  if not ok then socket.close(id); return nil, werr end
  local c = new_conn(id, true, opts)
  c.protocol = protocol
  local path, query = target:match("^([^?]*)%??(.*)$")
  return c, { method = method, target = target, path = path, query = query, version = version, headers = h }
end

-- Schemes: the http transport each uses (wss: TLS, verified by default; opts.tls and
-- opts.server_name as for http.request).
M.schemes = { ws = "http", wss = "https" }

-- connect(url [, opts]) -> conn | nil, err. opts: headers, protocols (array; the
-- chosen one is conn.protocol), timeout (ms for connect + handshake, default 10000;
-- reads afterwards wait as long as opts.read_timeout, default forever), max_message.
function M.connect(url, opts)
  if type(url) ~= "string" then
    error(format("bad argument #1 to 'connect' (string expected, got %s)", type(url)), 2)
  end
  opts = opts or {}
  local scheme, host, port, target = http.parse_url(url)
  if not scheme then return nil, host end
  local transport = M.schemes[scheme] and http.schemes[M.schemes[scheme]]
  if not transport then return nil, "unsupported URL scheme '" .. scheme .. "'" end
  port = port or transport.port
  local timeout = opts.timeout or 10000
  local id, err = transport.open(host, port, timeout, opts)
  if not id then return nil, err end
  local hostname = host:find(":", 1, true) and "[" .. host .. "]" or host
  if port ~= transport.port then hostname = hostname .. ":" .. port end
  local key = raw.base64encode(random_bytes(16))
  local out = {
    "GET " .. target .. " HTTP/1.1\r\n", "Host: " .. hostname .. "\r\n",
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
    "Sec-WebSocket-Key: " .. key .. "\r\n",
  }
  if opts.protocols then out[#out + 1] = "Sec-WebSocket-Protocol: " .. concat(opts.protocols, ", ") .. "\r\n" end
  for k, v in pairs(opts.headers or {}) do out[#out + 1] = k .. ": " .. v .. "\r\n" end
  out[#out + 1] = "\r\n"
  socket.settimeout(id, timeout)
  local ok
  ok, err = socket.write(id, concat(out))
  local head
  if ok then head, err = http._read_head(id) end
  if not head then
    socket.close(id)
    return nil, "handshake failed: " .. tostring(err)
  end
  local e = head:find("\r\n", 1, true) or #head + 1
  local status = sub(head, 1, e - 1):match("^HTTP/1%.1 (%d%d%d)")
  local h = http.parse_headers(head, e + 2, 100)
  local why
  if status ~= "101" then
    why = "server answered " .. tostring(status or "garbage")
  elseif not h or not http.has_token(h.upgrade, "websocket") or not http.has_token(h.connection, "upgrade") then
    why = "bad upgrade response"
  elseif h["sec-websocket-accept"] ~= M.accept_key(key) then
    why = "bad Sec-WebSocket-Accept"
  end
  if why then
    socket.close(id)
    return nil, "handshake failed: " .. why
  end
  local c = new_conn(id, false, { max_message = opts.max_message, timeout = opts.read_timeout, on_pong = opts.on_pong })
  c.protocol = h["sec-websocket-protocol"]
  return c
end

return M
