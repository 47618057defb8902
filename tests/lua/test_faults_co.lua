-- Fault suite, coroutine layer: no loss, no reorder through skysocket.socket, and a fuzz
-- of every function of the coroutine module. 10 connections move 8 MiB in random chunks
-- (SKYSOCKET_FAULT_MIB sets the total); the server reads with random read(id, n) /
-- read(id) / readline mixes and random sleeps, the clients write with random pauses.
local raw = require "skysocket"
local socket = require "skysocket.socket"
local sched = require "skysocket.sched"
local compat = require "skysocket.compat"
local T = require "testlib"
local tests = {}

local CONNS = 10
local TOTAL = (tonumber(os.getenv("SKYSOCKET_FAULT_MIB") or "") or 8) * 1024 * 1024

local rand = T.rng(777)

local function run(main, ms)
  local timed_out, errors = false, {}
  sched.on_error(function(e)
    errors[#errors + 1] = e
    sched.exit() -- a failed coroutine fails the test at once
  end)
  local wd = raw.timeout(ms or 30000, function()
    timed_out = true
    for _, i in ipairs(raw.info()) do
      io.stderr:write(string.format("  open at timeout: %d %s read=%d write=%d queued=%d paused=%s unread=%s\n",
        i.id, i.state, i.read, i.write, i.wbuffer, tostring(i.paused), tostring(raw.unread(i.id))))
    end
    sched.exit()
  end)
  local r = compat.pack(sched.run(main))
  raw.cancel_timeout(wd)
  sched.on_error(nil)
  if #errors > 0 then error(errors[1], 2) end
  if timed_out then error("test timed out", 2) end
  if not r[1] then error(tostring(r[2]), 2) end
end

function tests.no_loss_no_reorder_through_the_coroutine_layer()
  local per_conn = math.floor(TOTAL / CONNS)
  local pattern = T.bytes(65536 + 13, 5)
  local plen = #pattern
  local function piece(c, pos, n)
    local start = (pos + 97 * c) % plen
    n = math.min(n, plen - start)
    return pattern:sub(start + 1, start + n)
  end
  local echoed, sleeps, reads = 0, 0, 0
  run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    -- Server: echo back whatever it reads, reading in random ways.
    socket.start(lid, function(id)
      socket.start(id)
      socket.keepopen(id) -- the client half-closes; the rest is echoed after its FIN
      while true do
        local d
        local how = rand(3)
        if how == 1 then
          local rest
          d, rest = socket.read(id, rand(40000))
          if d == false then
            -- The client half-closed: echo what is left and finish.
            if rest and #rest > 0 then socket.write(id, rest) end
            break
          end
        elseif how == 2 then
          d = socket.read(id)
          if not d then break end
        else
          d = socket.read(id, 1)
          if not d then break end
        end
        reads = reads + 1
        socket.write(id, d)
        if rand(50) == 1 then sleeps = sleeps + 1; socket.sleep(rand(3)) end
      end
      socket.close(id)
    end)
    local done = 0
    for c = 1, CONNS do
      socket.fork(function()
        local id = assert(socket.open("127.0.0.1", port))
        -- Writer: random chunks with random pauses.
        socket.fork(function()
          local pos = 0
          while pos < per_conn do
            local n = math.min(rand(20000), per_conn - pos)
            local chunk = piece(c, pos, n)
            socket.write(id, chunk)
            pos = pos + #chunk
            if rand(20) == 1 then socket.sleep(rand(3)) end
          end
          socket.close_write(id) -- lets a server blocked in read(id, n) finish
        end)
        -- Reader: check every byte in order.
        local pos = 0
        while pos < per_conn do
          local d = socket.read(id)
          assert(d, "connection closed early")
          local parts, have = {}, 0
          while have < #d do
            local p = piece(c, pos + have, #d - have)
            parts[#parts + 1] = p
            have = have + #p
          end
          local want = table.concat(parts)
          if d ~= want then error(string.format("conn %d: bytes differ at %d", c, pos)) end
          pos = pos + #d
          echoed = echoed + #d
        end
        socket.close(id)
        done = done + 1
        if done == CONNS then socket.close(lid) end
      end)
    end
  end, 60000)
  T.eq(echoed, per_conn * CONNS, "bytes echoed")
  io.write(string.format("  faults (coroutine): %d conns, %d bytes echoed byte-exact, %d server reads, %d server sleeps\n",
    CONNS, echoed, reads, sleeps))
end

-- Junk values for the fuzz: every call must return or raise a string error that is not
-- an internal Lua error ("attempt to ...").
local JUNK = { nil, true, false, 0, -1, 1.5, 0/0, math.huge, -math.huge, 2^53, -2^63,
  "", "x", string.rep("\0\255", 1024), {}, function() end, 123456789 }

function tests.fuzz_every_coroutine_function()
  local calls, raised = 0, 0
  -- bind(0)/stdin() would adopt the runner's own stdin and make it non-blocking (a
  -- flag of the terminal's open file): their checks have tests of their own.
  local skip = { run = true, exit = true, sleep = true, fork = true, sched = true,
    bind = true, stdin = true }
  if _VERSION == "Lua 5.1" and not jit then
    -- PUC Lua 5.1 cannot yield across pcall: functions that wait are not fuzzed there.
    for _, name in ipairs { "open", "read", "readline", "readall", "block", "close", "readframe" } do
      skip[name] = true
    end
  end
  run(function()
    socket.default_timeout(50)
    local names = {}
    for name, f in pairs(socket) do
      if type(f) == "function" and not skip[name] then names[#names + 1] = name end
    end
    table.sort(names)
    local njunk = 17
    for _, name in ipairs(names) do
      for i = 1, njunk do
        for j = 1, 4 do
          local a, b = JUNK[i], JUNK[(i * 7 + j) % njunk + 1]
          local ok, err = pcall(socket[name], a, b, JUNK[(i + j) % njunk + 1])
          calls = calls + 1
          if not ok then
            raised = raised + 1
            if type(err) ~= "string" then
              error(name .. " raised a " .. type(err))
            end
            if err:find("attempt to", 1, true) then
              error(name .. " raised an internal error: " .. err)
            end
          end
        end
      end
    end
    socket.default_timeout(nil)
    -- Listeners and UDP sockets with callbacks keep run() going: close what the fuzz
    -- opened and leave.
    for _, info in ipairs(raw.info()) do
      if info.type == "udp" or info.state == "listen" or info.state == "plisten" then
        socket.close(info.id) -- forgets it in the coroutine layer too
      else
        socket.shutdown(info.id); raw.close(info.id, true)
      end
    end
    -- Let the close messages reach the coroutine layer, so no state of these ids
    -- outlives them (a later test that reconfigures the engine reuses the ids).
    socket.sleep(50)
    sched.exit()
  end, 60000)
  -- Whatever the fuzz opened is closed by the runner's cleanup.
  io.write(string.format("  fuzz (coroutine module): %d calls, %d raised clean errors\n", calls, raised))
  T.truthy(calls > 500, "calls made")
end

return tests
