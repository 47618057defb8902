-- Line chat room: lua5.4 examples/chat.lua [port [slow_kb]]   (default 8889, 1024)
-- Every line a client sends is broadcast to all clients as "<name>: line".
-- "/nick NAME" renames, "/quit" leaves.
--
-- Scaling: broadcasts are gathered. What happens during one tick (TICK_MS) -- lines,
-- joins, leaves -- goes out as one string, written once per client, so N clients
-- joining at once cost N writes per tick, not N^2 writes; when more than SUMMARY
-- joins/leaves fall in one tick they are announced as one summary line. The listen
-- backlog is 4096 (the kernel may cap it at net.core.somaxconn) for connect bursts.
--
-- Defences (it serves strangers): a client whose write queue passes slow_kb KiB
-- (reported by the engine's write warning) is disconnected, and the module's write
-- limit and budget bound the rest; lines are at most MAX_LINE bytes and names
-- NAME_MAX printable bytes; a client silent for SKYSOCKET_IDLE_MS (default 10 min;
-- 0: never) is disconnected.
package.path = package.path .. ";lua/?.lua"
package.cpath = package.cpath .. ";target/lua/?.so"
local socket = require "skysocket.socket"
local sched = socket.sched

local port = tonumber(arg[1]) or 8889
local SLOW_KB = tonumber(arg[2]) or 1024   -- the first warning comes at 1 MiB
local IDLE_MS = tonumber(os.getenv("SKYSOCKET_IDLE_MS") or "") or 600000
local TICK_MS = 20
local SUMMARY = 8
local MAX_LINE = 4096
local NAME_MAX = 32
local BACKLOG = 4096

local clients = {}   -- id -> name

---------------------------------------------------------------- gathered broadcast

-- Events of the current tick, in order: kinds[i] is "line", "join" or "leave";
-- texts[i] the line or the name.
local kinds, texts = {}, {}
local flusher, flusher_idle = nil, false

local function post(kind, text)
  kinds[#kinds + 1], texts[#texts + 1] = kind, text
  if flusher_idle then
    flusher_idle = false
    sched.wakeup(flusher)
  end
end

local function summary(names, verb)
  local shown = {}
  for i = 1, math.min(#names, 3) do shown[i] = names[i] end
  local more = #names - #shown
  return string.format("* %d %s: %s%s", #names, verb, table.concat(shown, ", "),
    more > 0 and (" and " .. more .. " more") or "")
end

-- The tick's events as one string.
local function render()
  local moves = 0
  for i = 1, #kinds do if kinds[i] ~= "line" then moves = moves + 1 end end
  local out, joined, left = {}, {}, {}
  for i = 1, #kinds do
    local k, t = kinds[i], texts[i]
    if k == "line" then
      out[#out + 1] = t
    elseif moves <= SUMMARY then
      out[#out + 1] = "* " .. t .. (k == "join" and " joined" or " left")
    elseif k == "join" then
      joined[#joined + 1] = t
    else
      left[#left + 1] = t
    end
  end
  if #joined > 0 then out[#out + 1] = summary(joined, "joined") end
  if #left > 0 then out[#out + 1] = summary(left, "left") end
  return table.concat(out, "\n") .. "\n"
end

local function flush_tick()
  if #kinds == 0 then return end
  local payload = render()
  kinds, texts = {}, {}
  for id in pairs(clients) do socket.write(id, payload) end
end

flusher = socket.fork(function()
  while true do
    if #kinds == 0 then
      flusher_idle = true
      sched.wait()
    end
    socket.sleep(TICK_MS) -- gather what else happens in this tick
    flush_tick()
  end
end)

---------------------------------------------------------------- sessions

local function clean_name(s)
  return (s:sub(1, NAME_MAX):gsub("[^\33-\126]", "?"))
end

local function session(id, addr)
  socket.start(id)
  socket.limit(id, MAX_LINE)
  local name = addr
  clients[id] = name
  socket.warning(id, function(_, kb)
    if kb >= SLOW_KB and clients[id] then
      clients[id] = nil
      socket.shutdown(id) -- drop its queue: the reader below sees the close
      post("line", "* " .. name .. " was too slow and got disconnected")
    end
  end)
  socket.write(id, "* welcome " .. name .. "\n")
  post("join", name)
  while true do
    local line = socket.readline(id)
    if not line then break end -- closed, timed out, or longer than MAX_LINE
    line = line:gsub("\r$", "")
    local nick = line:match("^/nick%s+(%S+)")
    if nick then
      nick = clean_name(nick)
      post("line", "* " .. name .. " is now " .. nick)
      name = nick
      if clients[id] then clients[id] = name end
    elseif line == "/quit" then
      break
    elseif clients[id] then
      post("line", name .. ": " .. line)
    end
  end
  if clients[id] then
    clients[id] = nil
    post("leave", name)
  end
  socket.close(id)
end

socket.run(function()
  if IDLE_MS > 0 then socket.default_timeout(IDLE_MS) end
  local lid, ip, p = assert(socket.listen("127.0.0.1", port, BACKLOG))
  print(string.format("chat listening on %s:%d", ip, p))
  io.stdout:flush()
  socket.start(lid, session)
end)
