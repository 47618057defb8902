-- skysocket.http: the server against curl and Python's http.client, the client against
-- Python's http.server and our own server, limits, slowloris and fuzzing.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local http = require "skysocket.http"
local T = require "testlib"
local L = require "httplib"
local tests = {}

local run = L.run
local ROOT = L.root

-- A server on a free port: handler plus opts; returns srv, table of connection ids seen.
local function server(handler, opts)
  local conns = { n = 0 }
  local srv = assert(http.listen("127.0.0.1", 0, function(req, res)
    if not conns[req.id] then conns[req.id] = true; conns.n = conns.n + 1 end
    return handler(req, res)
  end, opts))
  return srv, conns
end

local function hello(req, res)
  if req.path == "/stream" then
    res.headers["Content-Type"] = "text/plain"
    res:write("ab")
    res:write("")
    res:write("cd")
    return
  elseif req.path == "/echo" then
    local body, err = req:body()
    if not body then return 413, err end
    return 200, body, { ["X-Len"] = #body, ["X-Method"] = req.method }
  elseif req.path == "/len" then
    local n = 0
    while true do
      local piece, err = req:read()
      if piece == nil then break end
      if piece == false then return 413, err end
      n = n + #piece
    end
    return 200, tostring(n)
  end
  return 200, "hello world\n", { ["Content-Type"] = "text/plain" }
end

-- Send raw bytes on a fresh connection, half-close, read everything back.
local function exchange(port, data, half_close)
  local c = assert(socket.open("127.0.0.1", port))
  socket.write(c, data)
  if half_close ~= false then socket.close_write(c) end
  socket.settimeout(c, 5000)
  local out = socket.readall(c) or ""
  socket.close(c)
  return out
end

if not L.interp then return {} end -- needs a real interpreter to start children

function tests.curl_keepalive_and_chunked_response()
  if not L.have("curl") then return end
  run(function()
    local srv, conns = server(hello)
    local base = "http://127.0.0.1:" .. srv.port
    local out = L.sh("curl -sv -m 5 " .. base .. "/ " .. base .. "/stream " .. base .. "/")
    local body, rc = out:wait()
    T.eq(rc, 0, "curl exit")
    T.eq(body, "hello world\nabcdhello world\n", "bodies")
    T.truthy(out.stderr:find("Re-using existing connection", 1, true) or out.stderr:find("Reusing existing", 1, true), "curl reused the connection")
    T.truthy(out.stderr:find("Transfer-Encoding: chunked", 1, true), "chunked response")
    T.eq(conns.n, 1, "one connection for three requests")
    srv.close()
  end)
end

function tests.curl_chunked_upload_and_100_continue()
  if not L.have("curl") then return end
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(T.bytes(300000, 3))
  f:close()
  run(function()
    local srv = server(hello, { max_body = 1024 * 1024 })
    local url = "http://127.0.0.1:" .. srv.port
    -- chunked upload, with 100-continue
    local h = L.sh("curl -sv -m 5 -H 'Transfer-Encoding: chunked' -H 'Expect: 100-continue' --data-binary @" .. file .. " " .. url .. "/len")
    local body, rc = h:wait()
    T.eq(rc, 0, "curl exit")
    T.eq(body, "300000", "server read the chunked body")
    T.truthy(h.stderr:find("> Transfer-Encoding: chunked", 1, true), "curl sent chunked")
    T.truthy(h.stderr:find("< HTTP/1.1 100 Continue", 1, true), "100 Continue sent")
    -- Content-Length upload echoed back intact
    h = L.sh("curl -s -m 5 --data-binary @" .. file .. " " .. url .. "/echo | cmp - " .. file .. " && echo same")
    T.eq((h:wait()), "same\n", "echoed body")
    -- too large with 100-continue: 413 at once, no 100 Continue
    h = L.sh("head -c 2000000 /dev/zero | curl -sv -m 5 -H 'Expect: 100-continue' -H 'Content-Length: 2000000' --data-binary @- " .. url .. "/echo -o /dev/null -w '%{http_code}'")
    body = h:wait()
    T.eq(body, "413", "status")
    T.eq(h.stderr:find("100 Continue", 1, true), nil, "no 100 Continue for a body over the limit")
    srv.close()
  end)
  os.remove(file)
end

function tests.python_http_client_keepalive_head_and_chunked()
  run(function()
    local srv, conns = server(hello)
    local py = [[
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
out = []
for path in ("/", "/stream", "/"):
    c.request("GET", path); r = c.getresponse(); out.append("%d %s" % (r.status, r.read().decode()))
c.request("POST", "/echo", body=b"data=1"); r = c.getresponse(); out.append("%s %s" % (r.getheader("X-Method"), r.read().decode()))
c.request("HEAD", "/"); r = c.getresponse(); out.append("HEAD %s %r" % (r.getheader("Content-Length"), r.read()))
c.request("POST", "/echo", body=iter([b"ab", b"cd"]), encode_chunked=True); r = c.getresponse(); out.append(r.read().decode())
c.request("GET", "/", headers={"Connection": "close"}); r = c.getresponse(); out.append("%s %s" % (r.getheader("Connection"), r.read().decode().strip()))
print("|".join(out))
]]
    local h = L.sh("python3 -c '" .. py:gsub("'", "\"") .. "' " .. srv.port)
    local out, rc = h:wait()
    T.eq(rc, 0, "python exit: " .. tostring(h.stderr))
    T.eq(out, "200 hello world\n|200 abcd|200 hello world\n|POST data=1|HEAD 12 b''|abcd|close hello world\n", "results")
    T.eq(conns.n, 1, "one connection")
    srv.close()
  end)
end

function tests.request_heads_are_parsed_by_httparse()
  local parse = raw.http_request_head
  local m, t, v, h = parse("\r\nGET /a?b HTTP/1.1\r\nHost: x\r\nX-A:  1 \t\r\nx-a: 2\r\nEmpty:\r\nObs: caf\233")
  T.eq(m, "GET", "method"); T.eq(t, "/a?b", "target"); T.eq(v, "1.1", "version")
  T.eq(h.host, "x", "host"); T.eq(h["x-a"], "1, 2", "repeated header joined, blanks trimmed")
  T.eq(h.empty, "", "empty value"); T.eq(h.obs, "caf\233", "obs-text kept")
  -- the three ways the table is made: UTF-8 values (one call), a value that is not
  -- UTF-8 (byte strings), more than 24 lines (repeats found by look-ups)
  local big = { "GET / HTTP/1.1", "Host: x" }
  for i = 1, 30 do big[#big + 1] = "X-" .. (i % 10) .. ": v" .. i end
  for _, case in ipairs {
    { "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nB: b\r\nx-A:2 \r\nX-a: 3", "1, 2, 3", "b" },
    { "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nB: caf\233\r\nx-A:2 \r\nX-a: 3", "1, 2, 3", "caf\233" },
    { "GET / HTTP/1.1\r\nHost: x\r\nX-A: \233\r\nB: b\r\nx-A: 2", "\233, 2", "b" },
  } do
    h = select(4, parse(case[1]))
    T.eq(h["x-a"], case[2], "joined: " .. case[1]); T.eq(h.b, case[3], "b: " .. case[1])
    T.eq(h.host, "x", "host: " .. case[1])
  end
  h = select(4, parse(table.concat(big, "\r\n")))
  T.eq(h["x-3"], "v3, v13, v23", "many lines: repeats joined in order")
  T.eq(h["x-0"], "v10, v20, v30", "many lines: repeats joined in order")
  m, t, v, h = parse("OPTIONS * HTTP/1.0")
  T.eq(m, "OPTIONS", "method"); T.eq(t, "*", "asterisk form"); T.eq(v, "1.0", "1.0")
  T.eq(next(h), nil, "no headers")
  T.eq(select(2, parse("GET / HTTP/2.0\r\nHost: x")), "bad version", "HTTP/2.0")
  T.eq(select(2, parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3", 2)), "too many headers", "3 > 2")
  T.truthy(parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2", 2), "2 = 2")
  for _, bad in ipairs {
    "", "GET / HTTP/1.1\r\nHost: x\r\n folded", "GET / HTTP/1.1\r\nBad Name: x",
    "G(T / HTTP/1.1", "GET / HTTP/1.1\r\nHost: a\0b", "GET  / HTTP/1.1", "GET /\r\nHost: x",
    "GET / HTTP/1.1\r\n: novalue",
  } do
    local r, why = parse(bad)
    T.eq(r, nil, "rejected: " .. bad); T.eq(why, "bad request", "why: " .. bad)
  end
  T.raises("bad argument #1 to 'http_request_head' (string expected, got no value)", parse)
  T.raises("bad argument #2 to 'http_request_head'", parse, "GET / HTTP/1.1", -1)
end

function tests.pipelined_requests_answered_in_order()
  run(function()
    local srv = server(hello)
    local req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst" ..
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3;ext=1\r\nond\r\n0\r\n\r\n" ..
      "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "\r\nGET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    local out = exchange(srv.port, req, false)
    local bodies = {}
    for b in out:gmatch("\r\n\r\n(%w[^H]*)") do bodies[#bodies + 1] = b end
    local n = select(2, out:gsub("HTTP/1.1 200 OK", ""))
    T.eq(n, 5, "five responses: " .. out)
    T.truthy(out:find("hello world\n.-first.-second.-2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n.-hello world\n$"), "order: " .. out)
    srv.close()
  end)
end

function tests.client_against_python_http_server()
  run(function()
    local h = L.sh("exec python3 " .. ROOT .. "/tests/http/pyserver.py")
    local port = L.port_of(h)
    local base = "http://127.0.0.1:" .. port
    local r = assert(http.get(base .. "/len/100000"))
    T.eq(r.status, 200, "status")
    T.eq(#r.body, 100000, "length body")
    local peer = r.headers["x-peer-port"]
    r = assert(http.get(base .. "/chunked"))
    T.eq(r.body, "one,two,three", "chunked body")
    T.eq(r.headers["x-peer-port"], peer, "keep-alive: same connection reused")
    r = assert(http.post(base .. "/echo", "posted"))
    T.eq(r.body, "posted", "post echo"); T.eq(r.headers["x-method"], "POST", "method")
    local pieces = { "a", "bb", "ccc" }
    r = assert(http.request("PUT", base .. "/echo", { body = function() return table.remove(pieces, 1) end }))
    T.eq(r.body, "abbccc", "chunked request body")
    r = assert(http.get(base .. "/close"))
    T.eq(r.body, "until the end", "close-delimited body")
    r = assert(http.get(base .. "/missing"))
    T.eq(r.status, 404, "404")
    local ok, err = http.get(base .. "/slow", { timeout = 300 })
    T.eq(ok, nil, "timed out"); T.eq(err, "timeout", "timeout message")
    r = assert(http.get(base .. "/len/3"))
    T.eq(r.body, "xxx", "works after a timeout")
    http.close_idle()
    h:kill()
  end)
end

function tests.client_against_own_server_reuse_names_errors()
  run(function()
    local srv, conns = server(hello)
    for i = 1, 20 do
      local r = assert(http.get("http://localhost:" .. srv.port .. "/?i=" .. i))
      T.eq(r.body, "hello world\n", "body " .. i)
    end
    T.eq(conns.n, 1, "20 requests on one pooled connection")
    local r = assert(http.request("HEAD", "http://127.0.0.1:" .. srv.port .. "/"))
    T.eq(r.body, "", "HEAD has no body"); T.eq(r.headers["content-length"], "12", "HEAD length")
    r = assert(http.post("http://127.0.0.1:" .. srv.port .. "/echo", string.rep("z", 200000)))
    T.eq(#r.body, 200000, "large post")
    http.close_idle()
    srv.close()
    local port = L.free_port()
    local ok, err = http.get("http://127.0.0.1:" .. port .. "/")
    T.eq(ok, nil, "refused"); T.truthy(err, "error message")
    ok, err = http.get("ftp://127.0.0.1:" .. port .. "/")
    T.eq(ok, nil, "ftp"); T.truthy(err:find("unsupported URL scheme 'ftp'", 1, true), err)
    ok, err = http.get("not a url")
    T.eq(ok, nil, "bad url"); T.truthy(err:find("bad URL", 1, true), err)
    T.raises("bad argument #1 to 'request'", http.request, "BAD METHOD", "http://x/")
    T.raises("bad argument #3 to 'listen'", http.listen, "127.0.0.1", 0, nil)
  end)
end

function tests.limits_give_the_right_status()
  run(function()
    local srv = server(hello, { max_body = 1000, max_header = 2048, max_headers = 20, header_timeout = 300 })
    local p = srv.port
    local function status(data, half)
      return exchange(p, data, half):match("^HTTP/1.1 (%d+)")
    end
    T.eq(status("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 3000) .. "\r\n\r\n"), "431", "big header")
    local many = {}
    for i = 1, 30 do many[i] = "X-" .. i .. ": v\r\n" end
    T.eq(status("GET / HTTP/1.1\r\nHost: x\r\n" .. table.concat(many) .. "\r\n"), "431", "too many headers")
    T.eq(status("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"), "413", "1 GiB announced")
    T.eq(status("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" .. string.rep("b", 2000) .. "\r\n0\r\n\r\n"), "413", "chunked over limit")
    T.eq(status("garbage\r\n\r\n"), "400", "garbage")
    T.eq(status("GET / HTTP/1.1\r\n\r\n"), "400", "no Host")
    T.eq(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), "505", "version")
    T.eq(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), "400", "CL and TE")
    T.eq(status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), "501", "unknown TE")
    T.eq(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"), "400", "conflicting CL")
    T.eq(status("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), "400", "obs-fold")
    T.eq(status("GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n"), "417", "expectation")
    T.eq(status("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "413", "bad chunk: body error")
    -- slowloris: a head that never ends gets 408 after header_timeout
    local t0 = os.time()
    T.eq(status("GET / HTTP/1.1\r\nHost: x\r\n", false), "408", "slow head")
    T.truthy(os.time() - t0 <= 3, "408 in time")
    srv.close()
  end)
end

-- The header deadline is one timer per connection, re-armed when it fires during a
-- later wait: each wait for a head (idle keep-alive included) gets header_timeout
-- from its own start, not from the first wait's.
function tests.header_deadline_counts_from_each_wait()
  run(function()
    local srv = server(hello, { header_timeout = 400 })
    local c = assert(socket.open("127.0.0.1", srv.port))
    socket.settimeout(c, 3000)
    local function ask(i)
      socket.write(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local head = socket.readline(c, "\r\n\r\n")
      T.truthy(head and head:find("^HTTP/1.1 200"), "response " .. i)
      T.eq(socket.read(c, 12), "hello world\n", "body " .. i)
    end
    local t0 = raw.now()
    ask(1)
    -- requests 2 and 3 come 300 ms apart: past the first wait's deadline (400 ms)
    socket.sleep(300)
    ask(2)
    socket.sleep(300)
    ask(3)
    T.truthy(raw.now() - t0 >= 550, "the third request came after the first deadline")
    local t3 = raw.now()
    local d = socket.read(c)
    local idle = raw.now() - t3
    T.eq(d, false, "closed after the idle deadline, nothing sent")
    T.truthy(idle >= 330 and idle <= 2000, "closed about 400 ms after the last response: " .. idle .. " ms")
    socket.close(c)
    srv.close()
  end)
end

function tests.slowloris_half_open_heads_do_not_block_good_clients()
  run(function()
    local srv = server(hello, { header_timeout = 1500 })
    local N = 1000 -- the issue's slowloris size (2,000 descriptors in this process)
    local slow = {}
    for i = 1, N do
      slow[i] = assert(socket.open("127.0.0.1", srv.port))
      socket.write(slow[i], "GET / HTTP/1.1\r\nHost: x\r\nX-Drip: ")
    end
    local r = assert(http.get("http://127.0.0.1:" .. srv.port .. "/", { keepalive = false, timeout = 1000 }))
    T.eq(r.body, "hello world\n", "good client served during the attack")
    local got408 = 0
    for i = 1, N do
      socket.settimeout(slow[i], 5000)
      local out = socket.readall(slow[i]) or ""
      if out:find("^HTTP/1.1 408") then got408 = got408 + 1 end
      socket.close(slow[i])
    end
    T.eq(got408, N, "every half-open request got 408 and was closed")
    srv.close()
  end, 20000)
end

function tests.huge_streamed_body_against_a_limit_keeps_memory_bounded()
  if not L.have("curl") then return end
  run(function()
    collectgarbage()
    local before = collectgarbage("count")
    local srv = server(hello, { max_body = 1024 * 1024 })
    -- 1 GiB piped through curl as a chunked upload; the server stops it at 1 MiB
    local h = L.sh("head -c 1073741824 /dev/zero | curl -s -m 10 -T - -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. srv.port .. "/len")
    local code = h:wait(12000)
    T.eq(code, "413", "413 for the 1 GiB body")
    collectgarbage()
    local grown = collectgarbage("count") - before
    T.truthy(grown < 4096, "Lua heap grew by " .. grown .. " KiB")
    local r = assert(http.get("http://127.0.0.1:" .. srv.port .. "/", { keepalive = false }))
    T.eq(r.status, 200, "still serving")
    srv.close()
  end, 20000)
end

function tests.fuzzed_requests_get_an_answer_or_a_close()
  run(function()
    local srv = server(hello, { max_body = 4096, header_timeout = 2000 })
    local rand = T.rng(1234)
    local samples = {
      "GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    }
    -- the issue's 10,000 (SKYSOCKET_FUZZ_N overrides)
    local N, workers, done = tonumber(os.getenv("SKYSOCKET_FUZZ_N")) or 10000, 10, 0
    local answered, closed = 0, 0
    for _ = 1, workers do
      sched.fork(function()
        for _ = 1, N / workers do
          local s = samples[rand(#samples)]
          local kind = rand(4)
          if kind == 1 then
            s = s:sub(1, rand(#s))                    -- truncated
          elseif kind == 2 then
            local t = {}
            for i = 1, rand(200) do t[i] = string.char(rand(256) - 1) end
            s = table.concat(t)                       -- random bytes
          elseif kind == 3 then
            local i = rand(#s)
            s = s:sub(1, i - 1) .. string.char(rand(256) - 1) .. s:sub(i + 1) -- one byte flipped
          else
            local i = rand(#s)
            s = s:sub(1, i) .. s:sub(i, i + rand(40))  -- a piece repeated
          end
          local out = exchange(srv.port, s)
          if out:find("^HTTP/1%.1 %d%d%d") then answered = answered + 1 else closed = closed + 1 end
        end
        done = done + 1
      end)
    end
    while done < workers do sched.sleep(20) end
    T.eq(answered + closed, N, "every request ended")
    T.truthy(answered > N / 4, "many answered: " .. answered)
    local r = assert(http.get("http://127.0.0.1:" .. srv.port .. "/", { keepalive = false }))
    T.eq(r.body, "hello world\n", "still serving")
    srv.close()
    sched.sleep(50)
    T.truthy(raw.buffers() <= 2, "read buffers released: " .. raw.buffers())
  end, 300000)
end

function tests.handler_error_is_a_500_and_the_server_goes_on()
  run(function()
    sched.on_error(function() end) -- PUC 5.1: the handler's own coroutine reports it
    local srv = server(function(req)
      if req.path == "/boom" then
        sched.sleep(1) -- it may wait first (a coroutine of its own on PUC 5.1)
        error("handler exploded")
      end
      return 200, "fine"
    end)
    local out = exchange(srv.port, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    T.truthy(out:find("^HTTP/1.1 500"), "500: " .. out)
    local r = assert(http.get("http://127.0.0.1:" .. srv.port .. "/ok", { keepalive = false }))
    T.eq(r.body, "fine", "next request served")
    srv.close()
  end)
end

-- wrk (a real HTTP load generator; .ci/run installs it): 20 keep-alive connections for
-- one second. Every response must be a 2xx, no socket may fail, and the connections
-- must be kept alive (20 connections carry all the requests).
function tests.wrk_keepalive_load()
  if not L.have("wrk") then return end
  run(function()
    local srv, conns = server(function() return 200, "Hello, World!" end)
    local h = L.sh("wrk -t1 -c20 -d1 http://127.0.0.1:" .. srv.port .. "/")
    local out, rc = h:wait(15000)
    T.eq(rc, 0, "wrk exit: " .. tostring(h.stderr))
    local n = tonumber(out:match("(%d+) requests in"))
    T.truthy(n and n >= 200, "wrk completed requests:\n" .. out)
    T.truthy(not out:find("Non-2xx", 1, true), "only 2xx responses:\n" .. out)
    T.truthy(not out:find("Socket errors", 1, true), "no socket errors:\n" .. out)
    T.truthy(conns.n <= 20, "keep-alive: " .. conns.n .. " connections for " .. n .. " requests")
    srv.close()
  end, 20000)
end

return tests
