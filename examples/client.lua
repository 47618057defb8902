-- Echo client: connects, sends lines, prints the echoes and exits.
--   lua5.4 examples/client.lua [port] [line ...]   (default port 8888)
local root = (arg and arg[0] or ""):match("^(.-)examples/[^/]*$") or ""
package.cpath = package.cpath .. ";" .. root .. "target/lua/?.so"

local socket = require "skysocket"

local port = tonumber(arg[1]) or 8888
local lines = {}
for i = 2, #arg do lines[#lines + 1] = arg[i] end
if #lines == 0 then lines = { "hello", "skysocket", "bye" } end

local expected = table.concat(lines, "\n") .. "\n"
local received = ""
local failed = false

local id, err = socket.connect("127.0.0.1", port)
if not id then
  io.stderr:write("client: ", err, "\n")
  os.exit(1)
end

-- Give up after 5 s rather than hang on a silent server.
socket.timeout(5000, function()
  io.stderr:write("client: timed out\n")
  failed = true
  socket.close(id, true)
  socket.exit()
end)

socket.start(id, {
  open = function()
    for _, line in ipairs(lines) do socket.send(id, line .. "\n") end
  end,
  data = function(_, data)
    received = received .. data
    -- Print each complete line as it comes back.
    while true do
      local line, rest = received:match("^([^\n]*)\n(.*)$")
      if not line then break end
      print("echo: " .. line)
      expected = expected:sub(#line + 2)
      received = rest
    end
    if expected == "" then
      socket.close(id)
      socket.exit()
    end
  end,
  error = function(_, msg)
    io.stderr:write("client: ", msg, "\n")
    failed = true
    socket.exit()
  end,
  close = function()
    if expected ~= "" then failed = true end
    socket.exit()
  end,
})

socket.loop()
os.exit(failed and 1 or 0)
