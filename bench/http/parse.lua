-- Cost of parsing a request head: the Lua patterns (request line + http.parse_headers,
-- what skysocket.http used before) against raw.http_request_head (httparse, what it
-- uses now). CPU µs per head over 200,000 parses. lua bench/http/parse.lua
local raw = require "skysocket"
local http = require "skysocket.http"
local heads = {
  wrk = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080",
  browser = "GET /chat/index.html?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: keep-alive\r\nCache-Control: max-age=0\r\nsec-ch-ua: \"Chromium\";v=\"120\", \"Not?A_Brand\";v=\"8\"\r\nsec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9",
}
local parsers = {
  lua = function(head)
    local e = head:find("\r\n", 1, true)
    local m, t, v = head:sub(1, e - 1):match("^(%S+) (%S+) HTTP/(%d%.%d)$")
    return m, t, v, http.parse_headers(head, e + 2, 100)
  end,
  httparse = function(head) return raw.http_request_head(head, 100) end,
}
local N = tonumber(arg[1]) or 200000
for _, name in ipairs { "wrk", "browser" } do
  local head = heads[name]
  for _, p in ipairs { "lua", "httparse" } do
    local parse = parsers[p]
    assert(select(4, parse(head)).host, "parsed")
    local t0 = os.clock()
    for _ = 1, N do parse(head) end
    local dt = os.clock() - t0
    print(string.format("%s %-8s %4d bytes %-9s %.2f us/head", _VERSION .. (jit and " JIT" or ""),
      name, #head, p, dt / N * 1e6))
  end
end
