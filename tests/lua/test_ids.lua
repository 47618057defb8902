-- Socket ids at the top of the id space (up to 2^53) and across the tag wrap, on every
-- interpreter: ids past 2^31 once aborted LuaJIT (an id used as a C-int table index).
-- `configure{first_tag = …}` (a testing knob) makes slots start their tags near the
-- largest tag, so the first ids are just below 2^53 and a few reuses later wrap to
-- tag 1.
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

local SLOTS = 16                       -- 4 index bits: tags up to 2^49 - 1
local MAX_TAG = 2 ^ 49 - 1
local TOP = 2 ^ 53

local function high_ids(before_wrap)
  T.cleanup()
  socket.configure { max_sockets = SLOTS, first_tag = MAX_TAG - before_wrap }
end

local function restore()
  T.cleanup()
  socket.configure { max_sockets = 65536, first_tag = 0 }
end

local function info_of(id)
  for _, s in ipairs(socket.info()) do
    if s.id == id then return s end
  end
end

-- Every id-taking function of the callback module, on a connected pair.
local function exercise(cid, sid, got)
  T.eq(socket.nodelay(cid), true, "nodelay")
  T.eq(socket.nodelay(sid, false), true, "nodelay off")
  T.eq(socket.keepalive(cid), true, "keepalive")
  T.eq(socket.sendlimit(cid, 1000000), true, "sendlimit")
  T.eq(socket.keepopen(sid, false), true, "keepopen")
  T.eq(socket.pause(sid), true, "pause")
  T.eq(socket.resume(sid), true, "resume")
  local s = T.truthy(info_of(sid), "info lists the server id")
  T.eq(s.id, sid, "info id is exact")
  T.eq(s.nodelay, false, "info nodelay")
  T.eq(info_of(cid).nodelay, true, "client nodelay")
  -- Read buffers: the server's bytes stay in Rust until taken.
  T.eq(socket.buffered(sid), true, "buffered")
  T.eq(socket.send(cid, "line one\nrest"), true, "send")
  T.eq(socket.lwrite(cid, "!"), true, "lwrite")
  T.wait("buffered bytes", function() return socket.unread(sid) == 14 end)
  T.eq(socket.readline(sid), "line one", "readline")
  T.eq(socket.readn(sid, 2), "re", "readn")
  T.eq(socket.readsome(sid), "st!", "readsome")
  T.eq(socket.unbuffer(sid), 0, "unbuffer (no bytes left)")
  -- Framed mode: packets parsed in Rust and delivered to the socket's own handler.
  T.eq(socket.framed(cid), true, "framed")
  T.eq(socket.send(sid, socket.pack("frame")), true, "send a frame")
  T.wait("frame", function() return got[#got] == "frame" end)
  T.eq(socket.sendframe(sid, "x"), true, "sendframe")
  T.wait("second frame", function() return got[#got] == "x" end)
  T.eq(socket.close_write(cid), true, "close_write")
end

function tests.callback_api_at_ids_near_2_pow_53_and_across_the_wrap()
  if T.single_state() then return end
  high_ids(5)
  local got = {}
  local server = {}
  local lid, port = T.listen {
    accept = function(_, id) server[#server + 1] = id end,
  }
  local seen_top, seen_wrap = false, false
  for round = 1, 10 do
    local cid = assert(socket.connect("127.0.0.1", port))
    local opened, closed = false, false
    -- An own handler per socket: the fast path looks it up by id.
    socket.start(cid, {
      open = function() opened = true end,
      data = function(_, s) got[#got + 1] = s end,
      close = function() closed = true end,
    })
    T.wait("accept " .. round, function() return opened and server[round] ~= nil end)
    local sid = server[round]
    local serv_closed = false
    socket.start(sid, {
      data = function(id, s) socket.send(id, s) end,
      close = function() serv_closed = true end,
    })
    for _, id in ipairs { lid, cid, sid } do
      T.truthy(id > 0 and id < TOP, "id in range")
      if id > 2 ^ 52 then seen_top = true end
    end
    if seen_top and cid < 2 ^ 31 then seen_wrap = true end
    exercise(cid, sid, got)
    T.eq(socket.close(sid), true, "close server side")
    T.wait("both closed", function() return closed and serv_closed end)
    socket.close(cid)
    -- A closed id is stale, never an error that raises.
    local ok, msg = socket.send(sid, "late")
    T.eq(ok, false, "send to a closed high id")
    T.truthy(msg, "message")
  end
  T.truthy(seen_top, "ids above 2^52 were issued")
  T.truthy(seen_wrap, "tags wrapped back to small ids")
  socket.close(lid)
  restore()
end

function tests.udp_at_ids_near_2_pow_53()
  if T.single_state() then return end
  high_ids(2)
  local server = assert(socket.udp_listen("127.0.0.1", 0))
  T.truthy(server > 2 ^ 52, "udp id above 2^52")
  local port = tonumber(info_of(server).sock:match(":(%d+)$"))
  local got
  local from_ip
  socket.start(server, { udp = function(id, data, from)
    T.eq(id, server, "udp id delivered exactly")
    from_ip = socket.udp_address(from)
    socket.sendto(id, from, data)
  end })
  local c = assert(socket.udp_dial("127.0.0.1", port))
  socket.start(c, { udp = function(_, data) got = data end })
  T.eq(socket.send(c, "dgram"), true, "send on a dialed udp id")
  T.wait("udp echo", function() return got == "dgram" end)
  T.eq(from_ip, "127.0.0.1", "sender address")
  socket.close(c)
  socket.close(server)
  restore()
end

function tests.ids_the_engine_never_issues_fail_cleanly()
  for _, id in ipairs { 2 ^ 31, 2 ^ 31 + 1, 2 ^ 32, 2 ^ 52 + 1, TOP - 1, TOP } do
    local ok, msg = socket.send(id, "x")
    T.eq(ok, false, "send " .. string.format("%.0f", id))
    T.truthy(msg, "message")
    T.eq(socket.readn(id, 1), nil, "readn")
    T.eq(socket.readline(id), nil, "readline")
    T.eq(socket.readsome(id), nil, "readsome")
    T.eq((socket.close(id)), false, "close")
    T.eq((socket.nodelay(id)), false, "nodelay")
    T.eq((socket.pause(id)), false, "pause")
  end
  -- Past 2^53 a double is not an exact id: still a clean result or argument error.
  local ok = pcall(socket.send, 2 ^ 60, "x")
  T.truthy(ok ~= nil, "2^60 handled")
end

function tests.coroutine_layer_at_ids_near_2_pow_53_and_across_the_wrap()
  if T.single_state() then return end
  high_ids(4)
  local co = require "skysocket.socket"
  local ids, lines = {}, {}
  local done = false
  local wd = socket.timeout(10000, function() co.exit() end)
  co.run(function()
    local lid, _, port = assert(co.listen("127.0.0.1", 0))
    co.start(lid, function(id)
      co.start(id)
      co.settimeout(id, 5000)
      local line = co.readline(id)
      if line then co.write(id, line .. "\n") end
      -- read(id) parks the coroutine on the socket's id (the waker path)
      local rest = co.read(id)
      if rest then co.write(id, rest) end
      co.close(id)
    end)
    for round = 1, 8 do
      local id = assert(co.open("127.0.0.1", port))
      ids[#ids + 1] = id
      co.settimeout(id, 5000)
      co.write(id, "hello " .. round .. "\n")
      lines[#lines + 1] = co.readline(id)
      co.sleep(5) -- the server is parked in read(id) now
      co.write(id, "raw " .. round)
      T.eq(co.read(id, #("raw " .. round)), "raw " .. round, "read(id) echo round " .. round)
      T.eq(co.invalid(id), false, "valid")
      co.close(id)
      T.eq(co.invalid(id), true, "invalid after close")
    end
    co.close(lid)
    done = true
  end)
  socket.cancel_timeout(wd)
  T.truthy(done, "coroutine rounds finished")
  local top, wrapped = false, false
  for round, id in ipairs(ids) do
    T.eq(lines[round], "hello " .. round, "echo round " .. round)
    if id > 2 ^ 52 then top = true end
    if top and id < 2 ^ 31 then wrapped = true end
  end
  T.truthy(top, "coroutine ids above 2^52")
  T.truthy(wrapped, "coroutine ids wrapped")
  restore()
end

function tests.configure_first_tag_and_nodelay_settings()
  if T.single_state() then return end
  T.cleanup()
  T.raises("setting 'first_tag' must be >= 0", socket.configure, { first_tag = -1 })
  T.raises("setting 'nodelay' must be a boolean", socket.configure, { nodelay = 1 })
  local c = socket.configure { nodelay = false }
  T.eq(c.nodelay, false, "nodelay default off")
  local lid, port = T.listen { accept = function(_, id) socket.start(id) end }
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, {})
  T.wait("accepted", function() return #socket.info() == 3 end)
  for _, s in ipairs(socket.info()) do
    if s.id ~= lid then T.eq(s.nodelay, false, "Nagle kept on " .. s.state) end
  end
  T.cleanup()
  T.eq(socket.configure({ nodelay = true }).nodelay, true, "nodelay default back on")
  lid, port = T.listen { accept = function(_, id) socket.start(id) end }
  cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, {})
  T.wait("accepted", function() return #socket.info() == 3 end)
  for _, s in ipairs(socket.info()) do
    if s.id ~= lid then T.eq(s.nodelay, true, "TCP_NODELAY on " .. s.state) end
  end
  T.cleanup()
end

return tests
