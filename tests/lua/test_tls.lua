-- TLS: contexts, the callback API, the coroutine API (tls_open/tls_listen/handshake/
-- starttls), failures, and real peers (openssl s_client / s_server, curl). Test
-- certificates are minted with `openssl req` into a temporary directory.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local T = require "testlib"
local tests = {}

if not raw.tls then return {} end -- a build without the tls feature

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

if not sh("command -v openssl >/dev/null 2>&1") then
  io.stderr:write("test_tls: openssl not found, TLS tests skipped\n")
  return {}
end

-- Under a real interpreter the module is a release build: bigger transfers, and
-- external peers can be spawned. In the in-process cargo run (debug) stay small.
local REAL = arg and arg[-1] ~= nil

local PKI = require "pkilib"
local pki, slurp = PKI.pki, PKI.slurp

local function server_ctx(extra)
  local p = pki()
  local o = { mode = "server", cert = p.server, key = p.server_key, alpn = { "http/1.1", "echo/1" } }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(raw.tls_context(o))
end

local function client_ctx(extra)
  local o = { ca = pki().ca, alpn = { "echo/1" } }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(raw.tls_context(o))
end

local function run(main, ms) return T.run_co(main, ms or 20000) end

---------------------------------------------------------------- contexts

function tests.context_arguments_are_checked()
  local p = pki()
  T.raises("table expected", raw.tls_context, "server")
  T.raises("unknown option 'verfy'", raw.tls_context, { verfy = false })
  T.raises("'mode'", raw.tls_context, { mode = "both" })
  T.raises("'verify' must be a boolean", raw.tls_context, { verify = "no" })
  T.raises("'alpn'", raw.tls_context, { alpn = { 1 } })
  T.raises("'min_version'", raw.tls_context, { min_version = "1.1" })
  T.raises("tls context expected", raw.tls_upgrade, 1, {})
  T.raises("tls context expected", raw.tls_connect, "127.0.0.1", 1, "ctx")
  local c, e = raw.tls_context { mode = "server" }
  T.eq(c, nil, "server without cert"); T.truthy(e:find("cert and key"), e)
  c, e = raw.tls_context { mode = "server", cert = "/nonexistent/x.pem", key = p.server_key }
  T.eq(c, nil, "missing file"); T.truthy(e:find("/nonexistent/x.pem", 1, true), e)
  c, e = raw.tls_context { mode = "server", cert = p.server, key = p.ca }
  T.eq(c, nil, "no key in a cert file"); T.truthy(e:find("key"), e)
  -- PEM text works as well as a path.
  local ctx = assert(raw.tls_context { mode = "server", cert = slurp(p.server), key = slurp(p.server_key) })
  T.truthy(tostring(ctx):find("server"), tostring(ctx))
  T.truthy(raw.tls_context { verify = false }, "verify=false client")
  T.truthy(raw.tls_context { ca = p.ca, min_version = "1.3" }, "1.3 only")
  -- Upgrading a socket that is not open, or not TLS-capable.
  local ok, msg = raw.tls_upgrade(999999, ctx)
  T.eq(ok, false, "unknown id"); T.truthy(msg, "message")
  local info, why = raw.tls_info(999999)
  T.eq(info, nil, "tls_info unknown"); T.truthy(why, "why")
end

---------------------------------------------------------------- callback API

function tests.callback_api_echo_events_and_info()
  local sctx, cctx = server_ctx(), client_ctx()
  local ev, got = {}, {}
  local lid, _, port = assert(raw.tls_listen("127.0.0.1", 0, sctx))
  local srv
  assert(raw.start(lid, {
    accept = function(_, id) srv = id; raw.start(id) end,
    handshake = function(id, alpn) ev[#ev + 1] = "srv-handshake:" .. alpn end,
    data = function(id, d) raw.send(id, d) end,
    close = function() ev[#ev + 1] = "srv-close" end,
  }))
  local cid = assert(raw.tls_connect("127.0.0.1", port, cctx, "localhost"))
  assert(raw.start(cid, {
    open = function() ev[#ev + 1] = "open" end,
    handshake = function(_, alpn) ev[#ev + 1] = "handshake:" .. alpn; raw.send(cid, "ping over tls") end,
    data = function(_, d) got[#got + 1] = d end,
  }))
  T.wait("echo", function() return table.concat(got) == "ping over tls" end)
  T.eq(ev[1], "open", "open first"); T.eq(ev[2], "handshake:echo/1", "then handshake with ALPN")
  local i = assert(raw.tls_info(cid))
  T.eq(i.mode, "client", "mode"); T.eq(i.version, "TLSv1.3", "version"); T.eq(i.alpn, "echo/1", "alpn")
  T.truthy(i.cipher:find("^TLS13_"), i.cipher)
  T.eq(i.subject, "CN=localhost, O=skysocket", "peer subject")
  T.eq(i.sans[1], "DNS:localhost", "san 1"); T.eq(i.sans[2], "IP:127.0.0.1", "san 2")
  local s = assert(raw.tls_info(srv))
  T.eq(s.mode, "server", "server mode"); T.eq(s.sni, "localhost", "sni")
  T.eq(s.handshaking, false, "done")
  T.eq(raw.tls_info(lid), nil, "listener has no session")
  local marked = {}
  for _, x in ipairs(raw.info()) do marked[x.id] = x.tls end
  T.eq(marked[lid], true, "info marks the TLS listener"); T.eq(marked[cid], true, "and sockets")
  raw.close(cid)
  T.wait("server sees the close_notify", function() return ev[#ev] == "srv-close" end)
  raw.close(lid)
end

function tests.callback_api_failures_close_only_that_socket()
  local sctx = server_ctx()
  local lid, _, port = assert(raw.tls_listen("127.0.0.1", 0, sctx))
  local srv_err = {}
  assert(raw.start(lid, {
    accept = function(_, id) raw.start(id) end,
    data = function(id, d) raw.send(id, d) end,
    error = function(id, msg) srv_err[#srv_err + 1] = msg end,
  }))
  local function try(ctx, name)
    local err
    local cid = assert(raw.tls_connect("127.0.0.1", port, ctx, name))
    raw.start(cid, { error = function(_, m) err = m end, close = function() err = "closed" end,
      open = function() err = "opened" end })
    T.wait("failure", function() return err end)
    return err
  end
  local e = try(client_ctx(), "elsewhere.example")
  T.truthy(e:find("tls: handshake failed") and e:find("not valid for name"), e)
  e = try(client_ctx { ca = pki().other }, "localhost")
  T.truthy(e:find("UnknownIssuer"), e)
  T.wait("server errors", function() return #srv_err >= 2 end)
  -- The listener still serves a good client.
  local ok = try(client_ctx(), "localhost")
  T.eq(ok, "opened", "good client after failures")
  for _, s in ipairs(raw.info()) do raw.close(s.id, true) end
end

---------------------------------------------------------------- coroutine API

local function echo_server(ctx, extra)
  local lid, _, port = assert(socket.tls_listen("127.0.0.1", 0, ctx))
  socket.start(lid, function(id)
    socket.start(id)
    local ok, err = socket.handshake(id, 5000)
    if not ok then
      if extra then extra(err) end
      socket.close(id)
      return
    end
    while true do
      local d = socket.read(id)
      if not d then break end
      socket.write(id, d)
    end
    socket.close(id)
  end)
  return lid, port
end

function tests.coroutine_tls_listen_raises_like_listen()
  local lid, port = echo_server(server_ctx())
  T.raises("Address already in use", socket.tls_listen, "127.0.0.1", port, server_ctx())
  T.raises("tls context expected", socket.tls_listen, "127.0.0.1", 0, "ctx")
  socket.close(lid)
end

function tests.coroutine_many_connections_bulk_both_ways()
  local conns = tonumber(os.getenv("TLS_CONNS") or "") or (REAL and 32 or 6)
  local size = (tonumber(os.getenv("TLS_MIB") or "") or (REAL and 4 or 0.25)) * 1024 * 1024
  run(function()
    local cctx = client_ctx()
    local lid, port = echo_server(server_ctx())
    local done, results = 0, {}
    for c = 1, conns do
      sched.fork(function()
        local id, e = socket.tls_open("127.0.0.1", port, cctx, "localhost")
        if not id then
          results[c] = "open failed: " .. tostring(e)
          done = done + 1
          return
        end
        local data = T.bytes(4096, c)
        data = string.rep(data, size / 4096)
        local rnd = T.rng(c)
        sched.fork(function()
          local pos = 1
          while pos <= #data do
            local n = rnd(65536)
            socket.write(id, data:sub(pos, pos + n - 1))
            pos = pos + n
            if rnd(4) == 1 then sched.sleep(0) end
          end
        end)
        local back = socket.read(id, #data)
        results[c] = back == data or ("got " .. tostring(back and #back))
        socket.close(id)
        done = done + 1
      end)
    end
    while done < conns do sched.sleep(10) end
    for c = 1, conns do T.eq(results[c], true, "connection " .. c .. " byte-exact") end
    socket.close(lid)
  end, 120000)
end

function tests.coroutine_starttls_after_a_plaintext_line()
  run(function()
    local sctx, cctx = server_ctx(), client_ctx()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local server_info
    socket.start(lid, function(id)
      socket.start(id)
      T.eq(socket.readline(id, "\r\n"), "STARTTLS", "command in plaintext")
      socket.write(id, "OK go ahead\r\n")
      assert(socket.starttls(id, sctx, nil, 5000))
      server_info = raw.tls_info(id)
      socket.write(id, "secret:" .. socket.readline(id, "\r\n") .. "\r\n")
      socket.close(id)
    end)
    local c = assert(socket.open("127.0.0.1", port))
    socket.write(c, "STARTTLS\r\n")
    T.eq(socket.readline(c, "\r\n"), "OK go ahead", "plaintext reply")
    assert(socket.starttls(c, cctx, "localhost", 5000))
    socket.write(c, "hello\r\n")
    T.eq(socket.readline(c, "\r\n"), "secret:hello", "protected exchange")
    T.eq(server_info.version, "TLSv1.3", "server side upgraded")
    socket.close(c)
    socket.close(lid)
  end)
end

function tests.coroutine_failures_garbage_timeout_and_bad_name()
  if T.single_state() then return end
  local old = raw.configure().tls_handshake_timeout
  raw.configure { tls_handshake_timeout = 300 }
  local ok, err = pcall(run, function()
    local errors = {}
    local lid, port = echo_server(server_ctx(), function(e) errors[#errors + 1] = e end)
    -- Plaintext to the TLS port.
    local g = assert(socket.open("127.0.0.1", port))
    socket.write(g, "GET / HTTP/1.0\r\n\r\n")
    local r = socket.readall(g)
    T.eq(r:find("HTTP", 1, true), nil, "no plaintext answer")
    socket.close(g)
    -- A silent peer: the handshake times out in the engine.
    local s = assert(socket.open("127.0.0.1", port))
    sched.sleep(500)
    socket.close(s)
    -- A bad name: tls_open fails with the reason.
    local id, why = socket.tls_open("127.0.0.1", port, client_ctx(), "wrong.example")
    T.eq(id, nil, "bad name refused")
    T.truthy(why:find("not valid for name"), why)
    while #errors < 3 do sched.sleep(10) end
    local all = table.concat(errors, "\n")
    T.truthy(all:find("handshake failed", 1, true), all)
    T.truthy(all:find("timed out after 300 ms", 1, true), all)
    -- The server still works.
    local c = assert(socket.tls_open("127.0.0.1", port, client_ctx(), "localhost"))
    socket.write(c, "still fine")
    T.eq(socket.read(c, 10), "still fine", "after failures")
    socket.close(c)
    socket.close(lid)
  end)
  T.cleanup() -- configure needs an idle engine
  assert(raw.configure { tls_handshake_timeout = old })
  T.eq(raw.configure().tls_handshake_timeout, old, "timeout restored")
  if not ok then error(err, 0) end
end

function tests.expired_server_certificate_is_refused()
  run(function()
    local p = pki()
    local errors = {}
    local lid, port = echo_server(server_ctx { cert = p.expired, key = p.expired_key },
      function(e) errors[#errors + 1] = e end)
    local id, why = socket.tls_open("127.0.0.1", port, client_ctx(), "localhost")
    T.eq(id, nil, "expired certificate refused")
    T.truthy(why:find("xpired"), why)
    while #errors < 1 do sched.sleep(10) end
    T.truthy(errors[1]:find("tls:", 1, true), errors[1])
    -- verify = false accepts it (documented as unsafe).
    local c = assert(socket.tls_open("127.0.0.1", port, raw.tls_context { verify = false }, "localhost"))
    socket.write(c, "lax")
    T.eq(socket.read(c, 3), "lax", "unverified session works")
    socket.close(c)
    socket.close(lid)
  end)
end

function tests.client_certificate_required()
  run(function()
    local p = pki()
    local errors = {}
    local lid, port = echo_server(server_ctx { ca = p.ca }, function(e) errors[#errors + 1] = e end)
    local id, why = socket.tls_open("127.0.0.1", port, client_ctx(), "localhost")
    -- TLS 1.3: the client may finish before the server rejects it; either the open
    -- fails or the first read does.
    if id then
      local r = socket.read(id)
      T.eq(r, false, "rejected client reads nothing")
      socket.close(id)
    else
      T.truthy(why, "reason")
    end
    while #errors < 1 do sched.sleep(10) end
    T.truthy(errors[1]:find("certificate", 1, true), errors[1])
    local c = assert(socket.tls_open("127.0.0.1", port,
      client_ctx { cert = p.client, key = p.client_key }, "localhost"))
    socket.write(c, "mtls")
    T.eq(socket.read(c, 4), "mtls", "with a client certificate")
    socket.close(c)
    socket.close(lid)
  end)
end

---------------------------------------------------------------- real peers

if not REAL then return tests end

local function free_port()
  local id, _, port = assert(raw.listen("127.0.0.1", 0))
  raw.close(id)
  return port
end

-- Run a shell command in the background; returns a function giving (exit code or
-- nil while running, stdout text) and a stopper.
local function background(cmd)
  local base = os.tmpname()
  sh(string.format("{ (%s) >%s.out 2>%s.err </dev/null; echo $? >%s.rc; } & echo $! >%s.pid",
    cmd, base, base, base, base))
  local function status()
    local rc = slurp(base .. ".rc")
    return rc and tonumber(rc:match("%d+")), slurp(base .. ".out") or "", slurp(base .. ".err") or ""
  end
  local function stop()
    local pid = slurp(base .. ".pid")
    if pid and pid:match("%d+") then sh("pkill -P " .. pid:match("%d+") .. " 2>/dev/null; kill " .. pid:match("%d+") .. " 2>/dev/null") end
    for _, ext in ipairs { "", ".out", ".err", ".rc", ".pid" } do os.remove(base .. ext) end
  end
  return status, stop
end

local function wait_exit(status, what)
  local rc, out, err
  for _ = 1, 1000 do
    rc, out, err = status()
    if rc then return rc, out, err end
    sched.sleep(10)
  end
  error(what .. " did not finish")
end

function tests.openssl_s_client_against_skysocket_server()
  run(function()
    local p = pki()
    -- Echo one line, then close (s_client -quiet ignores its stdin's EOF and waits
    -- for the server's close_notify).
    local lid, _, port = assert(socket.tls_listen("127.0.0.1", 0, server_ctx()))
    socket.start(lid, function(id)
      socket.start(id)
      if socket.handshake(id, 5000) then
        local line = socket.readline(id)
        if line then socket.write(id, line .. "\n") end
      end
      socket.close(id)
    end)
    local status, stop = background(string.format(
      "printf 'hello from s_client\\n' | openssl s_client -connect 127.0.0.1:%d " ..
      "-servername localhost -CAfile %s -verify_return_error -verify_hostname localhost -quiet", port, p.ca))
    local rc, out, err = wait_exit(status, "s_client")
    stop()
    T.eq(out, "hello from s_client\n", "echo through s_client (stderr: " .. err .. ")")
    T.eq(rc, 0, "s_client verified and exited cleanly")
    socket.close(lid)
  end)
end

function tests.curl_against_skysocket_https_server()
  if not sh("command -v curl >/dev/null 2>&1") then return end
  run(function()
    local p = pki()
    local lid, _, port = assert(socket.tls_listen("127.0.0.1", 0, server_ctx()))
    socket.start(lid, function(id)
      socket.start(id)
      if not socket.handshake(id, 5000) then socket.close(id); return end
      local line = socket.readline(id, "\r\n")
      repeat local h = socket.readline(id, "\r\n") until not h or h == ""
      local info = raw.tls_info(id) or {}
      local body = "hello " .. tostring(line) .. " " .. tostring(info.alpn)
      socket.write(id, "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body)
      socket.close(id)
    end)
    local status, stop = background(string.format(
      "curl -sS --http1.1 --cacert %s --resolve localhost:%d:127.0.0.1 https://localhost:%d/tls", p.ca, port, port))
    local rc, out, err = wait_exit(status, "curl")
    stop()
    T.eq(out, "hello GET /tls HTTP/1.1 http/1.1", "curl body (stderr: " .. err .. ")")
    T.eq(rc, 0, "curl exit code")
    -- curl refuses our certificate for another name: the error is on its side.
    status, stop = background(string.format(
      "curl -sS --cacert %s --resolve other.example:%d:127.0.0.1 https://other.example:%d/", p.ca, port, port))
    rc = wait_exit(status, "curl (wrong name)")
    stop()
    T.truthy(rc ~= 0, "curl must reject a certificate for another name")
    socket.close(lid)
  end)
end

function tests.skysocket_client_against_openssl_s_server()
  run(function()
    local p = pki()
    local port = free_port()
    local status, stop = background(string.format(
      "exec openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -naccept 1 -quiet", port, p.server, p.server_key))
    local id, err
    for _ = 1, 200 do
      id, err = socket.tls_open("127.0.0.1", port, client_ctx { alpn = {} }, "localhost")
      if id then break end
      sched.sleep(20)
    end
    if not id then stop(); error("cannot reach s_server: " .. tostring(err)) end
    socket.write(id, "GET / HTTP/1.0\r\n\r\n")
    local page = socket.readall(id)
    socket.close(id)
    wait_exit(status, "s_server")
    stop()
    T.truthy(page:find("HTTP/1.0 200 ok", 1, true), page:sub(1, 200))
    T.truthy(page:find("TLSv1.3", 1, true), "s_server reports the protocol")
  end)
end

function tests.skysocket_client_rejects_s_server_with_unknown_ca()
  run(function()
    local p = pki()
    local port = free_port()
    local status, stop = background(string.format(
      "exec openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -naccept 1 -quiet", port, p.rogue, p.rogue_key))
    local id, err
    for _ = 1, 200 do
      id, err = socket.tls_open("127.0.0.1", port, client_ctx(), "localhost")
      if id or (err and err:find("tls")) then break end
      sched.sleep(20)
    end
    stop()
    T.eq(id, nil, "unknown CA refused")
    T.truthy(err:find("UnknownIssuer", 1, true), err)
    local _ = status
  end)
end

-- SNI: one server context with a default certificate (localhost) and more chosen by
-- the name the client sends (a.test, *.wild.test); a verifying client gets the
-- right one for each name, and openssl s_client too.
function tests.sni_chooses_the_certificate_by_name()
  local p = pki()
  local sctx = server_ctx { sni = {
    ["a.test"] = { cert = p.a, key = p.a_key },
    ["*.wild.test"] = { cert = p.wild, key = p.wild_key },
  } }
  local cctx = client_ctx()
  local seen = {}
  local lid, _, port = assert(raw.tls_listen("127.0.0.1", 0, sctx))
  assert(raw.start(lid, {
    accept = function(_, id) raw.start(id) end,
    handshake = function(id) seen[#seen + 1] = (raw.tls_info(id) or {}).sni or "" end,
    data = function(id, d) raw.send(id, d) end,
  }))
  run(function()
    for _, case in ipairs {
      { "a.test", "CN=a.test" }, { "A.Test", "CN=a.test" }, { "x.wild.test", "CN=wild" },
      { "localhost", "CN=localhost, O=skysocket" },
    } do
      local name, subject = case[1], case[2]
      local c, why = socket.tls_open("127.0.0.1", port, cctx, name)
      T.truthy(c, name .. ": " .. tostring(why))
      T.eq(raw.tls_info(c).subject, subject, name .. ": the certificate for that name")
      socket.write(c, name)
      T.eq(socket.read(c, #name), name, name .. ": echo")
      socket.close(c)
    end
    -- A name nobody serves gets the default certificate, which does not verify for it.
    local c, why = socket.tls_open("127.0.0.1", port, cctx, "nope.test")
    T.eq(c, nil, "unknown name: the default certificate does not match")
    T.truthy(why and why:lower():find("not valid for name", 1, true) or why:find("NotValidForName", 1, true), tostring(why))
    -- Without a default certificate, a name nobody serves fails the handshake.
    local only = assert(raw.tls_context { mode = "server", sni = { ["a.test"] = { cert = p.a, key = p.a_key } } })
    local lid2, _, port2 = assert(socket.tls_listen("127.0.0.1", 0, only))
    socket.start(lid2, function(id) socket.start(id); socket.handshake(id, 2000); socket.close(id) end)
    T.truthy(socket.tls_open("127.0.0.1", port2, cctx, "a.test"), "the listed name")
    T.eq((socket.tls_open("127.0.0.1", port2, cctx, "b.test")), nil, "no certificate for b.test")
    socket.close(lid2)
  end)
  T.eq(seen[1], "a.test", "the server saw the name"); T.eq(seen[2], "a.test", "lower-cased")
  if REAL then
    -- openssl s_client asks for a.test and verifies the name (-quiet: it waits for the
    -- server's close after the echo; the loop must keep running meanwhile).
    run(function()
      local status, stop = background(string.format(
        "printf 'sni\\n' | openssl s_client -connect 127.0.0.1:%d -servername a.test -CAfile %s " ..
        "-verify_return_error -verify_hostname a.test -brief", port, p.ca))
      local rc, out, err
      for _ = 1, 300 do
        rc, out, err = status()
        if rc or (out .. err):find("sni", 1, true) then break end
        sched.sleep(10)
      end
      stop()
      T.truthy((err .. out):find("Verification: OK", 1, true), err .. out)
      T.truthy((err .. out):find("a.test", 1, true), err .. out)
    end)
  end
  raw.close(lid)
  -- Bad SNI options are reported.
  T.raises("sni['a.test'] needs cert and key", raw.tls_context, { mode = "server", sni = { ["a.test"] = { cert = p.a } } })
  local ctx, err = raw.tls_context { mode = "server", sni = { ["bad name!"] = { cert = p.a, key = p.a_key } } }
  T.eq(ctx, nil, "bad host name"); T.truthy(err:find("not a host name", 1, true), err)
  ctx, err = raw.tls_context { mode = "server", sni = { ["a.test"] = { cert = p.a, key = p.wild_key } } }
  T.eq(ctx, nil, "key of another certificate"); T.truthy(err:find("do not match", 1, true), err)
end

return tests
