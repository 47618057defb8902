-- skysocket.redis: a Redis client on skysocket.channel (RESP2, and RESP3 with resp = 3).
--
--   local redis = require "skysocket.redis"
--   local db = redis.new { host = "127.0.0.1", port = 6379, password = "pw", db = 2 }
--   db:set("k", "v"); print(db:get("k")); db:close()
--
-- * Every command by name: db:NAME(args...) sends NAME args as a RESP array (names are
--   upper-cased; string and number arguments, an array table is spread in place).
-- * Replies: status -> string ("OK"), integer -> number, bulk -> string (binary safe),
--   nil bulk / nil array / RESP3 null -> nil, array -> Lua array (a nil element is
--   false, an error element is { err = "text" }). RESP3: map -> table, set -> array,
--   boolean -> boolean, double -> number, big number -> string, verbatim -> string.
-- * A server error reply raises a Lua error whose message is the server's text
--   (e.g. "WRONGTYPE Operation against a key ..."). A transport failure raises
--   "skysocket.redis: " .. the channel's message ("timeout", "connection to H:P lost",
--   ...). db:pcall(name, ...) returns true, value / false, message instead of raising:
--   use it on PUC Lua 5.1, which cannot yield inside pcall.
-- * All coroutines share one connection: commands are pipelined on it, replies come
--   back in order. db:pipeline{ {"set","a",1}, {"get","a"} } sends several commands in
--   one write and returns their replies.
-- * AUTH (password / username), HELLO 3 (resp = 3) and SELECT (db) run in the
--   channel's auth hook, so they are replayed on every reconnect before anything else.
-- * Pub/sub runs on its own connection: redis.subscriber(opts).
-- * Replies are parsed in Rust (skysocket.resp_parse, resp_parse_many: a malformed
--   reply drops the connection with "protocol error from H:P: <reason>"), pipelines
--   are encoded in Rust (skysocket.resp_encode); see docs/API.md.
local raw = require "skysocket"
local channel = require "skysocket.channel"
local socket = require "skysocket.socket"

local M = {}
local NEED = channel.NEED

local sub, upper, format = string.sub, string.upper, string.format
local concat, tostring, type, select = table.concat, tostring, type, select
local floor = math.floor

---------------------------------------------------------------- replies

-- Replies are parsed in Rust (skysocket.resp_parse / resp_parse_many, src/lua/resp.rs):
-- one C call per reply, or per batch of pipelined replies, instead of several Lua-side
-- string calls per element (BENCHMARKS.md, issue 17 session 6).
local resp_parse, resp_parse_many, resp_encode = raw.resp_parse, raw.resp_parse_many, raw.resp_encode

-- A reply that did not parse: `stop` is the length the buffer must reach (raise NEED:
-- the channel waits for it) or the reason it is malformed (the channel drops the
-- connection with "protocol error from H:P: " .. reason).
local function stopped(s, stop)
  if type(stop) == "number" then
    s.need = stop
    error(NEED, 0)
  end
  error(stop, 0)
end

-- parse(s, buf, pos) -> ok, value, next position (push messages are replies here).
-- Raises NEED if incomplete.
local function parse(s, buf, pos)
  local ok, v, nxt = resp_parse(buf, pos, true)
  if ok == nil then stopped(s, v) end
  return ok, v, nxt
end
M.parse = parse

-- The channel reader for one reply (RESP3 push messages in between are skipped).
local function read_reply(s)
  local ok, v, pos = resp_parse(s.buf, s.pos)
  if ok == nil then stopped(s, v) end
  s.pos = pos
  return ok, v
end
M.read_reply = read_reply

---------------------------------------------------------------- requests

local function argerror(n, fname, msg, level)
  error(format("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 2) + 1)
end

-- argstr(v) -> v as a string (numbers: integers without exponent).
local function argstr(v, i, fname)
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then
    if v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then
      if math.type and math.type(v) == "integer" then return tostring(v) end
      if v >= -2 ^ 53 and v <= 2 ^ 53 then return format("%d", v) end
    end
    return format("%.17g", v)
  end
  argerror(i, fname, "string or number expected, got " .. tv, 4)
end

-- "$<n>\r\n" and "*<n>\r\n" for each length, made once (a number in a concatenation
-- costs a snprintf call).
local BULK = setmetatable({}, { __index = function(t, n)
  local v = "$" .. n .. "\r\n"
  if n < 65536 then t[n] = v end
  return v
end })
local ARRAY = setmetatable({}, { __index = function(t, n)
  local v = "*" .. n .. "\r\n"
  if n < 4096 then t[n] = v end
  return v
end })
-- "$<#name>\r\n<name>\r\n" per command name.
local NAMES = setmetatable({}, { __index = function(t, name)
  local v = "$" .. #name .. "\r\n" .. name .. "\r\n"
  if #name < 64 then t[name] = v end
  return v
end })

-- Build a RESP command from a name and arguments (array tables spread in place).
local function command(name, fname, ...)
  local n = select("#", ...)
  local parts, np, count = { "", NAMES[name] }, 2, 1
  for i = 1, n do
    local v = select(i, ...)
    if type(v) == "table" then
      for j = 1, #v do
        local a = argstr(v[j], i, fname)
        np = np + 1
        parts[np] = BULK[#a] .. a .. "\r\n"
        count = count + 1
      end
    else
      local a = argstr(v, i, fname)
      np = np + 1
      parts[np] = BULK[#a] .. a .. "\r\n"
      count = count + 1
    end
  end
  parts[1] = ARRAY[count]
  return concat(parts)
end
M.command = command

local unpack = table.unpack or unpack


local Redis = {}
local methods = {}
Redis.__index = methods

local function raise(ok, v)
  if ok then return v end
  if ok == false then error(v, 0) end
  error("skysocket.redis: " .. tostring(v), 0)
end

local PUBSUB = { SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true, MONITOR = true }

-- db:NAME(...) for any NAME: generated on first use and cached in `methods`.
local function make(name)
  local NAME = upper(name)
  if PUBSUB[NAME] then
    return function()
      error("skysocket.redis: " .. name .. " needs its own connection: use redis.subscriber", 2)
    end
  end
  local head1 = "*2\r\n$" .. #NAME .. "\r\n" .. NAME .. "\r\n"
  local head2 = "*3\r\n$" .. #NAME .. "\r\n" .. NAME .. "\r\n"
  local head0 = "*1\r\n$" .. #NAME .. "\r\n" .. NAME .. "\r\n"
  -- One or two string arguments (the common case) take a short path with as few calls
  -- of C functions (type, select) as possible: each costs about as much as the rest.
  return function(self, ...)
    local n = select("#", ...)
    local a, b = ...
    local req
    if n == 1 then
      if type(a) == "string" then req = head1 .. BULK[#a] .. a .. "\r\n" end
    elseif n == 2 then
      if type(a) == "string" and type(b) == "string" then
        req = head2 .. BULK[#a] .. a .. "\r\n" .. BULK[#b] .. b .. "\r\n"
      end
    elseif n == 0 then
      req = head0
    end
    if not req then req = command(NAME, name, ...) end
    return raise(self.ch:_request(req, read_reply))
  end
end

setmetatable(methods, {
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    local f = make(name)
    rawset(t, name, f)
    return f
  end,
})

local function check_opts(opts, fname)
  if type(opts) ~= "table" then argerror(1, fname, "table expected, got " .. type(opts), 2) end
  if opts.resp ~= nil and opts.resp ~= 2 and opts.resp ~= 3 then
    argerror(1, fname, "field 'resp' must be 2 or 3", 2)
  end
  if opts.db ~= nil and (type(opts.db) ~= "number" or opts.db ~= floor(opts.db) or opts.db < 0) then
    argerror(1, fname, "field 'db' must be an integer >= 0", 2)
  end
  for _, k in ipairs { "password", "username" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      argerror(1, fname, "field '" .. k .. "' must be a string", 2)
    end
  end
end

-- The handshake run on every (re)connect: AUTH, HELLO 3, SELECT, then opts.auth.
local function handshake(opts)
  local steps = {}
  if opts.password then
    if opts.username then
      steps[#steps + 1] = command("AUTH", "auth", opts.username, opts.password)
    else
      steps[#steps + 1] = command("AUTH", "auth", opts.password)
    end
  end
  if opts.resp == 3 then steps[#steps + 1] = command("HELLO", "hello", "3") end
  if opts.db and opts.db ~= 0 then steps[#steps + 1] = command("SELECT", "select", opts.db) end
  local user = opts.auth
  if #steps == 0 and not user then return nil end
  return function(ch)
    for i = 1, #steps do
      local ok, v = ch:request(steps[i], read_reply)
      if not ok then return false, v end
    end
    if user then return user(ch) end
    return true
  end
end

-- redis.new(opts) -> db. Nothing is connected until the first command (or db:connect()).
-- opts: host (default "127.0.0.1"), port (6379), password, username, db, resp (2|3),
-- timeout (ms, per command), connect_timeout (ms), backoff_min/backoff_max (ms),
-- auth (extra hook, function(ch)), tls / open (see skysocket.channel).
function M.new(opts)
  opts = opts or {}
  check_opts(opts, "new")
  local ch = channel.new {
    host = opts.host or "127.0.0.1", port = opts.port or 6379,
    auth = handshake(opts),
    timeout = opts.timeout, connect_timeout = opts.connect_timeout,
    backoff_min = opts.backoff_min, backoff_max = opts.backoff_max,
    tls = opts.tls, open = opts.open, nodelay = opts.nodelay,
  }
  return setmetatable({ ch = ch }, Redis)
end

-- redis.connect(opts) -> db | nil, err: new() and connect now (in a sched coroutine).
function M.connect(opts)
  local db = M.new(opts)
  local ok, err = db.ch:connect()
  if not ok then
    db.ch:close()
    return nil, err
  end
  return db
end

function methods:connect()
  return self.ch:connect()
end

function methods:close()
  self.ch:close()
end

-- db:pcall(name, ...) -> true, reply | false, message (server error or transport
-- failure). Bad arguments still raise.
function methods:pcall(name, ...)
  if type(name) ~= "string" then argerror(1, "pcall", "command name expected, got " .. type(name)) end
  if name == "pipeline" then
    local r, errs = self:_pipeline(...)
    if r == nil then return false, "skysocket.redis: " .. tostring(errs) end
    return true, r, errs
  end
  local NAME = upper(name)
  if PUBSUB[NAME] then return false, "skysocket.redis: " .. name .. " needs its own connection" end
  local ok, v = self.ch:request(command(NAME, name, ...), read_reply)
  if ok then return true, v end
  if ok == false then return false, v end
  return false, "skysocket.redis: " .. tostring(v)
end

-- db:pipeline(cmds) -> results, errors. cmds: an array of commands, each an array
-- { name, args... }. Sent in one write; results[i] is the i-th reply (results.n =
-- #cmds, a nil reply leaves a hole); errors is nil, or errors[i] = the server's text
-- for the commands that failed (results[i] is then false). A transport failure raises.
-- The Lua encoding of a pipeline, with its argument checks (resp_encode leaves
-- anything unusual to it: a refused name, a bad or float argument, a metatable).
local function encode_pipeline(cmds, n)
  local parts, np = {}, 0
  for i = 1, n do
    local c = cmds[i]
    if type(c) ~= "table" or type(c[1]) ~= "string" then
      argerror(1, "pipeline", "command " .. i .. " must be an array { name, args... }", 4)
    end
    local name = c[1]
    if PUBSUB[upper(name)] then argerror(1, "pipeline", name .. " needs its own connection", 4) end
    local m = #c
    np = np + 1
    parts[np] = ARRAY[m] .. NAMES[name]
    for j = 2, m do
      local a = c[j]
      if type(a) ~= "string" then
        if type(a) ~= "number" then
          argerror(1, "pipeline", "command " .. i .. ": argument " .. (j - 1) .. " must be a string or number, got " .. type(a), 4)
        end
        a = argstr(a)
      end
      np = np + 1
      parts[np] = BULK[#a] .. a .. "\r\n"
    end
  end
  return concat(parts)
end

function methods:_pipeline(cmds)
  if type(cmds) ~= "table" then argerror(1, "pipeline", "table expected, got " .. type(cmds), 3) end
  local n = #cmds
  -- Strings and integers, the usual pipeline, are encoded in Rust in one call.
  local data = resp_encode(cmds, PUBSUB) or encode_pipeline(cmds, n)
  if n == 0 then return { n = 0 } end
  -- The reader keeps the replies it has parsed when the rest has not arrived yet: when
  -- the channel calls it again (from the start of the pipeline's replies, which may have
  -- moved in the buffer), it goes on after the last complete one. One call parses every
  -- complete reply there is (up to the n - k still due).
  local results, errors, k, rel = nil, nil, 0, 0
  local ok, v = self.ch:_request(data, function(s)
    local pos = s.pos
    if k > 0 then pos = s.start + rel end
    local c, nxt, out, errs, stop = resp_parse_many(s.buf, pos, n - k, results, k, errors)
    k, results, errors = k + c, out, errs
    s.pos, rel = nxt, nxt - s.start
    if k < n then stopped(s, stop) end
    results.n = n
    return true, results
  end)
  if not ok then return nil, v end
  return results, errors
end

function methods:pipeline(cmds)
  local r, errs = self:_pipeline(cmds)
  if r == nil then error("skysocket.redis: " .. tostring(errs), 0) end
  return r, errs
end


---------------------------------------------------------------- pub/sub

-- redis.subscriber(opts) -> sub: a pub/sub connection (same opts as new). Connects on
-- first use; after a drop, the next call reconnects and subscribes again to every
-- channel and pattern it had (the handshake is replayed first).
--   sub:subscribe(ch...), sub:psubscribe(pat...), sub:unsubscribe([ch...]),
--   sub:punsubscribe([pat...])  -> true | nil, err (the server confirms each one with
--                                  a message: "subscribe", channel, count)
--   sub:message([ms]) -> kind, ... as the server sends them:
--       "message", channel, payload | "pmessage", pattern, channel, payload |
--       "subscribe"/"unsubscribe"/..., name, count
--     or nil, err ("timeout", "connection lost ..."); a timeout consumes nothing.
--   sub:close()
local Sub = {}
Sub.__index = Sub

function M.subscriber(opts)
  opts = opts or {}
  check_opts(opts, "subscriber")
  if opts.tls ~= nil and opts.tls ~= false and not opts.open and not require("skysocket").tls then
    argerror(1, "subscriber", "field 'tls': TLS is not available in this build")
  end
  return setmetatable({
    opts = opts, host = opts.host or "127.0.0.1", port = opts.port or 6379,
    id = nil, s = nil, channels = {}, patterns = {}, closed = false,
  }, Sub)
end

-- like read_reply, but push messages are what a subscriber reads.
local function read_reply_any(s)
  local ok, v, pos = resp_parse(s.buf, s.pos, true)
  if ok == nil then stopped(s, v) end
  s.pos = pos
  return ok, v
end

local function sub_drop(self)
  if self.id then socket.close(self.id) end
  self.id, self.s = nil, nil
end

-- Read one reply from the subscriber's connection (waiting up to ms).
local function sub_read(self, ms)
  local s = self.s
  while true do
    if s.pos <= #s.buf then
      s.start = s.pos
      local ok, a, b = pcall(read_reply_any, s)
      if ok then return a, b end
      if a ~= NEED then
        sub_drop(self)
        return nil, "protocol error: " .. tostring(a)
      end
      s.pos = s.start
      s.need = nil
    end
    socket.settimeout(self.id, ms)
    local data, err = socket.read(self.id)
    if not data then
      if data == nil and err == "timeout" then return nil, "timeout" end
      sub_drop(self)
      return nil, "connection to " .. self.host .. ":" .. self.port .. " lost"
    end
    if s.pos > #s.buf then s.buf = data else s.buf = sub(s.buf, s.pos) .. data end
    s.pos = 1
  end
end


local function sub_connect(self)
  if self.id then return true end
  if self.closed then return nil, "subscriber closed" end
  local o = self.opts
  local id, err
  if o.open then
    id, err = o.open(self.host, self.port, o.connect_timeout or 5000, o.tls)
  elseif o.tls then
    id, err = channel.tls_open(self.host, self.port, o.connect_timeout or 5000, o.tls)
  else
    id, err = channel.open(self.host, self.port, o.connect_timeout or 5000)
  end
  if not id then return nil, "connect to " .. self.host .. ":" .. self.port .. " failed: " .. tostring(err) end
  self.id, self.s = id, channel.Sock and setmetatable({ id = id, buf = "", pos = 1, start = 1 }, channel.Sock)
  local steps = {}
  if o.password then
    steps[#steps + 1] = o.username and command("AUTH", "auth", o.username, o.password)
      or command("AUTH", "auth", o.password)
  end
  if o.resp == 3 then steps[#steps + 1] = command("HELLO", "hello", "3") end
  for i = 1, #steps do
    socket.write(id, steps[i])
    local ok, v = sub_read(self, o.connect_timeout or 5000)
    if not ok then
      sub_drop(self)
      return nil, "handshake failed: " .. tostring(v)
    end
  end
  -- resubscribe after a reconnect
  local chans, pats = {}, {}
  for c in pairs(self.channels) do chans[#chans + 1] = c end
  for p in pairs(self.patterns) do pats[#pats + 1] = p end
  if #chans > 0 then socket.write(id, command("SUBSCRIBE", "subscribe", chans)) end
  if #pats > 0 then socket.write(id, command("PSUBSCRIBE", "psubscribe", pats)) end
  return true
end

local function sub_cmd(self, NAME, set, add, fname, ...)
  local n = select("#", ...)
  for i = 1, n do
    local v = select(i, ...)
    if type(v) ~= "string" then argerror(i, fname, "string expected, got " .. type(v), 3) end
  end
  if add and n == 0 then argerror(1, fname, "string expected, got no value", 3) end
  local ok, err = sub_connect(self)
  if not ok then return nil, err end
  for i = 1, n do
    local v = select(i, ...)
    if add then set[v] = true else set[v] = nil end
  end
  if not add and n == 0 then for k in pairs(set) do set[k] = nil end end
  local sent, e = socket.write(self.id, command(NAME, fname, ...))
  if not sent then
    sub_drop(self)
    return nil, "connection lost: " .. tostring(e)
  end
  return true
end

function Sub:subscribe(...) return sub_cmd(self, "SUBSCRIBE", self.channels, true, "subscribe", ...) end
function Sub:psubscribe(...) return sub_cmd(self, "PSUBSCRIBE", self.patterns, true, "psubscribe", ...) end
function Sub:unsubscribe(...) return sub_cmd(self, "UNSUBSCRIBE", self.channels, false, "unsubscribe", ...) end
function Sub:punsubscribe(...) return sub_cmd(self, "PUNSUBSCRIBE", self.patterns, false, "punsubscribe", ...) end

function Sub:message(ms)
  if ms ~= nil and (type(ms) ~= "number" or ms < 0) then
    argerror(1, "message", "number of milliseconds expected, got " .. type(ms))
  end
  local ok, err = sub_connect(self)
  if not ok then return nil, err end
  local rok, v = sub_read(self, ms)
  if rok == nil then return nil, v end
  if rok == false then return nil, v end -- an error reply (e.g. a command refused)
  if type(v) ~= "table" then return nil, "unexpected reply: " .. tostring(v) end
  return unpack(v, 1, #v)
end

function Sub:close()
  self.closed = true
  sub_drop(self)
end

return M
