-- The Rust RESP reply parser (resp_parse / resp_parse_many, src/lua/resp.rs) and
-- skysocket.redis's use of it against in-test servers that send hostile replies (no
-- redis-server needed).
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local redis = require "skysocket.redis"
local T = require "testlib"
local tests = {}

local parse, parse_many = raw.resp_parse, raw.resp_parse_many
local nan_ok = (0 / 0) ~= (0 / 0)

-- Deep equality (NaN equals NaN), with the path of the first difference.
local function same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a ~= a and b ~= b then return true end
    if a == b then return true end
    return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. " missing" end
  end
  return true
end

local function check_same(a, b, what)
  local ok, why = same(a, b)
  if not ok then error(what .. ": " .. why, 2) end
end

-- { bytes, ok, value }: every reply type of RESP2 and RESP3.
local CASES = {
  { "+OK\r\n", true, "OK" },
  { "+\r\n", true, "" },
  { "-ERR wrong\r\n", false, "ERR wrong" },
  { ":0\r\n", true, 0 },
  { ":-42\r\n", true, -42 },
  { ":1099511627776\r\n", true, 2 ^ 40 },
  { "$3\r\nabc\r\n", true, "abc" },
  { "$0\r\n\r\n", true, "" },
  { "$7\r\na\r\nb\0\r\n\r\n", true, "a\r\nb\0\r\n" },
  { "$-1\r\n", true, nil },
  { "*-1\r\n", true, nil },
  { "*0\r\n", true, {} },
  { "*3\r\n$1\r\na\r\n$-1\r\n:7\r\n", true, { "a", false, 7 } },
  { "*2\r\n-ERR inner\r\n+x\r\n", true, { { err = "ERR inner" }, "x" } },
  { "*2\r\n*1\r\n+deep\r\n*0\r\n", true, { { "deep" }, {} } },
  { "%2\r\n+a\r\n:1\r\n$1\r\nb\r\n*1\r\n_\r\n", true, { a = 1, b = { false } } },
  { "~2\r\n+x\r\n+y\r\n", true, { "x", "y" } },
  { "_\r\n", true, nil },
  { "#t\r\n", true, true },
  { "#f\r\n", true, false },
  { ",3.5\r\n", true, 3.5 },
  { ",-2e3\r\n", true, -2000 },
  { ",inf\r\n", true, math.huge },
  { ",-inf\r\n", true, -math.huge },
  { "(3492890328409238509324850943850943825024385\r\n", true, "3492890328409238509324850943850943825024385" },
  { "=15\r\ntxt:Some string\r\n", true, "Some string" },
  { "!21\r\nSYNTAX invalid syntax\r\n", false, "SYNTAX invalid syntax" },
  { "|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039\r\n:9543\r\n", true, { 2039, 9543 } },
}

function tests.every_reply_type()
  for i, c in ipairs(CASES) do
    local bytes, want_ok, want = c[1], c[2], c[3]
    local ok, v, nxt = parse(bytes)
    T.eq(ok, want_ok, "case " .. i .. " ok")
    check_same(v, want, "case " .. i)
    T.eq(nxt, #bytes + 1, "case " .. i .. " next")
    -- the same after other bytes, from a position
    local ok2, v2, nxt2 = parse("junk" .. bytes .. "+more\r\n", 5)
    T.eq(ok2, want_ok, "case " .. i .. " ok at 5")
    check_same(v2, want, "case " .. i .. " at 5")
    T.eq(nxt2, #bytes + 5, "case " .. i .. " next at 5")
  end
  local ok, v = parse(",nan\r\n")
  T.eq(ok, true, "nan ok"); T.eq(v ~= v or not nan_ok, true, "nan")
end

function tests.split_at_every_byte_boundary()
  for i, c in ipairs(CASES) do
    local bytes = c[1]
    for cut = 0, #bytes - 1 do
      local ok, need = parse(bytes:sub(1, cut))
      T.eq(ok, nil, "case " .. i .. " cut " .. cut .. " incomplete")
      T.eq(type(need), "number", "case " .. i .. " cut " .. cut .. " need")
      assert(need > cut and need <= #bytes, "case " .. i .. " cut " .. cut .. ": need " .. need)
    end
  end
  -- a bulk string's header says how much it needs
  local ok, need = parse("$10\r\nab")
  T.eq(ok, nil, "bulk incomplete"); T.eq(need, 17, "bulk need: header + 10 + CRLF")
end

function tests.garbage_is_a_message_not_a_wait()
  local bad = {
    { "$abc\r\n", "bad length in reply: $abc" },
    { "*x\r\n", "bad length in reply: *x" },
    { ":12a\r\n", "bad length in reply: :12a" },
    { "$-2\r\n", "bad length in reply: $-2" },
    { "*-5\r\n", "bad length in reply: *-5" },
    { "$99999999999\r\n", "bad length in reply: $99999999999" },
    { "$536870913\r\n", "bad length in reply: $536870913" },
    { "*2000000000\r\n", "bad length in reply: *2000000000" },
    { "$ 3\r\n", "bad length in reply: $ 3" },
    { ",1.5x\r\n", "bad double in reply: 1.5x" },
    { "?what\r\n", "unknown reply type '?'" },
    { "\0\r\n", "unknown reply type '\\x00'" },
    { "$3\r\nabcXY", "bulk string not followed by CRLF" },
    { "*2\r\n+a\r\n@\r\n", "unknown reply type '@'" },
  }
  for _, c in ipairs(bad) do
    local ok, msg = parse(c[1])
    T.eq(ok, nil, c[1] .. " fails")
    T.eq(type(msg), "string", c[1] .. " message")
    assert(msg:find(c[2], 1, true), "'" .. msg .. "' lacks '" .. c[2] .. "'")
  end
  -- a line that never ends is refused once it is longer than 1 MiB
  local ok, msg = parse("+" .. string.rep("x", 1024 * 1024 + 1))
  T.eq(ok, nil, "long line"); assert(msg:find("longer than"), msg)
  ok, msg = parse("+" .. string.rep("x", 1000))
  T.eq(ok, nil, "short line waits"); T.eq(type(msg), "number", "waits")
end

function tests.depth_bomb_and_huge_counts()
  local ok, msg = parse(string.rep("*1\r\n", 100000) .. ":1\r\n")
  T.eq(ok, nil, "bomb refused"); assert(msg:find("nested deeper than 64", 1, true), msg)
  ok, msg = parse(string.rep("|1\r\n+a\r\n+b\r\n", 70) .. ":1\r\n")
  T.eq(ok, nil, "attribute bomb refused"); assert(msg:find("nested deeper", 1, true), msg)
  local v
  ok, v = parse(string.rep("*1\r\n", 64) .. ":1\r\n")
  T.eq(ok, true, "64 levels are fine")
  for _ = 1, 64 do v = v[1] end
  T.eq(v, 1, "innermost")
  -- A billion elements announced, two present: a wait, with nothing allocated for it.
  collectgarbage()
  local before = collectgarbage("count")
  local need
  ok, need = parse("*1000000000\r\n:1\r\n:2\r\n")
  T.eq(ok, nil, "waits"); T.eq(type(need), "number", "need")
  assert(collectgarbage("count") - before < 64, "no allocation from the header")
  ok, need = parse("$536870912\r\n")
  T.eq(ok, nil, "512 MiB bulk waits"); T.eq(need, 12 + 536870912 + 2, "its need")
  -- a large array that is all there
  local parts = { "*10000\r\n" }
  for i = 1, 10000 do parts[#parts + 1] = ":" .. i .. "\r\n" end
  ok, v = parse(table.concat(parts))
  T.eq(ok, true, "10,000 elements"); T.eq(#v, 10000, "count"); T.eq(v[10000], 10000, "last")
end

function tests.push_messages_are_skipped_unless_kept()
  local bytes = ">2\r\n+invalidate\r\n+k\r\n>1\r\n+x\r\n+OK\r\n"
  local ok, v, nxt = parse(bytes)
  T.eq(ok, true, "ok"); T.eq(v, "OK", "the reply after the pushes"); T.eq(nxt, #bytes + 1, "next")
  ok, v, nxt = parse(bytes, 1, true)
  T.eq(ok, true, "kept"); check_same(v, { "invalidate", "k" }, "push"); T.eq(nxt, 22, "next")
  ok, v = parse(">2\r\n+invalidate\r\n+k\r\n")
  T.eq(ok, nil, "only a push: wait for the reply"); T.eq(type(v), "number", "need")
end

function tests.parse_many_fills_a_table_and_resumes()
  local replies = { "+OK\r\n", "$-1\r\n", "-ERR no\r\n", ":5\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "$3\r\nxyz\r\n" }
  local all = table.concat(replies)
  -- whole
  local out = {}
  local c, nxt, got, errs, stop = parse_many(all, 1, 6, out, 0)
  T.eq(got, out, "the table given")
  T.eq(c, 6, "count"); T.eq(nxt, #all + 1, "next"); T.eq(stop, nil, "all read")
  check_same(out, { "OK", nil, false, 5, { "a", 1 }, "xyz" }, "results")
  check_same(errs, { [3] = "ERR no" }, "errors")
  -- max stops early; k offsets the indices; an errs table passed in is filled
  out = {}
  local e = {}
  c, nxt, got, errs, stop = parse_many(all, 1, 3, out, 10, e)
  T.eq(c, 3, "max"); T.eq(stop, nil, "max reached"); T.eq(errs, e, "same errs table")
  T.eq(out[11], "OK", "k offset"); T.eq(out[13], false, "error slot"); T.eq(e[13], "ERR no", "its text")
  -- split at every byte: resume from where it stopped, as skysocket.redis does
  for cut = 0, #all do
    out, errs = {}, nil
    local k, pos = 0, 1
    c, nxt, got, errs, stop = parse_many(all:sub(1, cut), pos, 6, out, k, errs)
    k, pos = k + c, nxt
    if k < 6 then
      T.eq(type(stop), "number", "cut " .. cut .. " waits")
      assert(stop > cut, "cut " .. cut .. " need " .. stop)
    end
    c, nxt, got, errs, stop = parse_many(all, pos, 6 - k, out, k, errs)
    T.eq(k + c, 6, "cut " .. cut .. " all read"); T.eq(stop, nil, "cut " .. cut .. " done")
    check_same(out, { "OK", nil, false, 5, { "a", 1 }, "xyz" }, "cut " .. cut)
    check_same(errs, { [3] = "ERR no" }, "cut " .. cut .. " errors")
  end
  -- garbage after two good replies: they are kept, then the message
  out = {}
  c, nxt, got, errs, stop = parse_many("+a\r\n+b\r\n$x\r\n", 1, 5, out, 0)
  T.eq(c, 2, "two good"); T.eq(nxt, 9, "stopped at the bad one"); T.eq(stop, "bad length in reply: $x", "message")
  T.eq(out[2], "b", "kept")
  -- no table given: one is made (and returned)
  c, nxt, got, errs, stop = parse_many("+a\r\n$1\r\nb\r\n", 1, 16, nil, 0)
  T.eq(c, 2, "two"); T.eq(type(got), "table", "made"); T.eq(got[1], "a", "1"); T.eq(got[2], "b", "2")
  T.eq(type(stop), "number", "waits for the rest")
  -- pushes do not count
  out = {}
  c = parse_many(">1\r\n+p\r\n+a\r\n>1\r\n+p\r\n+b\r\n", 1, 2, out, 0)
  T.eq(c, 2, "pushes skipped"); T.eq(out[2], "b", "second reply")
end

function tests.encode_pipelines()
  local enc = raw.resp_encode
  T.eq(enc { { "get", "k" } }, "*2\r\n$3\r\nget\r\n$1\r\nk\r\n", "one command")
  T.eq(enc { { "set", "k", "" }, { "ping" } },
    "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nping\r\n", "two commands")
  T.eq(enc { { "incrby", "k", -42 }, { "x", 7.0, 2 ^ 53 } },
    "*3\r\n$6\r\nincrby\r\n$1\r\nk\r\n$3\r\n-42\r\n*3\r\n$1\r\nx\r\n$1\r\n7\r\n$16\r\n9007199254740992\r\n",
    "integers and integral floats")
  T.eq(enc {}, "", "nothing")
  local bin = "a\0\r\n\255"
  T.eq(enc { { "set", bin, bin } }, "*3\r\n$3\r\nset\r\n$5\r\n" .. bin .. "\r\n$5\r\n" .. bin .. "\r\n", "binary")
  -- left to the caller: nil
  local refuse = { SUBSCRIBE = true }
  T.eq(enc({ { "get", "k" }, { "Subscribe", "c" } }, refuse), nil, "a refused name, any case")
  T.eq(enc({ { "subscribe", "c" } }), "*2\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n", "no refuse table")
  T.eq(enc { { "get", 1.5 } }, nil, "a float")
  T.eq(enc { { "get", 2 ^ 60 } }, nil, "a float beyond 2^53")
  T.eq(enc { { "get", {} } }, nil, "a table argument")
  T.eq(enc { { "get", true } }, nil, "a boolean")
  T.eq(enc { { 5, "k" } }, nil, "a name that is not a string")
  T.eq(enc { {} }, nil, "an empty command")
  T.eq(enc { "get" }, nil, "a command that is not a table")
  T.eq(enc { setmetatable({ "get", "k" }, {}) }, nil, "a metatable")
  T.eq(enc(setmetatable({}, { __len = function() return 1 end })), nil, "a metatable on the list")
  if math.type then
    T.eq(enc { { "get", math.maxinteger } }, "*2\r\n$3\r\nget\r\n$19\r\n9223372036854775807\r\n", "a 64-bit integer")
    T.eq(enc { { "get", math.mininteger } }, "*2\r\n$3\r\nget\r\n$20\r\n-9223372036854775808\r\n", "the smallest")
  end
  T.raises("bad argument #1 to 'resp_encode' (table expected, got string)", enc, "x")
  T.raises("bad argument #2 to 'resp_encode' (table or nil expected, got number)", enc, {}, 1)
  -- the same bytes as skysocket.redis's own encoder
  for _, c in ipairs { { "get", "k" }, { "set", "k", 123 }, { "mset", "a", "1", "b", -7 } } do
    T.eq(enc { c }, redis.command(c[1]:upper(), c[1], select(2, (table.unpack or unpack)(c))):gsub("^(%*%d+\r\n%$%d+\r\n)%u+", function(h) return h .. c[1] end), "as redis.command: " .. c[1])
  end
end

-- A fake Redis: for every chunk it reads (kept in `got` if given) it sends the next
-- scripted reply (the last one again when they run out), `step` bytes at a time.
local function fake(replies, step, got)
  local lid, _, port = assert(socket.listen("127.0.0.1", 0))
  socket.start(lid, function(id)
    socket.start(id)
    local i = 0
    while true do
      local data = socket.read(id)
      if not data then break end
      if got then got[#got + 1] = data end
      i = i + 1
      local r = replies[i] or replies[#replies]
      for p = 1, #r, step do
        socket.write(id, r:sub(p, p + step - 1))
        if step < #r then sched.sleep(0) end
      end
    end
    socket.close(id)
  end)
  return lid, port
end

function tests.pipelines_that_rust_leaves_to_lua()
  -- argument errors: the same messages as before resp_encode
  local db = redis.new { port = 1 }
  T.raises("bad argument #1 to 'pipeline' (command 2 must be an array { name, args... })",
    db.pipeline, db, { { "get", "a" }, "get" })
  T.raises("bad argument #1 to 'pipeline' (subscribe needs its own connection)",
    db.pipeline, db, { { "get", "a" }, { "subscribe", "c" } })
  T.raises("bad argument #1 to 'pipeline' (command 1: argument 1 must be a string or number, got boolean)",
    db.pipeline, db, { { "get", true } })
  T.raises("bad argument #1 to 'pipeline' (table expected, got nil)", db.pipeline, db)
  db:close()
  -- a float argument: encoded by redis.lua's own rules, sent as one write
  T.run_co(function()
    local got = {}
    local lid, port = fake({ "+OK\r\n$3\r\nabc\r\n" }, 64, got)
    local db2 = redis.new { port = port, timeout = 5000 }
    local r = db2:pipeline { { "set", "f", 1.5 }, { "get", "f" } }
    T.eq(r[1], "OK", "1"); T.eq(r[2], "abc", "2")
    T.eq(table.concat(got), "*3\r\n$3\r\nset\r\n$1\r\nf\r\n$3\r\n1.5\r\n*2\r\n$3\r\nget\r\n$1\r\nf\r\n", "bytes sent")
    -- and an empty pipeline sends nothing
    local e = db2:pipeline {}
    T.eq(e.n, 0, "empty")
    db2:close()
    socket.close(lid)
  end, 10000)
end

function tests.argument_errors()
  T.raises("bad argument #1 to 'resp_parse' (string expected, got no value)", parse)
  T.raises("bad argument #1 to 'resp_parse' (string expected, got nil)", parse, nil, 1)
  T.raises("bad argument #1 to 'resp_parse' (string expected, got number)", parse, 5)
  T.raises("bad argument #2 to 'resp_parse' (position must be >= 1)", parse, "+OK\r\n", 0)
  T.raises("bad argument #2 to 'resp_parse' (number expected, got table)", parse, "+OK\r\n", {})
  T.raises("bad argument #3 to 'resp_parse_many' (count must be >= 0)", parse_many, "", 1, -1, {}, 0)
  T.raises("bad argument #4 to 'resp_parse_many' (table or nil expected, got string)", parse_many, "", 1, 1, "x", 0)
  T.raises("bad argument #5 to 'resp_parse_many' (index must be in", parse_many, "", 1, 1, {}, -1)
  T.raises("bad argument #6 to 'resp_parse_many' (table or nil expected, got string)", parse_many, "", 1, 1, {}, 0, "x")
  -- a position past the end waits
  local ok, need = parse("+OK\r\n", 100)
  T.eq(ok, nil, "past the end"); T.eq(need, 100, "needs the buffer to reach position 100")
end

function tests.redis_client_on_hostile_and_dribbled_replies()
  T.run_co(function()
    -- one byte at a time: the client waits and reassembles
    local lid, port = fake({ "*3\r\n$5\r\nhello\r\n:42\r\n%1\r\n+k\r\n#t\r\n" }, 1)
    local db = redis.new { port = port, timeout = 5000 }
    local v = db:get("x")
    check_same(v, { "hello", 42, { k = true } }, "dribbled reply")
    db:close()
    socket.close(lid)
    -- a malformed reply drops the connection with the parser's message
    lid, port = fake({ "$abc\r\n", "+OK\r\n" }, 64)
    db = redis.new { port = port, timeout = 5000 }
    local ok, err = db:pcall("get", "x")
    T.eq(ok, false, "failed")
    T.eq(err, "skysocket.redis: protocol error from 127.0.0.1:" .. port .. ": bad length in reply: $abc", "message")
    db:close()
    socket.close(lid)
    -- a depth bomb, in a pipeline
    lid, port = fake({ string.rep("*1\r\n", 1000) }, 4096)
    db = redis.new { port = port, timeout = 5000 }
    local r, perr = db:pcall("pipeline", { { "get", "a" }, { "get", "b" } })
    T.eq(r, false, "pipeline failed")
    assert(perr:find("protocol error", 1, true) and perr:find("nested deeper than 64", 1, true), perr)
    db:close()
    socket.close(lid)
    -- a pipeline whose replies arrive three bytes at a time, with an error among them
    lid, port = fake({ "+OK\r\n-ERR bad\r\n$-1\r\n$2\r\nhi\r\n" }, 3)
    db = redis.new { port = port, timeout = 5000 }
    local res, errs = db:pipeline { { "set", "a", 1 }, { "incr", "a" }, { "get", "z" }, { "get", "b" } }
    T.eq(res.n, 4, "n"); T.eq(res[1], "OK", "1"); T.eq(res[2], false, "2 failed")
    T.eq(errs[2], "ERR bad", "its text"); T.eq(res[3], nil, "nil hole"); T.eq(res[4], "hi", "4")
    db:close()
    socket.close(lid)
  end, 15000)
end

return tests
