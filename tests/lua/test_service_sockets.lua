-- @uses-services (the runner runs this file after the others)
-- Sockets in services: every socket belongs to the service that made or started it,
-- its messages go to that service only; abandon + start hand it to another service
-- with nothing lost or reordered; a service's sockets close when it ends.
local raw = require "skysocket"
local service = require "skysocket.service"
local socket = require "skysocket.socket"
local T = require "testlib"
local tests = {}

local PRELUDE = "local service = require 'skysocket.service'\nlocal socket = require 'skysocket.socket'\n"

local started = {}
local function spawn(code, ...)
  local id = assert(service.spawn(PRELUDE .. code, ...))
  started[#started + 1] = id
  return id
end

local function run(main, ms)
  service.timeout(10000)
  local ok, err = pcall(T.run_co, main, ms or 20000)
  for _, id in ipairs(started) do service.kill(id) end
  started = {}
  T.wait("services gone", function() return service.count() == 1 end)
  if not ok then error(err, 2) end
end

-- Bytes 0..250 repeated: a stream in which a lost, doubled or moved byte shows.
local function pattern(n)
  local t = {}
  for i = 0, 250 do t[#t + 1] = string.char(i) end
  local unit = table.concat(t)
  return unit:rep(math.ceil(n / #unit)):sub(1, n)
end

-- Write `s` in pieces of 1..max bytes, sleeping now and then so the peer keeps
-- receiving while services hand the socket over.
local function write_chunked(id, s, max, rng)
  local i = 1
  while i <= #s do
    local k = rng(max)
    socket.write(id, s:sub(i, i + k - 1))
    i = i + k
    if rng(8) == 1 then service.sleep(1) end
  end
end

function tests.a_service_listens_and_echoes_with_the_callback_api()
  run(function()
    local s = spawn("local raw = require 'skysocket'\n" .. [[
      local lid, _, port = assert(raw.listen("127.0.0.1", 0))
      raw.start(lid, {
        accept = function(_, id) raw.start(id) end,
        data = function(id, bytes) raw.send(id, bytes) end,
      })
      service.dispatch(function() return port end)
    ]])
    local port = service.call(s, "port")
    local c = assert(socket.open("127.0.0.1", port))
    local msg = pattern(200000)
    socket.write(c, msg)
    T.eq(socket.read(c, #msg), msg, "echo through the service")
    socket.close(c)
  end)
end

-- The gate reads a line, then hands the socket over while the client is still
-- sending: the unread bytes in the gate's buffer, the messages on their way to it and
-- everything later reach the agent, in order.
function tests.handoff_while_the_peer_is_still_sending()
  local TOTAL = 1500000
  run(function()
    local agent = spawn([[
      local TOTAL = ...
      local t = {}
      for i = 0, 250 do t[#t + 1] = string.char(i) end
      local expect = table.concat(t):rep(math.ceil(TOTAL / 251)):sub(1, TOTAL)
      service.dispatch(function(_, cmd, id, line)
        service.fork(function()
          assert(socket.start(id))
          local data = socket.read(id, TOTAL)
          socket.write(id, (data == expect and "ok " or "bad ") .. line .. "\n")
          socket.close(id)
        end)
      end)
    ]], TOTAL)
    local gate = spawn([[
      local agent = ...
      local lid, _, port = assert(socket.listen("127.0.0.1", 0))
      socket.start(lid, function(id)
        socket.start(id)
        local line = socket.readline(id)
        service.sleep(30) -- more arrives meanwhile: into our buffer and our mailbox
        socket.abandon(id)
        service.send(agent, "take", id, line)
      end)
      service.dispatch(function() return port end)
    ]], agent)
    local port = service.call(gate, "port")
    local rng = T.rng(7)
    for round = 1, 3 do
      local c = assert(socket.open("127.0.0.1", port))
      socket.write(c, "HELLO" .. round .. "\n")
      write_chunked(c, pattern(TOTAL), 40000, rng)
      T.eq(socket.readline(c), "ok HELLO" .. round, "round " .. round)
      socket.close(c)
    end
  end, 30000)
end

-- A -> B -> C: the listener's service reads one line and hands the socket to B, which
-- reads one and hands it to C, which checks the rest. The lines and the first bytes
-- of the payload arrive together, so each hop leaves unread bytes to the next.
function tests.a_socket_handed_twice()
  local TOTAL = 300000
  run(function()
    local HOP = [[
      local name, nexthop, TOTAL = ...
      local t = {}
      for i = 0, 250 do t[#t + 1] = string.char(i) end
      local expect = table.concat(t):rep(math.ceil(TOTAL / 251)):sub(1, TOTAL)
      local function hop(id, trail)
        local line = socket.readline(id)
        trail = trail .. name .. "=" .. tostring(line) .. ";"
        if nexthop then
          socket.abandon(id)
          service.send(nexthop, "take", id, trail)
        else
          local data = socket.read(id, TOTAL)
          socket.write(id, trail .. (data == expect and "ok" or "bad") .. "\n")
          socket.close(id)
        end
      end
      service.dispatch(function(_, cmd, id, trail)
        if cmd == "take" then
          service.fork(function() assert(socket.start(id)); hop(id, trail) end)
        elseif cmd == "listen" then
          local lid, _, port = assert(socket.listen("127.0.0.1", 0))
          socket.start(lid, function(cid) socket.start(cid); hop(cid, "") end)
          return port
        end
      end)
    ]]
    local c3 = spawn(HOP, "C", nil, TOTAL)
    local b = spawn(HOP, "B", c3, TOTAL)
    local a = spawn(HOP, "A", b, TOTAL)
    local port = service.call(a, "listen")
    local rng = T.rng(11)
    for round = 1, 3 do
      local c = assert(socket.open("127.0.0.1", port))
      local data = pattern(TOTAL)
      socket.write(c, "one\ntwo\nthree\n" .. data:sub(1, 5000))
      write_chunked(c, data:sub(5001), 20000, rng)
      T.eq(socket.readline(c), "A=one;B=two;C=three;ok", "round " .. round)
      socket.close(c)
    end
  end, 30000)
end

-- Connections through the example gate to 8 agents, packets in random pieces.
function tests.gate_to_8_agents_200_connections()
  local function source(name)
    local f = assert(io.open("examples/gate/" .. name .. ".lua", "rb"))
    local code = f:read("*a")
    f:close()
    return code
  end
  run(function()
    local closed = 0
    service.dispatch(function(_, what) if what == "closed" then closed = closed + 1 end end)
    local agents = {}
    for i = 1, 8 do
      agents[i] = assert(service.spawn(source("agent"), i, service.self()))
      started[#started + 1] = agents[i]
    end
    local gate = assert(service.spawn(source("gate"), "127.0.0.1", 0, agents))
    started[#started + 1] = gate
    local port = service.call(gate, "port")
    local rng, done, bad = T.rng(3), 0, 0
    for c = 1, 200 do
      service.fork(function()
        local id = assert(socket.open("127.0.0.1", port))
        local want = {}
        for p = 1, 8 do
          local n = rng(700) - 1
          local packet = string.char(math.floor(n / 256), n % 256) .. pattern(n + c):sub(c + 1)
          want[p] = packet
          write_chunked(id, packet, 50, rng)
        end
        local expect = table.concat(want)
        if socket.read(id, #expect) ~= expect then bad = bad + 1 end
        socket.close(id)
        done = done + 1
      end)
    end
    local deadline = raw.now() + 20000
    while (done < 200 or closed < 200) and raw.now() < deadline do service.sleep(10) end
    T.eq(done, 200, "clients done")
    T.eq(bad, 0, "echoes that differ")
    T.eq(closed, 200, "closes reported by the agents")
    T.eq(service.call(gate, "accepted"), 200, "accepted by the gate")
    local total = 0
    for i = 1, 8 do
      local n = service.call(agents[i], "served")
      T.eq(n, 25, "agent " .. i .. " served its share")
      total = total + n
    end
    T.eq(total, 200, "served")
    service.dispatch(nil)
  end, 30000)
end

-- A service's sockets close when it is killed or exits: its peer sees the close and
-- its listener stops accepting.
function tests.sockets_of_a_killed_or_exited_service_are_closed()
  run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local conns = {}
    socket.start(lid, function(id) socket.start(id); conns[#conns + 1] = id end)
    local CODE = [[
      local port, how = ...
      local p
      service.dispatch(function(_, cmd) -- first: calls may come while main blocks
        if cmd == "exit" then service.exit() end
        while not p do service.sleep(1) end
        return p
      end)
      local id = assert(socket.open("127.0.0.1", port))
      socket.write(id, "hi\n")
      local lid, _, lport = assert(socket.listen("127.0.0.1", 0))
      socket.start(lid, function(c) socket.close(c) end)
      p = lport
    ]]
    for _, how in ipairs { "kill", "exit" } do
      local s = spawn(CODE, port, how)
      local p = service.call(s, "port")
      local deadline = raw.now() + 5000
      while #conns == 0 and raw.now() < deadline do service.sleep(5) end
      local mine = table.remove(conns)
      T.eq(socket.readline(mine), "hi", "the service's connection")
      local probe = socket.open("127.0.0.1", p)
      T.truthy(probe, "its listener accepts while it lives")
      socket.close(probe)
      if how == "kill" then
        T.eq(service.kill(s), true, "killed")
      else
        service.send(s, "exit")
      end
      local r, rest = socket.readline(mine)
      T.eq(r, false, how .. ": the peer sees the close")
      T.eq(rest, "", "nothing more arrived")
      socket.close(mine)
      local refused
      for _ = 1, 100 do
        local c = socket.open("127.0.0.1", p)
        if not c then refused = true; break end
        socket.close(c)
        service.sleep(10)
      end
      T.truthy(refused, how .. ": its listener is closed")
    end
    socket.close(lid)
  end)
end

-- A service that keeps its thread busy for a second does not hold up the sockets of
-- the others (two workers: the pool has one thread per CPU, at least two here).
function tests.a_busy_service_does_not_block_another_services_sockets()
  if service.threads() < 2 then return end
  run(function()
    local echo = spawn([[
      local lid, _, port = assert(socket.listen("127.0.0.1", 0))
      socket.start(lid, function(id)
        socket.start(id)
        while true do
          local line = socket.readline(id)
          if not line then break end
          socket.write(id, line .. "\n")
        end
        socket.close(id)
      end)
      service.dispatch(function() return port end)
    ]])
    local busy = spawn([[
      service.dispatch(function()
        local t = os.clock()
        while os.clock() - t < 1 do end
      end)
    ]])
    local port = service.call(echo, "port")
    local c = assert(socket.open("127.0.0.1", port))
    service.send(busy, "spin")
    service.sleep(50)
    local t0 = raw.now()
    for i = 1, 20 do
      socket.write(c, "ping" .. i .. "\n")
      T.eq(socket.readline(c), "ping" .. i, "echo " .. i)
    end
    T.truthy(raw.now() - t0 < 700, "echoes answered while the other service spins: " .. (raw.now() - t0) .. " ms")
    socket.close(c)
  end)
end

-- Messages of a socket go to its owner only: two services, each with its own
-- connection to the root, never see each other's bytes; any service may send on and
-- close any id.
function tests.messages_go_to_the_owner_and_any_service_may_send_and_close()
  run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local conns = {}
    socket.start(lid, function(id) socket.start(id); conns[#conns + 1] = id end)
    local CODE = [[
      local port, name = ...
      local id = assert(socket.open("127.0.0.1", port))
      socket.write(id, name .. "\n")
      service.dispatch(function(_, cmd, other)
        if cmd == "id" then return id end
        if cmd == "read" then return socket.readline(id) end
        if cmd == "send_on" then return raw.send(other, "from " .. name .. "\n") end
        if cmd == "close" then return raw.close(other) end
      end)
    ]]
    local s1 = spawn("local raw = require 'skysocket'\n" .. CODE, port, "one")
    local s2 = spawn("local raw = require 'skysocket'\n" .. CODE, port, "two")
    local deadline = raw.now() + 5000
    while #conns < 2 and raw.now() < deadline do service.sleep(5) end
    local by = {}
    for _, id in ipairs(conns) do by[socket.readline(id)] = id end
    T.truthy(by.one and by.two, "both connected")
    socket.write(by.one, "for one\n")
    socket.write(by.two, "for two\n")
    T.eq(service.call(s1, "read"), "for one", "service one reads its own")
    T.eq(service.call(s2, "read"), "for two", "service two reads its own")
    -- Service two writes on service one's socket (ids are process-wide).
    local id1 = service.call(s1, "id")
    T.eq(service.call(s2, "send_on", id1), true, "send on another service's socket")
    T.eq(socket.readline(by.one), "from two", "arrives on that connection")
    T.eq(service.call(s2, "close", id1), true, "close another service's socket")
    T.eq(socket.readline(by.one), false, "closed")
    socket.close(by.one); socket.close(by.two)
    socket.close(lid)
  end)
end

-- A service slower than its peer: the socket thread stops reading that socket once
-- 256 KiB wait undelivered in the service's mailbox, so the backlog stays in the
-- kernel and in the sender's queue (bounded by its write limit) instead of growing the
-- mailbox; every byte still arrives.
function tests.a_slow_service_holds_its_socket_back()
  run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    local server
    socket.start(lid, function(id) server = id end)
    local s = spawn([[
      local raw = require "skysocket"
      local port = ...
      local received = 0
      local id = assert(raw.connect("127.0.0.1", port))
      raw.start(id, { data = function(_, d)
        received = received + #d
        local t = os.clock()
        while os.clock() - t < 0.001 do end -- 1 ms per read: about 64 MB/s at most
      end })
      service.dispatch(function() return received end)
    ]], port)
    while not server do service.sleep(5) end
    socket.start(server)
    local chunk = string.rep("s", 65536)
    local total = 48 * 1024 * 1024
    for _ = 1, total / 65536 do raw.send(server, chunk) end
    service.sleep(100)
    local queued = 0
    for _, x in ipairs(raw.info()) do if x.id == server then queued = x.wbuffer end end
    T.truthy(queued > 8 * 1024 * 1024, "the sender is held back: " .. queued .. " bytes still queued")
    local deadline = raw.now() + 20000
    while service.call(s) < total and raw.now() < deadline do service.sleep(20) end
    T.eq(service.call(s), total, "every byte arrives")
    socket.close(server)
    socket.close(lid)
  end, 30000)
end

-- Once the socket thread polls, a refused connect can fail and be freed before the
-- state that made it has set its handler: start() and buffered() must still set it up
-- (its messages are in the mail), or the coroutine in open() would wait forever.
function tests.refused_connects_never_hang()
  run(function()
    local lid, _, port = assert(socket.listen("127.0.0.1", 0))
    socket.close(lid)
    local s = spawn([[
      local port = ...
      service.dispatch(function()
        local refused = 0
        for _ = 1, 300 do
          local id = socket.open("127.0.0.1", port)
          if id then socket.close(id) else refused = refused + 1 end
        end
        return refused
      end)
    ]], port)
    T.eq(service.call(s), 300, "refused in a service")
    local refused = 0
    for _ = 1, 300 do
      local id = socket.open("127.0.0.1", port)
      if id then socket.close(id) else refused = refused + 1 end
    end
    T.eq(refused, 300, "refused in the root")
  end)
end

return tests
