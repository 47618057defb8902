-- skysocket.http: HTTP/1.1 server and client on the coroutine layer (skysocket.socket).
--
-- Server:
--   http.listen(host, port, handler [, opts]) -> server | nil, err
--   http.serve(id, handler [, opts])           serve one started connection, here
--   handler(req, res) runs once per request, in the connection's coroutine; requests
--   of one connection (pipelined or not) are answered in order.
-- Client:
--   http.request(method, url [, opts]) -> res {status, reason, version, headers, body}
--   http.get(url [, opts]), http.post(url, body [, opts]), http.close_idle()
--
-- Parsing is done with Lua patterns over the whole head, which arrives as one string
-- from the Rust read buffer (readline with "\r\n\r\n"); see docs/API.md for why not
-- httparse. Everything here is documented in docs/API.md ("skysocket.http").
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local compat = require "skysocket.compat"

local M = {}

local find, sub, lower, format, byte = string.find, string.sub, string.lower, string.format, string.byte
local concat, tonumber, type, pairs, next = table.concat, tonumber, type, pairs, next
local readline, now = raw.readline, raw.now

local PUC51 = _VERSION == "Lua 5.1" and not jit
local CRLF2 = "\r\n\r\n"
local TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"
local BAD_VALUE = "[%z\1-\8\10-\31\127]"

M.reasons = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other", [304] = "Not Modified",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [411] = "Length Required",
  [413] = "Content Too Large", [414] = "URI Too Long", [417] = "Expectation Failed",
  [426] = "Upgrade Required", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [503] = "Service Unavailable",
  [505] = "HTTP Version Not Supported",
}

---------------------------------------------------------------- shared parsing

-- Wait until the socket's buffer holds a whole head ("\r\n\r\n"); returns it without
-- the blank line, or nil, "closed" | "truncated" | "timeout" | "too large" (the
-- socket's read limit, see socket.limit, bounds a head).
local function read_head(id)
  local head, err = socket.readline(id, CRLF2)
  if head then return head end
  if head == false then return nil, err ~= "" and "truncated" or "closed" end
  if err == "line too long" then return nil, "too large" end
  return nil, err
end

-- Parse header lines of `head` from `pos`: returns a table of lower-cased names (a
-- repeated header's values joined with ", ") or nil, why.
-- Request heads are parsed in Rust: raw.http_request_head's failures as statuses.
local parse_request = raw.http_request_head
local HEAD_STATUS = { ["bad request"] = 400, ["bad version"] = 505, ["too many headers"] = 431 }

local function parse_headers(head, pos, max_count)
  local headers, count, n = {}, 0, #head
  while pos <= n do
    local e = find(head, "\r\n", pos, true) or n + 1
    local c = find(head, ":", pos, true)
    if not c or c > e then return nil, "bad header line" end
    local name = sub(head, pos, c - 1)
    if (name == "" or find(name, "[^%w%-]")) and not find(name, TOKEN) then return nil, "bad header name" end
    -- the value without surrounding blanks (no pattern backtracking over the value)
    local vs = find(head, "[^ \t]", c + 1)
    local value = ""
    if vs and vs < e then
      local ve = e - 1
      local b = byte(head, ve)
      while b == 32 or b == 9 do ve = ve - 1; b = byte(head, ve) end
      value = sub(head, vs, ve)
      if find(value, "%c") and find(value, BAD_VALUE) then return nil, "bad header value" end
    end
    count = count + 1
    if count > max_count then return nil, "too many headers" end
    name = lower(name)
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
    pos = e + 2
  end
  return headers
end
M.parse_headers = parse_headers

-- Does a comma-separated header value contain `token` (case-insensitive)?
local function has_token(value, token)
  if not value then return false end
  for t in value:gmatch("[^,]+") do
    if lower(t:match("^%s*(.-)%s*$")) == token then return true end
  end
  return false
end
M.has_token = has_token

-- Body framing from headers: "chunked", a length, or nil (none / until close).
-- nil, nil, err for invalid framing.
local function body_framing(headers)
  local te = headers["transfer-encoding"]
  local cl = headers["content-length"]
  if te then
    if cl then return nil, nil, "both Transfer-Encoding and Content-Length" end
    if lower(te) ~= "chunked" then return nil, nil, "unsupported Transfer-Encoding" end
    return "chunked"
  end
  if cl then
    local first
    for item in cl:gmatch("[^,]+") do -- repeated identical values are allowed
      local v = item:match("^%s*(.-)%s*$")
      if not find(v, "^%d+$") or #v > 15 then return nil, nil, "bad Content-Length" end
      if first and first ~= v then return nil, nil, "conflicting Content-Length" end
      first = v
    end
    if not first then return nil, nil, "bad Content-Length" end
    return "length", tonumber(first)
  end
end

-- A body reader over socket `id`: returns a function read(max) -> piece | nil (end)
-- | false, err. mode "length" (n bytes), "chunked", or "close" (until EOF).
-- limit: most body bytes accepted (err "too large"). before(): called once before the
-- first wait for body bytes (100-continue).
local function body_reader(id, mode, n, limit, before)
  local done, total = false, 0
  local left = 0          -- bytes left in the current chunk (chunked)
  local function fail(err)
    done = true
    return false, err
  end
  local function need()
    if before then
      local b = before
      before = nil
      b()
    end
  end
  local function readn(k)
    if (raw.unread(id) or 0) < k then need() end
    local d, rest = socket.read(id, k)
    if d then return d end
    if d == nil then return nil, rest end -- timeout
    return nil, "closed"
  end
  local function line()
    local l = raw.readline(id, "\r\n")
    if l then return l end
    need()
    local err
    l, err = socket.readline(id, "\r\n")
    if l then return l end
    return nil, l == false and "closed" or err
  end
  if mode == "length" and n > limit then return function() return false, "too large" end end
  if mode == "length" then left = n end
  return function(max)
    if done then return nil end
    max = max or 65536
    if mode == "length" then
      if left == 0 then done = true; return nil end
      local k = left < max and left or max
      local avail = raw.unread(id) or 0
      if avail > 0 and avail < k then k = avail end
      local d, err = readn(k)
      if not d then return fail(err) end
      left = left - #d
      return d
    elseif mode == "close" then
      if (raw.unread(id) or 0) == 0 then
        need()
        if not socket.block(id) then done = true; return nil end
      end
      local d = raw.readsome(id, max)
      if not d then done = true; return nil end
      total = total + #d
      if total > limit then return fail("too large") end
      return d
    end
    -- chunked
    if left == 0 then
      local l, err = line()
      if not l then return fail(err) end
      local hex = l:match("^(%x+)[ \t]*;?") or l:match("^(%x+)$")
      if not hex or #hex > 12 then return fail("bad chunk size") end
      left = tonumber(hex, 16)
      if left == 0 then
        -- trailers, up to the blank line (bounded in number)
        for _ = 1, 64 do
          local t, e2 = line()
          if not t then return fail(e2) end
          if t == "" then done = true; return nil end
        end
        return fail("too many trailers")
      end
      total = total + left
      if total > limit then return fail("too large") end
    end
    local k = left < max and left or max
    local d, err = readn(k)
    if not d then return fail(err) end
    left = left - #d
    if left == 0 then
      local crlf, e3 = readn(2)
      if crlf ~= "\r\n" then return fail(e3 or "bad chunk end") end
    end
    return d
  end
end

local function read_all(reader, limit)
  local parts, size = {}, 0
  while true do
    local d, err = reader()
    if d == nil then return concat(parts) end
    if d == false then return nil, err end
    size = size + #d
    if size > limit then return nil, "too large" end
    parts[#parts + 1] = d
  end
end

local function chunk(data)
  return format("%x\r\n", #data) .. data .. "\r\n"
end

-- Append "Name: value\r\n" lines for a header table (a value may be an array).
local function header_lines(out, headers)
  for k, v in pairs(headers) do
    if type(v) == "table" then
      for i = 1, #v do out[#out + 1] = k .. ": " .. tostring(v[i]) .. "\r\n" end
    else
      out[#out + 1] = k .. ": " .. tostring(v) .. "\r\n"
    end
  end
end

---------------------------------------------------------------- server

local DEFAULTS = {
  max_header = 8192,        -- bytes of request line + headers (431 beyond)
  max_headers = 100,        -- header lines (431 beyond)
  max_body = 1024 * 1024,   -- request body bytes (413 beyond)
  header_timeout = 10000,   -- ms for a whole head to arrive, idle keep-alive included (408)
  read_timeout = 30000,     -- ms of each wait for body bytes
  max_requests = nil,       -- requests per connection (nil: unlimited)
}

local function options(opts)
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  if opts then
    for k, v in pairs(opts) do
      if DEFAULTS[k] == nil and k ~= "max_requests" and k ~= "tls" then
        error(format("bad argument to 'http': unknown option '%s'", tostring(k)), 3)
      end
      o[k] = v
    end
  end
  return o
end

local function simple_response(status, extra)
  local reason = M.reasons[status] or "Unknown"
  local body = reason .. "\n"
  return format("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s",
    status, reason, #body, extra or "", body)
end

local Req, Res = {}, {}
local function NO_BODY() return nil end
Req.__index, Res.__index = Req, Res

-- req:read([max]) -> next piece of the body, nil at its end, or false, err.
function Req:read(max)
  return self._reader(max)
end

-- req:body() -> the whole body (at most the server's max_body), or nil, err.
function Req:body()
  if self._body then return self._body end
  local b, err = read_all(self._reader, self._limit)
  if not b then
    if err == "too large" then self._res._error = 413 end
    return nil, err
  end
  self._body = b
  return b
end

-- Header names send_head must notice in a user's table, by lower-cased name.
local SPECIAL = { date = "date", ["content-length"] = "length", ["transfer-encoding"] = "te" }
-- Response header name -> its SPECIAL kind or false, so that a name is lower-cased
-- once, not per response (bounded: names past the bound are looked up each time).
local kind_cache, kind_count = {}, 0
local function name_kind(k)
  local kind = kind_cache[k]
  if kind == nil then
    kind = SPECIAL[lower(k)] or false
    if kind_count < 256 then
      kind_count = kind_count + 1
      kind_cache[k] = kind
    end
  end
  return kind
end

-- "HTTP/1.1 <status> <reason>\r\n" by status, with the reason it was made with
-- (M.reasons may be changed by the program).
local status_line, status_reason = {}, {}
-- "Content-Length: <n>\r\n" for small lengths, "Date: <date>\r\n".
local length_line, date_line, date_line_time = {}, "", -1
local scratch = {} -- send_head's lines (send_head never yields); entries past the
                   -- current response's are stale and never read

local function send_head(res, length, body)
  local req = res._req
  local st = res.status
  local reason = res.reason or M.reasons[st] or "Unknown"
  local out = scratch
  if status_reason[st] == reason then
    out[1] = status_line[st]
  else
    out[1] = "HTTP/1.1 " .. st .. " " .. reason .. "\r\n"
    if type(st) == "number" and st >= 100 and st <= 999 and st % 1 == 0 then
      status_line[st], status_reason[st] = out[1], reason
    end
  end
  local n = 1
  local seen_date, seen_length, seen_te
  for k, v in pairs(res.headers) do
    local special = name_kind(k)
    if special then
      if special == "date" then seen_date = true
      elseif special == "length" then seen_length = true
      else seen_te = true; if has_token(tostring(v), "chunked") then res._chunked = true end end
    end
    local tv = type(v)
    if tv == "string" then
      n = n + 1
      out[n] = k .. ": " .. v .. "\r\n"
    elseif tv == "table" then
      for i = 1, #v do n = n + 1; out[n] = k .. ": " .. tostring(v[i]) .. "\r\n" end
    else
      n = n + 1
      out[n] = k .. ": " .. tostring(v) .. "\r\n"
    end
  end
  if not seen_date then
    local t = os.time()
    if t ~= date_line_time then
      date_line_time = t
      date_line = "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S GMT", t) .. "\r\n"
    end
    n = n + 1; out[n] = date_line
  end
  local nobody = st < 200 or st == 204 or st == 304
  if not nobody and not seen_length and not seen_te then
    if length then
      local l = length_line[length]
      if not l then
        l = "Content-Length: " .. length .. "\r\n"
        if length < 4096 then length_line[length] = l end
      end
      n = n + 1; out[n] = l
    elseif req.version == "1.1" then
      n = n + 1; out[n] = "Transfer-Encoding: chunked\r\n"
      res._chunked = true
    else
      res._close = true -- HTTP/1.0 without a length: the body ends at the close
    end
  end
  if st ~= 101 then
    if res._close then
      n = n + 1; out[n] = "Connection: close\r\n"
    elseif req.version == "1.0" then
      n = n + 1; out[n] = "Connection: keep-alive\r\n"
    end
  end
  n = n + 1; out[n] = "\r\n"
  res._head_sent = true
  nobody = nobody or req.method == "HEAD"
  res._nobody = nobody
  if body and not nobody and body ~= "" then
    n = n + 1; out[n] = body
    local head = concat(out, "", 1, n)
    out[n] = nil -- the scratch keeps header lines until overwritten, not a body
    return head
  end
  return concat(out, "", 1, n)
end

-- res:write(data): send part of the body (the head first, chunked unless a
-- Content-Length header was set). true | false, err.
function Res:write(data)
  if self._finished then return false, "response already finished" end
  local head = ""
  if not self._head_sent then head = send_head(self, nil) end
  if self._nobody or (data == "" and head == "") then
    if head ~= "" then return socket.write(self._id, head) end
    return true
  end
  if self._chunked then data = data == "" and "" or chunk(data) end
  return socket.write(self._id, head .. data)
end

-- res:finish([data]): end the response (with a Content-Length when nothing was sent
-- yet). true | false, err.
function Res:finish(data)
  if self._finished then return false, "response already finished" end
  data = data or ""
  local out
  if not self._head_sent then
    out = send_head(self, #data, data)
  elseif self._nobody then
    out = ""
  elseif self._chunked then
    out = (data ~= "" and chunk(data) or "") .. "0\r\n\r\n"
  else
    out = data
  end
  self._finished = true
  if out == "" then return true end
  return socket.write(self._id, out)
end

-- res:hijack(): the handler takes the connection over (WebSocket upgrade); the server
-- sends nothing more on it and closes it when the handler returns.
function Res:hijack()
  self._hijacked = true
  self._finished = true
  return self._id
end

local function run_handler(handler, req, res)
  if PUC51 then
    -- PUC 5.1 cannot yield across pcall: the handler runs in a coroutine of its own
    -- (an error there is reported by the scheduler), and this one waits for it,
    -- noticing its death.
    local me, result = sched.self(), nil
    local co = sched.fork(function()
      result = compat.pack(handler(req, res))
      sched.wakeup(me)
    end)
    while not result do
      sched.wait(1000)
      if not result and coroutine.status(co) == "dead" then
        return false, "handler raised an error (reported by the scheduler)"
      end
    end
    return true, compat.unpack(result, 1, result.n)
  end
  return pcall(handler, req, res)
end

-- serve(id, handler [, opts]): answer requests on connection `id` (already started
-- with socket.start) until it closes or must close; then closes it.
-- After an error response to a client that may still be sending (a body over the
-- limit, a bad request): half-close, then read and drop its data for at most 2 s, so
-- the response is not destroyed by a TCP reset when we close with unread input.
local function lingering_close(id)
  if socket.disconnected(id) or socket.invalid(id) then return end
  socket.close_write(id)
  local stop = false
  local t = raw.timeout(2000, function() stop = true; raw.shutdown(id) end)
  socket.settimeout(id, 1000)
  while not stop do
    local d = socket.read(id)
    if not d then break end
  end
  if not stop then raw.cancel_timeout(t) end
end

function M.serve(id, handler, opts)
  local o = opts and opts._checked and opts or options(opts)
  -- The header deadline: a wait for a head that lasts header_timeout ms gets 408 and
  -- the close. One timer per connection, not one per request: it is armed at the
  -- first wait for a head and, when it fires, checks the wait in progress (started
  -- at wait_start), re-arming itself for what is left of it.
  local header_timeout = o.header_timeout
  local expired, waiting, wait_start = false, false, 0
  local timer
  local function on_timer()
    timer = nil
    if not waiting then return end -- armed again at the next wait
    local left = wait_start + header_timeout - now()
    if left > 0 then
      timer = raw.timeout(left, on_timer)
      return
    end
    expired = true
    if (raw.unread(id) or 0) > 0 then raw.send(id, simple_response(408)) end
    raw.close(id)
  end
  local served = 0
  local linger = false
  local timed = false -- a body read timeout is set on the socket
  local function reject(response)
    linger = true
    socket.write(id, response)
  end
  socket.settimeout(id, nil) -- waits for a head are bounded by the header timer
  -- A client may half-close after its request: the answer must still go out (the
  -- socket is closed below in every case).
  socket.keepopen(id)
  socket.limit(id, o.max_header)
  while true do
    if timed then socket.settimeout(id, nil); timed = false end
    local head = readline(id, CRLF2)
    local err
    if not head then
      waiting, wait_start = true, now()
      if not timer then timer = raw.timeout(header_timeout, on_timer) end
      -- The usual case: the whole head arrives at once. block() waits for the first
      -- bytes (returning at once when part of a head is buffered); read_head waits
      -- for the rest.
      socket.block(id)
      if not expired then
        head = readline(id, CRLF2)
        if not head then head, err = read_head(id) end
      end
      waiting = false
    end
    if expired then break end
    if not head then
      if err == "too large" then reject(simple_response(431)) end
      break
    end
    if #head > o.max_header then reject(simple_response(431)); break end
    -- httparse (Rust) parses the request line and headers; empty lines before the
    -- request line are skipped (RFC 9112 2.2)
    local method, target, version, headers = parse_request(head, o.max_headers)
    if not method then
      reject(simple_response(HEAD_STATUS[target] or 400))
      break
    end
    if version == "1.1" and not headers.host then reject(simple_response(400)); break end
    local mode, length, ferr = body_framing(headers)
    if ferr then
      reject(simple_response(ferr == "unsupported Transfer-Encoding" and 501 or 400))
      break
    end
    if mode == "length" and length > o.max_body then reject(simple_response(413)); break end
    local expect = headers.expect
    local continue = false
    if expect then
      if lower(expect) ~= "100-continue" then reject(simple_response(417)); break end
      continue = version == "1.1"
    end
    served = served + 1
    local conn = headers.connection
    local keep
    if version == "1.1" then keep = not has_token(conn, "close") else keep = has_token(conn, "keep-alive") end
    if o.max_requests and served >= o.max_requests then keep = false end

    local path, query = target, ""
    local q = find(target, "?", 1, true)
    if q then path, query = sub(target, 1, q - 1), sub(target, q + 1) end
    local req = setmetatable({
      method = method, target = target, path = path, query = query, version = version,
      headers = headers, id = id, _limit = o.max_body, _reader = NO_BODY, _res = false,
    }, Req)
    local res = setmetatable({ status = 200, headers = {}, _id = id, _req = req, _close = not keep }, Res)
    req._res = res
    local body_started, body_failed = false, false
    if mode then
      local before = continue and function()
        if not res._head_sent then socket.write(id, "HTTP/1.1 100 Continue\r\n\r\n") end
      end or nil
      local reader = body_reader(id, mode, length, o.max_body, before)
      req._reader = function(max)
        body_started = true
        local d, e2 = reader(max)
        if d == false then body_failed = true end
        return d, e2
      end
      socket.settimeout(id, o.read_timeout)
      timed = true
    end
    local ok, st, body, hdrs
    if PUC51 then ok, st, body, hdrs = run_handler(handler, req, res) else ok, st, body, hdrs = pcall(handler, req, res) end
    if not ok then
      io.stderr:write("skysocket.http: handler error: ", tostring(st), "\n")
      if not res._head_sent and not res._hijacked then reject(simple_response(500)) end
      break
    end
    if res._hijacked then break end
    if not res._finished then
      if res._error and not res._head_sent then
        reject(simple_response(res._error))
        break
      end
      if type(st) == "number" then
        res.status = st
        if hdrs then
          local rh = res.headers
          -- a handler that set no header of its own: its returned table is used as
          -- it is (send_head only reads it)
          if next(rh) == nil then res.headers = hdrs else for k, v in pairs(hdrs) do rh[k] = v end end
        end
      end
      if not Res.finish(res, type(st) == "number" and body or nil) then break end
    end
    if body_failed then linger = true end
    if res._close or body_failed then break end
    -- Unread request body: drain it (bounded) or close the connection.
    if mode then
      if continue and not body_started then break end
      local drained = read_all(req._reader, o.max_body)
      if not drained then linger = true; break end
    end
  end
  if timer then raw.cancel_timeout(timer) end
  if linger and not expired then lingering_close(id) end
  socket.close(id)
end

-- listen(host, port, handler [, opts]) -> server {id, ip, port, close()} | nil, err
function M.listen(host, port, handler, opts)
  if type(handler) ~= "function" then
    error(format("bad argument #3 to 'listen' (function expected, got %s)", type(handler)), 2)
  end
  local o = options(opts)
  o._checked = true
  local lid, ip, p
  if o.tls then
    -- https: accepted sockets handshake first (bounded by header_timeout)
    lid, ip, p = socket.tls_listen(host, port, o.tls)
  else
    lid, ip, p = socket.listen(host, port)
  end
  if not lid then return nil, ip end
  socket.start(lid, function(id)
    if not socket.start(id) then return end
    if o.tls and not socket.handshake(id, o.header_timeout) then
      socket.close(id)
      return
    end
    M.serve(id, handler, o)
  end)
  return { id = lid, ip = ip, port = p, close = function() socket.close(lid) end }
end

---------------------------------------------------------------- client

-- Transports by URL scheme: open(host, port, timeout_ms, opts) -> id | nil, err, with
-- the id on the coroutine layer. Add one to support another scheme.
local default_tls -- the verifying client context https uses unless opts.tls is given

local function client_tls(opts)
  if opts.tls then return opts.tls end
  if not default_tls then
    local ctx, err = socket.tls_context { alpn = "http/1.1" }
    if not ctx then return nil, "https: " .. tostring(err) end
    default_tls = ctx
  end
  return default_tls
end

local function with_timeout(timeout, f, ...)
  local prev = socket.default_timeout(timeout)
  local id, err = f(...)
  socket.default_timeout(prev)
  return id, err
end

M.schemes = {
  http = { port = 80, open = function(host, port, timeout)
    return with_timeout(timeout, socket.open, host, port)
  end },
  -- Verified against the system CA store by default; opts.tls: a client context
  -- (e.g. a private CA), opts.server_name: the name to verify instead of the host.
  https = { port = 443, open = function(host, port, timeout, opts)
    local ctx, err = client_tls(opts)
    if not ctx then return nil, err end
    return with_timeout(timeout, socket.tls_open, host, port, ctx, opts.server_name)
  end },
}

-- parse_url(url) -> scheme, host, port, target | nil, err
function M.parse_url(url)
  local scheme, authority, target = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil, "bad URL '" .. url .. "'" end
  scheme = lower(scheme)
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@]+):?(%d*)$") end
  if not host or host == "" then return nil, "bad host in URL '" .. url .. "'" end
  target = target:gsub("#.*$", "")
  if target == "" then target = "/" elseif sub(target, 1, 1) == "?" then target = "/" .. target end
  return scheme, host, tonumber(port), target
end

local pool = {}     -- "scheme://host:port" -> array of idle connection ids
M.max_idle = 8      -- idle connections kept per host

local function take_idle(key)
  local list = pool[key]
  while list and #list > 0 do
    local id = list[#list]
    list[#list] = nil
    if not socket.invalid(id) and not socket.disconnected(id) and (raw.unread(id) or 0) == 0 then
      return id
    end
    socket.close(id)
  end
end

local function put_idle(key, id)
  local list = pool[key]
  if not list then list = {}; pool[key] = list end
  if #list >= M.max_idle then socket.close(id); return end
  list[#list + 1] = id
end

-- close_idle(): close every pooled keep-alive connection.
function M.close_idle()
  local all = pool
  pool = {}
  for _, list in pairs(all) do
    for i = 1, #list do socket.close(list[i]) end
  end
end

local function request_once(id, method, host_header, target, opts, headers)
  local out = { format("%s %s HTTP/1.1\r\n", method, target) }
  local has = {}
  for k in pairs(headers) do has[lower(k)] = true end
  if not has.host then out[#out + 1] = "Host: " .. host_header .. "\r\n" end
  local body = opts.body
  if type(body) == "string" then
    if not has["content-length"] and (#body > 0 or method == "POST" or method == "PUT") then
      out[#out + 1] = "Content-Length: " .. #body .. "\r\n"
    end
  elseif type(body) == "function" and not has["transfer-encoding"] then
    out[#out + 1] = "Transfer-Encoding: chunked\r\n"
  end
  if opts.keepalive == false and not has.connection then out[#out + 1] = "Connection: close\r\n" end
  header_lines(out, headers)
  out[#out + 1] = "\r\n"
  if type(body) == "string" then out[#out + 1] = body end
  local ok, err = socket.write(id, concat(out))
  if not ok then return nil, err, true end
  if type(body) == "function" then
    while true do
      local piece = body()
      if piece == nil then break end
      if piece ~= "" then
        ok, err = socket.write(id, chunk(piece))
        if not ok then return nil, err end
      end
    end
    ok, err = socket.write(id, "0\r\n\r\n")
    if not ok then return nil, err end
  end
  local head, version, status, reason
  repeat
    local herr
    head, herr = read_head(id)
    if not head then
      return nil, herr == "too large" and "response head too large" or herr,
        herr == "closed" -- nothing received: may retry on a fresh connection
    end
    local e = find(head, "\r\n", 1, true) or #head + 1
    version, status, reason = sub(head, 1, e - 1):match("^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
    if not version then return nil, "bad status line" end
    status = tonumber(status)
    head = sub(head, e + 2)
  until status >= 200 or status == 101
  local rh, herr = parse_headers(head, 1, opts.max_headers or 200)
  if not rh then return nil, "bad response: " .. herr end
  local res = { status = status, reason = reason, version = version, headers = rh }
  local keep = version == "1.1" and not has_token(rh.connection, "close")
  if version == "1.0" then keep = has_token(rh.connection, "keep-alive") end
  if method == "HEAD" or status == 204 or status == 304 or status < 200 then
    res.body = ""
    if status == 101 then res.id = id; keep = false end
    return res, keep
  end
  local mode, length, ferr = body_framing(rh)
  if ferr then return nil, "bad response: " .. ferr end
  if not mode then mode = "close"; keep = false end
  local limit = opts.max_body or 64 * 1024 * 1024
  local reader = body_reader(id, mode, length or 0, limit)
  if opts.stream then
    -- the caller reads: res.read(max); the connection is closed at the end
    res.read = reader
    res.id = id
    return res, false
  end
  local b, berr = read_all(reader, limit)
  if not b then return nil, "body: " .. tostring(berr) end
  res.body = b
  return res, keep
end

-- request(method, url [, opts]) -> res | nil, err. opts: headers, body (string or a
-- function returning pieces, nil at the end: sent chunked), timeout (ms overall,
-- default 30000), connect_timeout (default 10000), read_timeout (each wait, default
-- timeout), keepalive (default true), max_body (default 64 MiB), stream.
function M.request(method, url, opts)
  if type(method) ~= "string" or not find(method, TOKEN) then
    error(format("bad argument #1 to 'request' (method token expected, got %s)", tostring(method)), 2)
  end
  if type(url) ~= "string" then
    error(format("bad argument #2 to 'request' (string expected, got %s)", type(url)), 2)
  end
  opts = opts or {}
  local scheme, host, port, target = M.parse_url(url)
  if not scheme then return nil, host end
  local transport = M.schemes[scheme]
  if not transport then return nil, "unsupported URL scheme '" .. scheme .. "'" end
  port = port or transport.port
  local key = scheme .. "://" .. host .. ":" .. port
  local host_header = find(host, ":", 1, true) and "[" .. host .. "]" or host
  if port ~= transport.port then host_header = host_header .. ":" .. port end
  local timeout = opts.timeout or 30000
  local headers = opts.headers or {}
  local expired, current = false, nil
  local timer = raw.timeout(timeout, function()
    expired = true
    if current then raw.shutdown(current) end
  end)
  local res, err
  for attempt = 1, 2 do
    local id = opts.keepalive ~= false and not opts.stream and take_idle(key)
    local reused = id and true
    if not id then
      local ct = opts.connect_timeout or 10000
      if ct > timeout then ct = timeout end
      id, err = transport.open(host, port, ct, opts)
      if not id then
        if expired then err = "timeout" end
        break
      end
    end
    current = id
    socket.settimeout(id, opts.read_timeout or timeout)
    local keep, retry
    res, keep, retry = request_once(id, method, host_header, target, opts, headers)
    current = nil
    if res then
      if res.id then
        current = nil -- stream/upgrade: the caller owns the connection now
      elseif keep and opts.keepalive ~= false then
        socket.settimeout(id, nil)
        put_idle(key, id)
      else
        socket.close(id)
      end
      break
    end
    err = keep
    socket.close(id)
    if expired then err = "timeout"; break end
    if not (reused and retry and type(opts.body) ~= "function") then break end
  end
  raw.cancel_timeout(timer)
  if not res then return nil, err end
  return res
end

function M.get(url, opts)
  return M.request("GET", url, opts)
end

function M.post(url, body, opts)
  local o = {}
  if opts then for k, v in pairs(opts) do o[k] = v end end
  o.body = body
  return M.request("POST", url, o)
end

-- Internals shared with skysocket.websocket.
M._read_head = read_head
M._simple_response = simple_response
M._request_once = request_once

return M
