-- skysocket.redis against a real redis-server (Debian's package), started per test on a
-- free loopback port (tests/lua/redislib.lua) and stopped afterwards.
local raw = require "skysocket"
local sched = require "skysocket.sched"
local channel = require "skysocket.channel"
local redis = require "skysocket.redis"
local compat = require "skysocket.compat"
local T = require "testlib"
local R = require "redislib"
local tests = {}

assert(R.available(), "redis-server and redis-cli are needed (Debian: apt-get install redis-server redis-tools)")

-- Run main under the scheduler with a watchdog; errors in any coroutine fail the test.
local function run(main, ms)
  local timed_out, errors = false, {}
  sched.on_error(function(e)
    errors[#errors + 1] = e
    sched.exit()
  end)
  local wd = raw.timeout(ms or 15000, function() timed_out = true; sched.exit() end)
  local r = compat.pack(sched.run(main))
  raw.cancel_timeout(wd)
  sched.on_error(nil)
  if #errors > 0 then error(errors[1], 2) end
  if timed_out then error("test timed out", 2) end
  if not r[1] then error(tostring(r[2]), 2) end
  return compat.unpack(r, 2, r.n)
end

-- Expect db:pcall(...) to fail with a message containing `pattern`.
local function fails(pattern, ok, err)
  T.eq(ok, false, "failure expected")
  assert(type(err) == "string" and err:find(pattern, 1, true), "error '" .. tostring(err) .. "' lacks '" .. pattern .. "'")
  return err
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t) .. "\r\n\0\r\n$-1\r\n"
end

function tests.every_reply_type_round_trips()
  R.with({}, function(srv)
    run(function()
      local db = redis.new { port = srv.port, timeout = 5000 }
      -- status
      T.eq(db:ping(), "PONG", "status")
      T.eq(db:set("k", "v"), "OK", "status OK")
      -- error: the server's text, raised (5.2+/LuaJIT: pcall can wrap a yielding call)
      db:set("str", "abc")
      fails("ERR value is not an integer", db:pcall("incr", "str"))
      fails("WRONGTYPE", db:pcall("lpush", "str", "x"))
      fails("ERR unknown command", db:pcall("nosuchcommand", "x"))
      if channel.pcall_yields then
        local ok, err = pcall(db.incr, db, "str")
        T.eq(ok, false, "raised")
        T.eq(err, "ERR value is not an integer or out of range", "the server's text, unchanged")
      end
      -- integer (negative, and 64-bit)
      T.eq(db:incr("n"), 1, "integer")
      T.eq(db:decrby("n", 11), -10, "negative integer")
      T.eq(db:incrby("big", 2 ^ 40), 2 ^ 40, "large integer")
      -- bulk: binary, empty, nil, large
      local bin = all_bytes()
      db:set("bin", bin)
      T.eq(db:get("bin"), bin, "binary bulk")
      db:set("empty", "")
      T.eq(db:get("empty"), "", "empty bulk")
      T.eq(db:get("missing"), nil, "nil bulk")
      T.eq(select("#", db:get("missing")), 1, "nil is one value")
      local big = T.bytes(3 * 1024 * 1024 + 7, 3)
      db:set("big", big)
      T.eq(db:get("big") == big, true, "3 MiB bulk")
      db:set(bin, "binary key")
      T.eq(db:get(bin), "binary key", "binary key")
      -- numbers as arguments
      db:set("num", 42)
      T.eq(db:get("num"), "42", "integer argument")
      db:set("flt", 1.5)
      T.eq(db:get("flt"), "1.5", "float argument")
      -- arrays: plain, with nil elements, empty, nil array, nested, with errors
      db:rpush("list", "a", "", bin)
      local l = db:lrange("list", 0, -1)
      T.eq(#l, 3, "array length"); T.eq(l[1], "a", "el 1"); T.eq(l[2], "", "el 2"); T.eq(l[3], bin, "el 3")
      local m = db:mget("k", "missing", "empty")
      T.eq(m[1], "v", "mget 1"); T.eq(m[2], false, "nil element is false"); T.eq(m[3], "", "mget 3")
      T.eq(#db:lrange("nolist", 0, -1), 0, "empty array")
      T.eq(db:blpop("nolist", "0.01"), nil, "nil array")
      db:multi()
      T.eq(db:incr("n"), "QUEUED", "queued")
      T.eq(db:lrange("list", 0, 0), "QUEUED", "queued 2")
      T.eq(db:incr("str"), "QUEUED", "queued 3")
      local ex = db:exec()
      T.eq(ex[1], -9, "exec integer")
      T.eq(type(ex[2]), "table", "nested array"); T.eq(ex[2][1], "a", "nested element")
      T.eq(type(ex[3]), "table", "error element")
      assert(ex[3].err:find("ERR value is not an integer", 1, true), ex[3].err)
      local nested = db:eval("return {1, {2, {'x', 'y'}}, 'z'}", 0)
      T.eq(nested[1], 1, "eval 1"); T.eq(nested[2][1], 2, "eval 2.1")
      T.eq(nested[2][2][2], "y", "eval 2.2.2"); T.eq(nested[3], "z", "eval 3")
      -- table arguments are spread; names are case-insensitive
      T.eq(db:del { "k", "empty" }, 2, "table argument")
      T.eq(db:EXISTS("k"), 0, "upper-case name")
      -- pipelines
      local r, errs = db:pipeline { { "set", "p", "1" }, { "incr", "p" }, { "get", "nope" }, { "incr", "str" }, { "get", "p" } }
      T.eq(r.n, 5, "pipeline n"); T.eq(r[1], "OK", "p1"); T.eq(r[2], 2, "p2"); T.eq(r[3], nil, "p3 nil")
      T.eq(r[4], false, "p4 failed"); assert(errs[4]:find("not an integer", 1, true), "p4 error text")
      T.eq(r[5], "2", "p5"); T.eq(errs[1], nil, "only the failed one")
      -- argument errors raise in luaL_argerror style
      T.raises("bad argument #2 to 'set' (string or number expected, got boolean)", db.set, db, "k", true)
      T.raises("bad argument #1 to 'pipeline'", db.pipeline, db, { "get" })
      T.raises("needs its own connection", db.subscribe, db, "ch")
      db:close()
      fails("channel closed", db:pcall("ping"))
    end)
  end)
end

function tests.resp3_types()
  R.with({}, function(srv)
    run(function()
      local db = redis.new { port = srv.port, resp = 3 }
      db:hset("h", "a", "1", "b", "2")
      local h = db:hgetall("h")
      T.eq(h.a, "1", "map a"); T.eq(h.b, "2", "map b")
      db:sadd("s", "x", "y")
      local set = db:smembers("s")
      T.eq(#set, 2, "set")
      db:zadd("z", "1.5", "m")
      T.eq(db:zscore("z", "m"), 1.5, "double")
      T.eq(db:get("missing"), nil, "null")
      T.eq(db:eval("redis.setresp(3); return true", 0), true, "boolean true")
      T.eq(db:eval("redis.setresp(3); return false", 0), false, "boolean false")
      T.eq(db:exists("h"), 1, "integer")
      fails("ERR value is not an integer", db:pcall("hincrby", "h", "a", "x"))
      T.eq(db:ping(), "PONG", "status")
      db:close()
    end)
  end)
end

function tests.one_hundred_coroutines_pipelining_1000_incrs_each()
  R.with({}, function(srv)
    run(function()
      local db = redis.new { port = srv.port, timeout = 10000 }
      local N, M = 100, 1000
      local done, wrong = 0, 0
      for i = 1, N do
        sched.fork(function()
          local key = "c:" .. i
          for j = 1, M do
            local v = db:incr(key)
            if v ~= j then wrong = wrong + 1 end
            if j % 100 == 0 then
              -- a pipeline in the middle of the stream gets its own replies too
              local r = db:pipeline { { "incr", "total" }, { "get", key } }
              if r[2] ~= tostring(j) then wrong = wrong + 1 end
            end
          end
          done = done + 1
        end)
      end
      while done < N do sched.sleep(10) end
      T.eq(wrong, 0, "every caller got its own reply")
      T.eq(db:get("total"), string.format("%d", N * M / 100), "shared counter exact")
      local keys = {}
      for i = 1, N do keys[i] = "c:" .. i end
      local vals = db:mget(keys)
      for i = 1, N do T.eq(vals[i], tostring(M), "final count of c:" .. i) end
      db:close()
    end, 60000)
  end)
end

function tests.kill_and_restart_mid_load_with_requirepass()
  R.with({ password = "s3cret" }, function(srv)
    local counts = { ok = 0, lost = 0, refused = 0, other = {} }
    run(function()
      local db = redis.new { port = srv.port, password = "s3cret", timeout = 3000,
        backoff_min = 20, backoff_max = 200 }
      T.eq(db:ping(), "PONG", "authenticated")
      local phase = "before"
      local finished, after_ok = 0, 0
      local W = 20
      for i = 1, W do
        sched.fork(function()
          local mine = 0
          while true do
            local ok, v = db:pcall("incr", "w" .. i)
            if ok then
              counts.ok = counts.ok + 1
              if phase == "restarted" then
                mine = mine + 1
                after_ok = after_ok + 1
                -- the restarted server starts empty: our count starts again at 1
                if mine == 1 then assert(v == 1, "fresh counter, got " .. tostring(v)) end
                if mine >= 50 then break end
              end
            elseif v:find("connection to 127.0.0.1:" .. srv.port .. " lost", 1, true) then
              counts.lost = counts.lost + 1
            elseif v:find("connect to 127.0.0.1:" .. srv.port .. " failed", 1, true) then
              counts.refused = counts.refused + 1
              sched.sleep(5)
            else
              counts.other[#counts.other + 1] = v
              sched.sleep(5)
            end
          end
          finished = finished + 1
        end)
      end
      sched.sleep(150) -- under load
      assert(counts.ok > 100, "load is running: " .. counts.ok)
      srv:kill()
      phase = "down"
      sched.sleep(150)
      srv:launch() -- same port, same requirepass, empty data
      phase = "restarted"
      while finished < W do sched.sleep(10) end
      T.eq(after_ok, W * 50, "requests after the restart succeed")
      -- AUTH was replayed: the restarted server refuses unauthenticated clients
      assert(srv:cli("--no-auth-warning -a wrong ping"):find("WRONGPASS", 1, true) or
        srv:cli("--no-auth-warning -a wrong ping"):find("invalid", 1, true), "server requires auth")
      T.eq(db:get("w1"), "50", "state after the restart")
      db:close()
    end, 30000)
    -- With the engine shared, the socket thread reads the answers to the requests in
    -- flight while the root waits for `kill -9`, so often none is left to lose.
    if not T.single_state() then
      assert(counts.lost >= 1, "in-flight requests failed with 'connection lost' (" .. counts.lost .. ")")
    end
    T.eq(#counts.other, 0, "no other error: " .. tostring(counts.other[1]))
  end)
end

function tests.wrong_password_fails_the_handshake_clearly()
  R.with({ password = "right" }, function(srv)
    run(function()
      local db = redis.new { port = srv.port, password = "wrong", backoff_min = 10 }
      local err = fails("handshake with 127.0.0.1:" .. srv.port .. " failed", db:pcall("ping"))
      assert(err:find("WRONGPASS", 1, true) or err:find("invalid", 1, true), err)
      db:close()
      local nopw = redis.new { port = srv.port }
      fails("NOAUTH", nopw:pcall("ping"))
      nopw:close()
    end)
  end)
end

function tests.select_is_replayed_with_the_handshake()
  R.with({}, function(srv)
    run(function()
      local db = redis.new { port = srv.port, db = 3, backoff_min = 10 }
      db:set("where", "three")
      T.eq(srv:cli("-n 3 get where"), "three\n", "written to db 3")
      T.eq(srv:cli("-n 0 exists where"), "0\n", "not to db 0")
      -- drop the connection from the server side: the next command reconnects into db 3
      T.eq(srv:cli("client kill type normal"):match("%d+") ~= nil, true, "killed")
      local ok, v
      for _ = 1, 3 do
        ok, v = db:pcall("get", "where")
        if ok then break end
      end
      T.eq(v, "three", "db 3 after the reconnect")
      db:close()
    end)
  end)
end

function tests.pubsub_receives_10000_messages_from_redis_cli()
  R.with({ password = "pw" }, function(srv)
    local file = srv.dir .. "/publish.txt"
    local f = assert(io.open(file, "w"))
    for i = 1, 10000 do f:write("PUBLISH news m", i, "\n") end
    f:write("PUBLISH alerts.fire hot\n")
    f:close()
    run(function()
      local sub = redis.subscriber { port = srv.port, password = "pw" }
      assert(sub:subscribe("news"))
      assert(sub:psubscribe("alerts.*"))
      local k, name, count = sub:message(2000)
      T.eq(k, "subscribe", "confirmation"); T.eq(name, "news", "channel"); T.eq(count, 1, "count")
      k, name, count = sub:message(2000)
      T.eq(k, "psubscribe", "pattern confirmation"); T.eq(name, "alerts.*", "pattern")
      T.eq(select(2, sub:message(50)), "timeout", "nothing yet")
      assert(R.sh(string.format("(redis-cli -h 127.0.0.1 -p %d -a pw --no-auth-warning < %s > %s/cli.out 2>&1 &)",
        srv.port, file, srv.dir)), "redis-cli started")
      for i = 1, 10000 do
        local kind, ch, payload = sub:message(5000)
        if kind ~= "message" or ch ~= "news" or payload ~= "m" .. i then
          error(string.format("message %d: %s %s %s", i, tostring(kind), tostring(ch), tostring(payload)))
        end
      end
      local kind, pat, ch, payload = sub:message(5000)
      T.eq(kind, "pmessage", "pattern message"); T.eq(pat, "alerts.*", "pattern")
      T.eq(ch, "alerts.fire", "pattern channel"); T.eq(payload, "hot", "pattern payload")
      assert(sub:unsubscribe("news"))
      k, name, count = sub:message(2000)
      T.eq(k, "unsubscribe", "unsubscribed"); T.eq(name, "news", "from news"); T.eq(count, 1, "one pattern left")
      assert(sub:punsubscribe())
      k, name, count = sub:message(2000)
      T.eq(k, "punsubscribe", "punsubscribed"); T.eq(count, 0, "nothing left")
      -- a publish now reaches nobody
      T.eq(srv:cli("publish news late"), "0\n", "no subscriber left")
      sub:close()
    end, 30000)
  end)
end

function tests.subscriber_resubscribes_after_a_drop()
  R.with({}, function(srv)
    run(function()
      local sub = redis.subscriber { port = srv.port }
      assert(sub:subscribe("a", "b"))
      T.eq(sub:message(2000), "subscribe", "a"); T.eq(sub:message(2000), "subscribe", "b")
      srv:cli("client kill type pubsub")
      local r, err = sub:message(2000)
      T.eq(r, nil, "drop seen"); assert(err:find("lost", 1, true), err)
      -- the next call reconnects and subscribes to both again
      T.eq(sub:message(2000), "subscribe", "a again"); T.eq(sub:message(2000), "subscribe", "b again")
      srv:cli("publish b hello")
      local k, ch, p = sub:message(2000)
      T.eq(k, "message", "message"); T.eq(ch, "b", "b"); T.eq(p, "hello", "payload")
      sub:close()
    end)
  end)
end

-- Redis over TLS (redis-server --tls-port): the client verifies the server against a
-- private CA; pipelined commands, pub/sub and the failure without the CA.
local PKI = require "pkilib"
function tests.redis_over_tls()
  if not raw.tls or not PKI.available() then return end
  local p = PKI.pki()
  R.with({ password = "pw", tls = { cert = p.server, key = p.server_key, ca = p.ca } }, function(srv)
    T.eq(srv:cli("ping"), "PONG\n", "redis-cli over TLS")
    run(function()
      local ctx = assert(raw.tls_context { ca = p.ca })
      local db = redis.new { port = srv.port, password = "pw", tls = ctx }
      T.eq(db:set("k", all_bytes()), "OK", "set over TLS")
      T.eq(db:get("k"), all_bytes(), "binary-safe get over TLS")
      -- 50 coroutines pipelining over the one TLS connection
      local done = 0
      for _ = 1, 50 do
        sched.fork(function()
          for _ = 1, 20 do assert(db:incr("n")) end
          done = done + 1
        end)
      end
      while done < 50 do sched.sleep(5) end
      T.eq(db:get("n"), "1000", "1000 pipelined INCRs")
      -- pub/sub over TLS
      local sub = redis.subscriber { port = srv.port, password = "pw", tls = ctx }
      assert(sub:subscribe("ch"))
      T.eq(sub:message(2000), "subscribe", "subscribed")
      T.eq(db:publish("ch", "over tls"), 1, "one subscriber")
      local k, ch, payload = sub:message(2000)
      T.eq(k, "message", "message"); T.eq(ch, "ch", "channel"); T.eq(payload, "over tls", "payload")
      sub:close()
      db:close()
      -- tls = true verifies against the system store: our private CA is refused
      local bad = redis.new { port = srv.port, password = "pw", tls = true, connect_timeout = 2000 }
      local ok, err = bad:pcall("PING")
      T.eq(ok, false, "unknown CA refused")
      assert(err:find("certificate", 1, true) or err:find("Unknown", 1, true), err)
      bad:close()
    end, 30000)
  end)
end

function tests.timeout_against_a_stopped_server_then_recovery()
  R.with({}, function(srv)
    run(function()
      local db = redis.new { port = srv.port, timeout = 200 }
      db:set("a", "1"); db:set("b", "2")
      srv:stop_signal()
      local fired = false
      local guard = raw.timeout(1500, function() fired = true end)
      local ok, err = db:pcall("get", "a")
      raw.cancel_timeout(guard)
      T.eq(fired, false, "gave up within the bound")
      fails("skysocket.redis: timeout", ok, err)
      -- a longer per-call bound: pcall with an explicit timeout via the channel
      local ok2, err2 = db.ch:request(redis.command("GET", "get", "b"), redis.read_reply, 100)
      T.eq(ok2, nil, "channel timeout"); T.eq(err2, "timeout", "channel message")
      srv:cont_signal()
      -- the late replies of the timed-out requests are discarded: no caller gets another's
      T.eq(db:get("b"), "2", "own reply after the server resumed")
      T.eq(db:get("a"), "1", "and again")
      db:close()
    end)
  end)
end

return tests
