-- skysocket.websocket against Python's websockets (client and server), our client
-- against our server, invalid frames and their close codes, frame fuzzing, and the
-- webchat example in headless Chromium (lua5.4 only).
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local http = require "skysocket.http"
local websocket = require "skysocket.websocket"
local T = require "testlib"
local L = require "httplib"
local tests = {}

if not L.interp then return {} end
local run, ROOT = L.run, L.root

local function have_websockets()
  local r = os.execute("python3 -c 'import websockets' >/dev/null 2>&1")
  return r == true or r == 0
end

-- An echo server: /ws upgrades; "fragment-me" is answered in 3-byte frames.
local function echo_server(opts)
  local ends = {}
  local srv = assert(http.listen("127.0.0.1", 0, function(req, res)
    if req.path ~= "/ws" then return 200, "plain http\n" end
    local c, err = websocket.upgrade(req, res, opts or { protocols = { "echo" }, max_message = 2 * 1024 * 1024 })
    if not c then return end
    while true do
      local msg, kind, code = c:read()
      if not msg then ends[#ends + 1] = { err = kind, code = code }; break end
      if msg == "fragment-me" then c:send(msg, kind, 3) else c:send(msg, kind) end
    end
  end))
  return srv, ends
end

function tests.python_client_against_our_server()
  if not have_websockets() then return end
  run(function()
    local srv, ends = echo_server()
    local h = L.sh("python3 " .. ROOT .. "/tests/http/ws_client.py ws://127.0.0.1:" .. srv.port .. "/ws")
    local out, rc = h:wait(20000)
    T.eq(rc, 0, "python exit: " .. tostring(h.stderr))
    T.eq(out, "protocol echo\ntext héllo wörld\nbinary bytes True\n1MiB 1048576 True\nfragmented fragmented\n" ..
      "server-fragmented fragment-me\npong ok\nclosed 4321 done here\n", "python's view")
    while #ends < 1 do sched.sleep(10) end
    T.eq(ends[1].code, 4321, "server saw the close code")
    srv.close()
  end, 25000)
end

function tests.our_client_against_python_server()
  if not have_websockets() then return end
  run(function()
    local h = L.sh("exec python3 " .. ROOT .. "/tests/http/ws_server.py")
    local port = L.port_of(h)
    local pongs = {}
    local c = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/", { on_pong = function(p) pongs[#pongs + 1] = p end }))
    c:send("hello")
    T.eq(c:read(), "hello", "text echo")
    c:send("\0\1\2", "binary")
    local m, kind = c:read()
    T.eq(m, "\0\1\2", "binary echo"); T.eq(kind, "binary", "kind")
    local big = T.bytes(1024 * 1024, 7)
    c:send(big, "binary")
    T.eq(c:read() == big, true, "1 MiB echo")
    c:send(string.rep("x", 100000), "text", 1000) -- 100 frames
    T.eq(#c:read(), 100000, "our fragmented message")
    c:send("frag")
    T.eq(c:read(), "fragments", "python's fragmented message")
    c:ping("p")
    c:send("ping-me")
    T.eq(c:read(), "pinged", "answered the server's ping inside read")
    T.eq(pongs[1], "p", "pong for our ping")
    c:send("bye")
    local none, err, code, reason = c:read()
    T.eq(none, nil, "closed"); T.eq(err, "closed", "err")
    T.eq(code, 4001, "server's close code"); T.eq(reason, "server says bye", "reason")
    T.eq(c:send("late"), false, "send after close")
    local c2 = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/"))
    c2:send("x"); T.eq(c2:read(), "x", "second connection")
    c2:close(1000)
    T.eq(c2.close_code, 1000, "our close code")
    h:kill()
  end, 25000)
end

function tests.our_client_against_our_server_and_standalone_accept()
  run(function()
    local srv, ends = echo_server()
    local c = assert(websocket.connect("ws://localhost:" .. srv.port .. "/ws", { protocols = { "x", "echo" } }))
    T.eq(c.protocol, "echo", "subprotocol")
    c:send("fragment-me")
    T.eq(c:read(), "fragment-me", "fragmented echo")
    c:send("")
    T.eq(c:read(), "", "empty message")
    c:close(4000, "bye")
    while #ends < 1 do sched.sleep(10) end
    T.eq(ends[1].code, 4000, "server saw 4000")
    local ok, err = websocket.connect("ws://127.0.0.1:" .. srv.port .. "/plain")
    T.eq(ok, nil, "not an upgrade"); T.truthy(err:find("handshake failed", 1, true), err)
    ok, err = websocket.connect("wsx://127.0.0.1:" .. srv.port .. "/ws")
    T.eq(ok, nil, "wsx"); T.truthy(err:find("unsupported URL scheme 'wsx'", 1, true), err)
    srv.close()
    -- standalone: a plain listener, accept() does the handshake
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id)
      socket.start(id)
      local s, req = websocket.accept(id)
      if not s then return end
      s:send(req.path .. "?" .. req.query)
      local m = s:read()
      s:send(m)
      s:read()
    end)
    c = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/chat?room=1"))
    T.eq(c:read(), "/chat?room=1", "standalone accept saw the path")
    c:send("hey"); T.eq(c:read(), "hey", "standalone echo")
    c:close()
    socket.close(lid)
  end)
end

-- Raw client: handshake by hand, then write `bytes`; returns the close code the server
-- sent (nil if none) and whether the socket was closed afterwards.
local function close_code_for(port, bytes, half_close)
  local id = assert(socket.open("127.0.0.1", port))
  socket.write(id, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
  socket.settimeout(id, 5000)
  local head = socket.readline(id, "\r\n\r\n")
  T.truthy(head and head:find("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 1, true), "handshake accept value")
  socket.write(id, bytes)
  if half_close then socket.close_write(id) end
  local rest = socket.readall(id) or ""
  socket.close(id)
  local b1, b2, c1, c2 = rest:byte(1, 4)
  if b1 ~= 0x88 or b2 < 2 then return nil end
  return c1 * 256 + c2
end

local function masked(b1, payload, len_override)
  local key = "\1\2\3\4"
  local n = len_override or #payload
  local hdr
  if n < 126 then hdr = string.char(b1, 128 + n)
  elseif n < 65536 then hdr = string.char(b1, 128 + 126, math.floor(n / 256), n % 256)
  else hdr = string.char(b1, 128 + 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256) end
  return hdr .. key .. raw.ws_mask(payload, key)
end

function tests.invalid_frames_get_the_right_close_code()
  run(function()
    local srv = echo_server({ max_message = 1000 })
    local p = srv.port
    T.eq(close_code_for(p, string.char(0x81, 5) .. "hello"), 1002, "unmasked client frame")
    T.eq(close_code_for(p, masked(0x81, "bad \255 utf8")), 1007, "invalid UTF-8 text")
    T.eq(close_code_for(p, masked(0x01, "ab\195") .. masked(0x80, "\040")), 1007, "invalid UTF-8 across fragments")
    T.eq(close_code_for(p, masked(0x82, string.rep("x", 2000))), 1009, "message over max_message")
    T.eq(close_code_for(p, masked(0x82, "", 1073741824)), 1009, "1 GiB announced, nothing allocated")
    T.eq(close_code_for(p, masked(0x02, string.rep("x", 600)) .. masked(0x80, string.rep("x", 600))), 1009, "fragments over max_message")
    T.eq(close_code_for(p, masked(0x83, "x")), 1002, "reserved opcode")
    T.eq(close_code_for(p, masked(0xC1, "x")), 1002, "RSV1 without extension")
    T.eq(close_code_for(p, masked(0x80, "x")), 1002, "continuation without start")
    T.eq(close_code_for(p, masked(0x01, "a") .. masked(0x81, "b")), 1002, "new message inside a fragmented one")
    T.eq(close_code_for(p, masked(0x09, "x")), 1002, "fragmented ping")
    T.eq(close_code_for(p, masked(0x89, string.rep("x", 126))), 1002, "ping over 125 bytes")
    T.eq(close_code_for(p, masked(0x88, "\3\237")), 1002, "close code 1005 on the wire")
    T.eq(close_code_for(p, masked(0x88, "\3")), 1002, "1-byte close payload")
    T.eq(close_code_for(p, masked(0x88, "\3\232\255")), 1007, "bad UTF-8 close reason")
    T.eq(close_code_for(p, masked(0x88, "\15\160bye")), 4000, "valid close echoed")
    T.eq(close_code_for(p, masked(0x88, "")), nil, "empty close answered with an empty close")
    -- a ping is answered, and the server still serves good clients after all that
    local c = assert(websocket.connect("ws://127.0.0.1:" .. p .. "/ws"))
    c:send("still fine"); T.eq(c:read(), "still fine", "good client")
    c:close()
    srv.close()
  end)
end

function tests.fuzzed_frames_close_cleanly_with_bounded_memory()
  run(function()
    collectgarbage()
    local before = collectgarbage("count")
    local srv = echo_server({ max_message = 65536, timeout = 1000 })
    local rand = T.rng(99)
    local N, workers, done, codes = tonumber(os.getenv("SKYSOCKET_FUZZ_N")) or 10000, 10, 0, 0
    for _ = 1, workers do
      sched.fork(function()
        for _ = 1, N / workers do
          local t = {}
          local kind = rand(3)
          if kind == 1 then
            for i = 1, rand(300) do t[i] = string.char(rand(256) - 1) end
          else
            t[1] = masked(0x80 + rand(16) - 1 + (kind == 3 and 0x40 or 0), T.bytes(rand(200), rand(1000)))
            t[2] = string.char(rand(256) - 1, rand(256) - 1)
          end
          local code = close_code_for(srv.port, table.concat(t), true)
          if code then codes = codes + 1 end
        end
        done = done + 1
      end)
    end
    while done < workers do sched.sleep(20) end
    T.truthy(codes > N / 4, "many fuzzed connections got a close frame: " .. codes)
    local c = assert(websocket.connect("ws://127.0.0.1:" .. srv.port .. "/ws"))
    c:send("ok?"); T.eq(c:read(), "ok?", "still serving")
    c:close()
    srv.close()
    collectgarbage()
    T.truthy(collectgarbage("count") - before < 4096, "Lua heap bounded")
  end, 60000)
end

-- The webchat example with two WebSocket clients (every interpreter): both see the
-- join, the rename and each other's messages; the page itself is served over HTTP on
-- the same port.
function tests.webchat_two_clients_see_each_other()
  run(function()
    local port = L.free_port()
    local server = L.sh("exec " .. L.interp .. " " .. ROOT .. "/examples/webchat/server.lua " .. port)
    local a
    for _ = 1, 150 do
      a = websocket.connect("ws://127.0.0.1:" .. port .. "/chat")
      if a then break end
      sched.sleep(20)
    end
    assert(a, "webchat did not start")
    T.truthy(a:read():find("joined", 1, true), "a joined")
    local page = assert(http.get("http://127.0.0.1:" .. port .. "/", { keepalive = false }))
    T.truthy(page.body:find("new WebSocket", 1, true), "the page")
    T.eq(page.headers["content-type"], "text/html; charset=utf-8", "page type")
    local b = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/chat"))
    T.truthy(b:read():find("joined", 1, true), "b joined (b's view)")
    T.truthy(a:read():find("joined", 1, true), "b joined (a's view)")
    a:send("/nick alice")
    T.truthy(a:read():find("is now alice", 1, true), "rename (a)")
    T.truthy(b:read():find("is now alice", 1, true), "rename (b)")
    a:send("hi bob")
    T.eq(b:read(), "alice: hi bob", "b sees a")
    T.eq(a:read(), "alice: hi bob", "a sees its own line")
    b:send("hi alice")
    T.truthy(a:read():find(": hi alice$"), "a sees b")
    b:close()
    T.truthy(a:read():find("left", 1, true), "a sees b leave")
    a:close()
    server:kill()
  end)
end

-- A real browser: headless Chromium opens the webchat page, joins, says hello; a Lua
-- client in the same chat sees it and answers; the page must show the answer.
function tests.webchat_in_headless_chromium()
  if _VERSION ~= "Lua 5.4" or jit then return end
  if not (L.have("chromium") and have_websockets()) then
    if os.getenv("SKYSOCKET_REQUIRE_BROWSER") then error("chromium or python websockets missing") end
    return
  end
  run(function()
    local port = L.free_port()
    local server = L.sh("exec " .. L.interp .. " " .. ROOT .. "/examples/webchat/server.lua " .. port)
    local lua = nil
    for _ = 1, 150 do
      lua = websocket.connect("ws://127.0.0.1:" .. port .. "/chat")
      if lua then break end
      sched.sleep(20)
    end
    assert(lua, "webchat did not start")
    lua:send("/nick lua")
    local page = L.sh(string.format("python3 %s/tests/browser/cdp.py 'http://127.0.0.1:%d/?nick=browser&say=hello-from-chromium' " ..
      "\"document.getElementById('log').innerText.includes('lua: hello-from-lua')\" %s/target/webchat.png 25",
      ROOT, port, ROOT))
    local seen = false
    while true do
      local m = lua:read()
      if not m then break end
      if m == "browser: hello-from-chromium" then
        seen = true
        lua:send("hello-from-lua")
        break
      end
    end
    T.eq(seen, true, "the Lua client saw the browser's message")
    local text, rc = page:wait(30000)
    T.eq(rc, 0, "the page shows the Lua client's answer: " .. text .. tostring(page.stderr))
    T.truthy(text:find("connected", 1, true), "page status")
    lua:close()
    server:kill()
  end, 40000)
end

return tests
