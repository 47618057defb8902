-- Fault suite, Lua level: no loss, no reorder through the dispatcher. 20 connections
-- send 16 MiB in total to an echo server in random chunks; the server pauses sockets at
-- random and resumes them from timers, clients pause too; every byte is checked.
-- SKYSOCKET_FAULT_MIB sets the total (default 16).
local socket = require "skysocket"
local T = require "testlib"
local tests = {}

local CONNS = 20
local TOTAL = (tonumber(os.getenv("SKYSOCKET_FAULT_MIB") or "") or 16) * 1024 * 1024

local rand = T.rng(4242)

function tests.no_loss_no_reorder_through_the_dispatcher()
  local per_conn = math.floor(TOTAL / CONNS)
  local pattern = T.bytes(65536 + 17, 9)
  local plen = #pattern
  -- Connection c's stream byte i (0-based) is pattern[(i + 31*c) % plen + 1].
  local function piece(c, pos, n)
    local start = (pos + 31 * c) % plen
    n = math.min(n, plen - start)
    return pattern:sub(start + 1, start + n)
  end

  local server_pauses, client_pauses = 0, 0
  local lid, port = T.listen {
    accept = function(_, id) socket.start(id) end,
    data = function(id, s)
      assert(socket.send(id, s))
      if rand(10) == 1 and socket.pause(id) then
        server_pauses = server_pauses + 1
        socket.timeout(rand(5), function() socket.resume(id) end)
      end
    end,
  }

  local done, moved = 0, 0
  local clients = {}
  for c = 1, CONNS do
    local st = { sent = 0, got = 0 }
    clients[c] = st
    local id
    local function pump()
      -- Send a few random chunks, then yield to the loop via a timer.
      for _ = 1, 4 do
        if st.sent >= per_conn then return end
        local n = math.min(rand(32768), per_conn - st.sent)
        local p = piece(c, st.sent, n)
        assert(socket.send(id, p))
        st.sent = st.sent + #p
      end
      socket.timeout(rand(3) - 1, pump)
    end
    id = assert(socket.connect("127.0.0.1", port))
    st.id = id
    socket.start(id, {
      open = function() pump() end,
      data = function(_, s)
        local pos, i = st.got, 1
        while i <= #s do
          local want = piece(c, pos, #s - i + 1)
          if s:sub(i, i + #want - 1) ~= want then
            error(string.format("conn %d: wrong bytes at offset %d", c, pos))
          end
          pos, i = pos + #want, i + #want
        end
        st.got = pos
        moved = moved + #s
        if st.got == per_conn then done = done + 1 end
        if rand(20) == 1 and socket.pause(id) then
          client_pauses = client_pauses + 1
          socket.timeout(rand(3), function() socket.resume(id) end)
        end
      end,
      error = function(_, m) error("conn " .. c .. ": " .. m) end,
    })
  end
  local errors = {}
  socket.on_error(function(m) errors[#errors + 1] = m end)
  local t0 = os.clock()
  T.wait("all echoed", function()
    assert(#errors == 0, errors[1])
    return done == CONNS
  end, 30000)
  for c = 1, CONNS do T.eq(clients[c].got, per_conn, "conn " .. c .. " bytes") end
  print(string.format("  faults: %d conns, %d bytes echoed byte-exact, %d server pauses, "
    .. "%d client pauses, %.2f s CPU", CONNS, moved, server_pauses, client_pauses, os.clock() - t0))
  for c = 1, CONNS do socket.close(clients[c].id) end
  socket.close(lid)
  T.settle(50)
  for _, s in ipairs(socket.info()) do socket.close(s.id, true) end
end

return tests
