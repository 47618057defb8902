-- https:// and wss:// — skysocket.http and skysocket.websocket over the TLS layer:
-- our client against our server, curl against our server, verification by default,
-- keep-alive reuse of TLS connections, and WebSocket messages over TLS.
local raw = require "skysocket"
local http = require "skysocket.http"
local websocket = require "skysocket.websocket"
local T = require "testlib"
local L = require "httplib"
local PKI = require "pkilib"
local tests = {}

if not raw.tls then return {} end -- a build without the tls feature
if not PKI.available() then
  io.stderr:write("test_https: openssl not found, tests skipped\n")
  return {}
end

local run = L.run

local function server_ctx()
  local p = PKI.pki()
  return assert(raw.tls_context { mode = "server", cert = p.server, key = p.server_key, alpn = "http/1.1" })
end

local function client_ctx()
  return assert(raw.tls_context { ca = PKI.pki().ca, alpn = "http/1.1" })
end

-- An https server on a free port; counts distinct connections.
local function server(handler)
  local conns = { n = 0 }
  local srv = assert(http.listen("127.0.0.1", 0, function(req, res)
    if not conns[req.id] then conns[req.id] = true; conns.n = conns.n + 1 end
    return handler(req, res)
  end, { tls = server_ctx() }))
  return srv, conns
end

local function echo(req)
  if req.path == "/echo" then
    local body = req:body()
    return 200, body, { ["X-Tls"] = raw.tls_info(req.id).version }
  end
  return 200, "hello over tls\n"
end

function tests.https_client_and_server_keep_alive()
  run(function()
    local srv, conns = server(echo)
    local ctx = client_ctx()
    local url = "https://127.0.0.1:" .. srv.port
    local res = assert(http.request("GET", url .. "/", { tls = ctx }))
    T.eq(res.status, 200, "status")
    T.eq(res.body, "hello over tls\n", "body")
    local big = T.bytes(200000, 7)
    res = assert(http.request("POST", url .. "/echo", { tls = ctx, body = big }))
    T.eq(res.body, big, "200 kB body echoed byte-exact over TLS")
    T.truthy(res.headers["x-tls"]:find("TLS"), res.headers["x-tls"])
    T.eq(conns.n, 1, "the TLS connection was kept alive and reused")
    -- the name verified is the host unless server_name says otherwise
    res = assert(http.request("GET", "https://localhost:" .. srv.port .. "/", { tls = ctx }))
    T.eq(res.status, 200, "by name")
    http.close_idle()
    srv.close()
  end)
end

function tests.https_verifies_certificates_by_default()
  run(function()
    local srv = server(echo)
    -- the default context trusts the system store only: our test CA is unknown
    local res, err = http.get("https://127.0.0.1:" .. srv.port .. "/")
    T.eq(res, nil, "self-signed server refused")
    T.truthy(tostring(err):find("certificate") or tostring(err):find("Unknown"), err)
    -- a trusted CA but the wrong name
    res, err = http.request("GET", "https://127.0.0.1:" .. srv.port .. "/",
      { tls = client_ctx(), server_name = "not-this-host.example" })
    T.eq(res, nil, "name mismatch refused")
    T.truthy(err, "error message")
    -- a plain-text client against the TLS port gets no HTTP answer
    res = http.get("http://127.0.0.1:" .. srv.port .. "/", { timeout = 2000 })
    T.eq(res, nil, "plain http to a TLS port")
    srv.close()
  end)
end

function tests.curl_against_the_https_server()
  if not L.have("curl") then return end
  run(function()
    local srv = server(echo)
    local base = "https://localhost:" .. srv.port
    local h = L.sh("curl -sv -m 5 --cacert " .. PKI.pki().ca .. " --resolve localhost:" .. srv.port
      .. ":127.0.0.1 " .. base .. "/ " .. base .. "/")
    local body, rc = h:wait()
    T.eq(rc, 0, "curl exit: " .. tostring(h.stderr))
    T.eq(body, "hello over tls\nhello over tls\n", "bodies")
    T.truthy(h.stderr:find("SSL certificate verify ok", 1, true) or h.stderr:find("SSL connection using", 1, true), "curl verified TLS")
    -- curl without our CA refuses the server
    h = L.sh("curl -s -m 5 " .. base .. "/ --resolve localhost:" .. srv.port .. ":127.0.0.1")
    local _, rc2 = h:wait()
    T.truthy(rc2 ~= 0, "curl without the CA fails")
    srv.close()
  end)
end

function tests.wss_messages_round_trip()
  run(function()
    local srv = server(function(req, res)
      local conn = websocket.upgrade(req, res)
      if not conn then return end
      while true do
        local msg, kind = conn:read()
        if not msg then break end
        conn:send(msg, kind)
      end
    end)
    local conn = assert(websocket.connect("wss://127.0.0.1:" .. srv.port .. "/ws", { tls = client_ctx() }))
    conn:send("hello wss")
    local msg, kind = conn:read()
    T.eq(msg, "hello wss", "text echoed")
    T.eq(kind, "text", "kind")
    local blob = T.bytes(1024 * 1024, 11)
    conn:send(blob, "binary")
    msg, kind = conn:read()
    T.eq(#msg, #blob, "1 MiB binary length")
    T.eq(msg == blob, true, "1 MiB binary echoed byte-exact")
    T.eq(kind, "binary", "binary kind")
    conn:close(1000, "done")
    -- wss verifies by default too
    local c2, err = websocket.connect("wss://127.0.0.1:" .. srv.port .. "/ws")
    T.eq(c2, nil, "unverified wss refused")
    T.truthy(tostring(err):find("certificate") or tostring(err):find("Unknown"), err)
    srv.close()
  end, 30000)
end

return tests
