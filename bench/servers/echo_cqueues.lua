-- echo_cqueues.lua: echo server on lua5.4 + cqueues, one coroutine per
-- connection doing socket:xread / socket:write (the idiomatic cqueues style).
--   lua5.4 echo_cqueues.lua PORT
-- Listens on 127.0.0.1:PORT and echoes every byte back.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"

local port = tonumber(arg[#arg])
assert(port, "usage: lua5.4 echo_cqueues.lua PORT")

-- Return I/O errors (e.g. ECONNRESET) instead of raising them.
local function return_error(_, _, why)
  return why
end

local cq = cqueues.new()
local srv = socket.listen { host = "127.0.0.1", port = port, reuseaddr = true, backlog = 4096,
  sin_nodelay = true }
assert(srv:listen())

local function serve(con)
  con:onerror(return_error)
  con:setmode("b", "bn") -- binary; no output buffering: write() sends now
  while true do
    local data = con:xread(-65536, "b")
    if not data then break end
    local ok = con:write(data)
    if not ok then break end
  end
  con:close()
end

cq:wrap(function()
  for con in srv:clients { sin_nodelay = true } do
    cq:wrap(serve, con)
  end
end)

assert(cq:loop())
