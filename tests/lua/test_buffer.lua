-- Read buffers in Rust (buffered mode) and length-prefixed framing, raw API.
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

-- A connected pair: returns server-side id (accepted, started with `handler`),
-- client id (started with `chandler`), listener id.
local function pair(handler, chandler)
  local sid
  local lid = T.listen {
    accept = function(_, id) sid = id; socket.start(id, handler or {}) end,
  }
  local _, _, port = nil, nil, nil
  for _, s in ipairs(socket.info()) do if s.id == lid then port = tonumber(s.sock:match(":(%d+)$")) end end
  local opened = false
  local cid = assert(socket.connect("127.0.0.1", port))
  local ch = chandler or {}
  local open0 = ch.open
  ch.open = function(...) opened = true; if open0 then open0(...) end end
  socket.start(cid, ch)
  T.wait("accept", function() return sid ~= nil and opened end)
  return sid, cid, lid
end

function tests.readn_across_many_small_arrivals()
  local readable = 0
  local sid, cid, lid
  sid, cid, lid = pair({ readable = function() readable = readable + 1 end })
  socket.buffered(sid)
  T.eq(socket.readn(sid, 1), nil, "empty")
  local payload = T.bytes(300, 3)
  for i = 1, #payload, 7 do
    socket.send(cid, payload:sub(i, i + 6))
    T.settle(1)
  end
  T.wait("all bytes", function() return socket.unread(sid) == #payload end)
  assert(readable > 1, "readable called " .. readable .. " times")
  T.eq(socket.readn(sid, 301), nil, "too many")
  T.eq(socket.readn(sid, 100), payload:sub(1, 100), "first 100")
  T.eq(socket.readn(sid, 0), "", "zero")
  T.eq(socket.readn(sid, 200), payload:sub(101), "rest")
  T.eq(socket.readsome(sid), nil, "drained")
  socket.close(cid); socket.close(lid)
  T.wait("server close", function() return socket.unread(sid) == nil end)
end

function tests.readline_with_split_multibyte_separator()
  local sid, cid, lid = pair({})
  socket.buffered(sid)
  local parts = { "first\r", "\nsec", "ond\r", "\n\r", "\nlast" }
  for _, p in ipairs(parts) do socket.send(cid, p); T.settle(5) end
  T.wait("bytes", function() return socket.unread(sid) == 21 end)
  T.eq(socket.readline(sid, "\r\n"), "first", "line 1")
  T.eq(socket.readline(sid, "\r\n"), "second", "line 2")
  T.eq(socket.readline(sid, "\r\n"), "", "empty line")
  T.eq(socket.readline(sid, "\r\n"), nil, "no separator yet")
  socket.send(cid, "\r")
  T.wait("cr", function() return socket.unread(sid) == 5 end)
  T.eq(socket.readline(sid, "\r\n"), nil, "half separator")
  socket.send(cid, "\nx--y--")
  T.wait("lf", function() return socket.unread(sid) == 12 end)
  T.eq(socket.readline(sid, "\r\n"), "last", "line after split separator")
  T.eq(socket.readline(sid, "--"), "x", "other separator")
  T.eq(socket.readline(sid), nil, "default \\n")
  T.eq(socket.readsome(sid), "y--", "readsome")
  T.raises("bad argument #2 to 'readline' (separator must not be empty)", socket.readline, sid, "")
  socket.close(cid); socket.close(lid); socket.close(sid)
end

function tests.buffer_kept_after_close_until_drained()
  local closed = false
  local sid, cid, lid = pair({ close = function() closed = true end })
  socket.buffered(sid)
  socket.send(cid, "tail")
  socket.close(cid)
  T.wait("close", function() return closed end)
  local n, isclosed = socket.unread(sid)
  T.eq(n, 4, "kept"); T.eq(isclosed, true, "flagged closed")
  T.eq(socket.buffers(), 1, "one buffer")
  T.eq(socket.readsome(sid), "tail", "rest")
  T.eq(socket.unread(sid), nil, "freed once drained")
  T.eq(socket.buffers(), 0, "no buffers")
  socket.close(lid)
end

function tests.auto_pause_at_limit_and_resume_when_drained()
  local sid, cid, lid = pair({})
  socket.buffered(sid, 16 * 1024) -- small limit for the test
  local function paused()
    for _, s in ipairs(socket.info()) do if s.id == sid then return s.paused end end
  end
  local function client_queue()
    for _, s in ipairs(socket.info()) do if s.id == cid then return s.wbuffer end end
  end
  local chunk = string.rep("a", 64 * 1024)
  local total = 0
  -- Send until the kernel buffers are full and the sender's own queue grows (how much
  -- the kernel absorbs depends on its autotuning: bounded at 64 MiB).
  for i = 1, 1024 do
    socket.send(cid, chunk); total = total + #chunk
    if i % 16 == 0 then
      T.settle(5)
      if paused() and client_queue() > 0 then break end
    end
  end
  T.wait("pause", function() return paused() end)
  T.settle(100)
  local held = socket.unread(sid)
  assert(held < 1024 * 1024, "buffer bounded: " .. held)
  assert(client_queue() > 0, "sender is held back")
  local got = 0
  T.wait("drain everything", function()
    local s = socket.readsome(sid)
    if s then got = got + #s end
    return got == total
  end)
  T.eq(paused(), false, "resumed")
  T.eq(client_queue(), 0, "sender drained")
  socket.close(cid); socket.close(lid); socket.close(sid)
  T.settle(10)
  T.eq(socket.unbuffer(sid), false, "gone")
end

function tests.an_error_on_one_frame_does_not_lose_the_next_frames()
  local frames, errors = {}, {}
  socket.on_error(function(m) errors[#errors + 1] = m end)
  local sid, cid, lid = pair({ data = function(_, f)
    frames[#frames + 1] = f
    if f == "b" or f == "d" then error("bad frame " .. f) end
  end })
  socket.framed(sid)
  -- One send, so the five packets arrive together and are cut out of one read.
  socket.send(cid, socket.pack("a") .. socket.pack("b") .. socket.pack("c") .. socket.pack("d") .. socket.pack("e"))
  T.wait("frames", function() return #frames == 5 end)
  T.eq(table.concat(frames, ","), "a,b,c,d,e", "every frame once, in order")
  T.eq(#errors, 2, "errors")
  assert(errors[1]:find("bad frame b", 1, true), errors[1])
  assert(errors[2]:find("bad frame d", 1, true), errors[2])
  socket.close(cid); socket.close(lid); socket.close(sid)
end

function tests.framed_callback_mode_delivers_whole_packets()
  local frames = {}
  local sid, cid, lid = pair({ data = function(_, f) frames[#frames + 1] = f end })
  socket.framed(sid)
  local big = T.bytes(65535, 9)
  local wire = socket.pack("hello") .. socket.pack("") .. socket.pack(big) .. socket.pack("x")
  for i = 1, #wire, 1000 do socket.send(cid, wire:sub(i, i + 999)) end
  T.wait("frames", function() return #frames == 4 end)
  T.eq(frames[1], "hello", "1"); T.eq(frames[2], "", "zero length"); T.eq(frames[3] == big, true, "big")
  T.eq(frames[4], "x", "4")
  T.eq(socket.pack("ab"), "\0\2ab", "pack")
  T.eq(socket.pack("ab", 4), "\0\0\0\2ab", "pack 4")
  T.raises("bad argument #1 to 'pack' (frame of 65536 bytes exceeds the maximum of 65535)",
    socket.pack, string.rep("z", 65536))
  socket.close(cid); socket.close(lid); socket.close(sid)
end

function tests.hostile_length_prefix_closes_with_error()
  local err, closed
  local sid, cid, lid = pair({ error = function(_, m) err = m end, close = function() closed = true end })
  socket.framed(sid, { header = 4, max = 1000 })
  socket.send(cid, "\255\255\255\255garbage")
  T.wait("error", function() return err ~= nil end)
  assert(err:find("exceeds the maximum of 1000", 1, true), err)
  T.eq(closed, nil, "error replaces close")
  T.eq(socket.buffers(), 0, "buffer freed")
  socket.close(cid); socket.close(lid)
end

function tests.sendframe_and_readframe_buffered()
  local sid, cid, lid = pair({})
  socket.framed(sid, { buffered = true })
  socket.framed(cid)
  T.eq(socket.sendframe(cid, "one"), true, "sendframe")
  socket.sendframe(cid, "")
  socket.sendframe(cid, "three")
  T.wait("frames", function() return socket.unread(sid) == 14 end)
  T.eq(socket.readframe(sid), "one", "1")
  T.eq(socket.readframe(sid), "", "2")
  T.eq(socket.readframe(sid), "three", "3")
  T.eq(socket.readframe(sid), nil, "none")
  local ok, msg = socket.sendframe(cid, string.rep("q", 70000))
  T.eq(ok, false, "oversized send"); assert(msg:find("exceeds"), msg)
  T.eq((socket.send(cid, "x")), false, "socket closed by oversized send")
  socket.close(lid); socket.close(sid)
end

-- A buffered socket's own handler replaced by another: the arrivals that follow go to
-- the new one, also in a poll where another socket with the old handler came first
-- (the delivery loop keeps the handler it has cached and recognises a socket's from a
-- copy in its read buffer, which start(id, handler) must keep exact).
function tests.a_replaced_own_handler_gets_the_next_arrivals()
  local got = {}
  local function handler(tag)
    return { readable = function(id) got[#got + 1] = tag .. ":" .. id end }
  end
  local A, B = handler("A"), handler("B")
  local s1, c1, l1 = pair(A)
  local s2, c2, l2 = pair(A)
  socket.buffered(s1); socket.buffered(s2)
  assert(socket.start(s2, B))
  local function count(tag, id)
    local n = 0
    for _, g in ipairs(got) do if g == tag .. ":" .. id then n = n + 1 end end
    return n
  end
  for round = 1, 20 do
    socket.send(c1, "x"); socket.send(c2, "y")
    T.wait("round " .. round, function() return socket.unread(s1) == round and socket.unread(s2) == round end)
  end
  T.eq(count("A", s2), 0, "nothing for the old handler")
  T.eq(count("B", s2), 20, "every arrival for the new one")
  T.eq(count("A", s1), 20, "the other socket keeps its handler")
  T.eq(socket.readsome(s2), ("y"):rep(20), "the bytes")
  socket.readsome(s1)
  socket.close(c1); socket.close(c2); socket.close(l1); socket.close(l2)
  T.wait("server closes", function() return socket.unread(s1) == nil and socket.unread(s2) == nil end)
end

return tests
