-- Plain-Lua test runner: runs every test_*.lua file given on the command line (or the
-- default list), each test in a protected call, and ends with "N passed, N failed".
-- Runs on Lua 5.1, 5.3, 5.4 and LuaJIT.
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path

local T = require "testlib"
local socket = require "skysocket"

-- SKYSOCKET_TEST_SHARED=1: start (and end) one service first, so that every test runs
-- with the engine polled by the socket thread and messages coming as mail.
if os.getenv("SKYSOCKET_TEST_SHARED") == "1" then
  local service = require "skysocket.service"
  assert(service.spawn("require(\"skysocket.service\").exit()", "=shared mode"))
  T.shared = true
end

-- Files that start services run last: the first service hands the engine to the
-- socket thread for the rest of the process (a file says so with "@uses-services").
local files, last = {}, {}
for i = 1, #arg do
  local f = io.open(arg[i])
  local text = f and f:read("*a") or ""
  if f then f:close() end
  local into = text:find("@uses-services", 1, true) and last or files
  into[#into + 1] = arg[i]
end
for _, f in ipairs(last) do files[#files + 1] = f end

local passed, failed, failures = 0, 0, {}
for _, file in ipairs(files) do
  local chunk = assert(loadfile(file))
  local tests = chunk()
  local names = {}
  for name in pairs(tests) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    T.reset()
    local t0 = socket.now()
    local ok, err = xpcall(tests[name], function(e) return debug and debug.traceback(tostring(e)) or e end)
    if ok then
      ok, err = pcall(T.check_clean)
    end
    T.cleanup()
    local label = file:match("[^/]*$") .. ": " .. name
    local ms = socket.now() - t0
    if ms >= 1000 then label = label .. string.format(" (%.1f s)", ms / 1000) end -- keep the suite short
    if ok then
      passed = passed + 1
      io.write("ok     ", label, "\n")
    else
      failed = failed + 1
      failures[#failures + 1] = label .. "\n" .. tostring(err)
      io.write("FAIL   ", label, "\n")
    end
  end
end
for _, f in ipairs(failures) do io.write("\n--- ", f, "\n") end
io.write(string.format("%s (%s, %s)\n", _VERSION, jit and jit.version or "PUC", socket.backend()))
io.write(string.format("%d passed, %d failed\n", passed, failed))
-- close = true: the Lua state (and the module's engine) is freed, so leak checkers
-- see what skysocket leaves behind.
os.exit(failed == 0 and 0 or 1, true)
