-- A Rust panic never crosses into Lua or aborts the host: it becomes a Lua error with a
-- clear message, and the module keeps working. Needs the test hooks, which exist only
-- when the process runs with SKYSOCKET_TEST_HOOKS=1 (tests/run.sh sets it); without
-- them this file checks that the hooks are absent.
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

local hooked = os.getenv("SKYSOCKET_TEST_HOOKS") == "1"

local function still_works()
  local got
  local lid, port = T.listen { accept = function(_, id)
    socket.start(id, { data = function(id2, s) socket.send(id2, s) end })
  end }
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, { data = function(_, s) got = s end })
  socket.send(cid, "alive")
  T.wait("echo after the panic", function() return got == "alive" end)
  socket.close(cid)
  socket.close(lid)
end

function tests.hooks_present_only_when_asked_for()
  T.eq(socket._test_panic ~= nil, hooked, "_test_panic present")
  T.eq(socket._test_panic_raw ~= nil, hooked, "_test_panic_raw present")
end

function tests.panic_in_a_wrapped_function_is_a_lua_error()
  if not hooked then return end
  local ok, err = pcall(socket._test_panic, "function")
  T.eq(ok, false, "raised")
  T.truthy(tostring(err):find("test hook: panic in a wrapped function", 1, true), tostring(err))
  still_works()
end

function tests.panic_in_a_raw_closure_is_a_lua_error()
  if not hooked then return end
  for _ = 1, 3 do
    local ok, err = pcall(socket._test_panic_raw)
    T.eq(ok, false, "raised")
    T.truthy(tostring(err):find("skysocket internal error", 1, true), tostring(err))
    T.truthy(tostring(err):find("test hook: panic in a raw closure", 1, true), tostring(err))
  end
  still_works()
end

function tests.panic_in_the_delivery_loop_is_reported_and_delivery_goes_on()
  if not hooked then return end
  local errors, got = {}, {}
  socket.on_error(function(msg) errors[#errors + 1] = msg end)
  local lid, port = T.listen { accept = function(_, id)
    socket.start(id, { readable = function(id2, n) got[#got + 1] = socket.readn(id2, n) end })
    socket.buffered(id)
  end }
  local cid = assert(socket.connect("127.0.0.1", port))
  socket.start(cid, {})
  T.wait("accepted", function() return #socket.info() == 3 end)
  socket._test_panic("route")
  socket.send(cid, "first")
  T.wait("the panic reported", function() return #errors == 1 end)
  T.truthy(errors[1]:find("test hook: panic while routing", 1, true), errors[1])
  socket.send(cid, "second")
  T.wait("delivery goes on", function() return got[#got] == "second" end)
  socket.close(cid)
  socket.close(lid)
  still_works()
end

return tests
