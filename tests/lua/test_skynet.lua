-- The `skynet` shim (require "skysocket.skynet") and the crypt functions under it.
local raw = require "skysocket"
local T = require "testlib"
local tests = {}

local function hex(s) return raw.hexencode(s) end

function tests.crypt_known_answers()
  T.eq(hex(raw.sha1("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1")
  T.eq(hex(raw.sha1("")), "da39a3ee5e6b4b0d3255bfef95601890afd80709", "sha1 empty")
  T.eq(hex(raw.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")),
    "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9", "hmac_sha1")
  -- RFC 6455's handshake example.
  local accept = raw.base64encode(raw.sha1("dGhlIHNhbXBsZSBub25jZQ==" .. "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
  T.eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "websocket accept key")
  local bin = "\0\1\2\255binary\r\n"
  T.eq(raw.base64decode(raw.base64encode(bin)), bin, "base64 round trip")
  T.eq(raw.base64encode("f"), "Zg==", "padding")
  T.eq(raw.hexdecode(raw.hexencode(bin)), bin, "hex round trip")
  T.eq(raw.hexdecode("ABcd"), "\171\205", "hex digits of either case")
  local key = "\1\2\3\4"
  T.eq(raw.xor_str(raw.xor_str(bin, key), key), bin, "xor_str round trip")
  T.eq(raw.xor_str("\0\0\0\0\0", "ab"), "ababa", "xor_str repeats the key")
end

function tests.crypt_bad_input()
  local v, msg = raw.base64decode("not base64!")
  T.eq(v, nil, "bad base64")
  T.truthy(msg:find("invalid base64", 1, true), msg)
  v, msg = raw.hexdecode("abc")
  T.eq(v, nil, "odd hex")
  T.truthy(msg:find("odd length", 1, true), msg)
  T.eq((raw.hexdecode("zz")), nil, "non-hex digit")
  T.raises("bad argument #2 to 'xor_str' (key must not be empty)", raw.xor_str, "x", "")
  T.raises("bad argument #1 to 'sha1' (string expected, got no value)", raw.sha1)
  local a, b = raw.randomkey(), raw.randomkey()
  T.eq(#a, 8, "randomkey length")
  T.truthy(a ~= b, "two random keys differ")
end

function tests.now_is_monotonic_milliseconds()
  local t0 = raw.now()
  T.truthy(math.type == nil or math.type(t0) == "integer", "integer")
  T.settle(30)
  local dt = raw.now() - t0
  T.truthy(dt >= 25 and dt < 2000, "30 ms took " .. dt .. " ms")
end

function tests.shim_installs_the_skynet_modules()
  local skynet = require "skysocket.skynet"
  T.eq(require "skynet", skynet, "skynet")
  T.eq(require "skynet.socket", require "skysocket.socket", "skynet.socket")
  T.eq(require("skynet.crypt").sha1, raw.sha1, "skynet.crypt")
  T.eq(require("skynet.socketdriver").nodelay, raw.nodelay, "skynet.socketdriver")
  T.truthy(require("skynet.dns").resolve, "skynet.dns")
end

function tests.skynet_time_units_are_centiseconds()
  local skynet = require "skysocket.skynet"
  local slept, timed_out, order = nil, nil, {}
  local t0 = raw.now()
  skynet.start(function()
    local a = raw.now()
    skynet.sleep(5)                      -- 5 cs = 50 ms
    slept = raw.now() - a
    skynet.timeout(3, function()         -- 30 ms, in a new coroutine
      timed_out = raw.now() - t0
      order[#order + 1] = "timeout"
    end)
    order[#order + 1] = "main done"
  end)
  T.truthy(slept >= 45 and slept < 1000, "sleep(5) took " .. tostring(slept) .. " ms")
  T.truthy(timed_out and timed_out >= 75, "timeout ran after sleep + 30 ms: " .. tostring(timed_out))
  T.eq(table.concat(order, ","), "main done,timeout", "start waits for the pending timeout")
  T.truthy(math.abs(skynet.time() - os.time()) <= 2, "time() is wall-clock seconds")
  T.truthy(skynet.now() >= 0 and skynet.starttime() <= os.time(), "now/starttime")
end

function tests.skynet_wait_wakeup_and_sleep_break_with_tokens()
  local skynet = require "skysocket.skynet"
  local log = {}
  skynet.start(function()
    local sleeper = skynet.fork(function()
      log[#log + 1] = "sleep returned " .. tostring(skynet.sleep(1000))
    end)
    local token = {}
    skynet.fork(function()
      skynet.wait(token)
      log[#log + 1] = "woken by token"
    end)
    skynet.yield()
    T.eq(skynet.wakeup(sleeper), true, "wake the sleeper (its coroutine is the token)")
    T.eq(skynet.wakeup(token), true, "wake the waiter")
    T.eq(skynet.wakeup({}), false, "unknown token")
    skynet.sleep(1)
  end)
  table.sort(log)
  T.eq(table.concat(log, ";"), "sleep returned BREAK;woken by token", "order")
  T.raises("skynet.sleep: not inside a coroutine", skynet.sleep, 1)
  T.raises("bad argument #1 to 'sleep'", skynet.sleep, -1)
end

function tests.skynet_env_and_dns()
  local skynet = require "skysocket.skynet"
  skynet.setenv("skysocket_test_key", "v1")
  T.eq(skynet.getenv("skysocket_test_key"), "v1", "getenv")
  T.raises("Can't setenv exist key", skynet.setenv, "skysocket_test_key", "v2")
  T.eq(skynet.getenv("HOME"), os.getenv("HOME"), "falls back to the process environment")
  local ip, all
  skynet.start(function()
    ip, all = require("skynet.dns").resolve("localhost")
  end)
  T.eq(ip, "127.0.0.1", "dns.resolve")
  T.truthy(#all >= 1, "all addresses")
end

-- A Skynet-style echo service written only against skynet and skynet.socket.
function tests.skynet_style_echo_service()
  require "skysocket.skynet"
  local skynet = require "skynet"
  local socket = require "skynet.socket"
  local replies = {}
  skynet.start(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.start(lid, function(id)
      socket.start(id)
      while true do
        local line, why = socket.readline(id)
        if not line then
          if why and why ~= "" then skynet.error("echo service: readline failed:", why) end
          break
        end
        socket.write(id, { "echo: ", line, "\n" })
      end
      socket.close(id)
    end)
    for i = 1, 3 do
      local c = assert(socket.open("127.0.0.1", port))
      socket.write(c, "hello " .. i .. "\n")
      local line, why = socket.readline(c)
      replies[i] = line or ("readline failed: " .. tostring(why))
      socket.close(c)
    end
    socket.close(lid)
  end)
  T.eq(table.concat(replies, "|"), "echo: hello 1|echo: hello 2|echo: hello 3", "replies")
end

return tests
