-- lua5.4 bench/floor/cofloor.lua MODE N [SIZE]: the coroutine echo's body
--   while true do local d = read(id); if not d then break end; write(id, d) end
-- driven N times without sockets (see cofloor.c). MODE:
--   c    C resumes the coroutine with a fresh string; read = coroutine.yield
--   lua  a Lua loop resumes it (coroutine.resume); the read yields, then takes the
--        fresh string from a C function (as a buffered read must)
local dir = arg[0]:match("^(.-)[^/]*$")
local cofloor = assert(package.loadlib(dir .. "../build/cofloor.so", "luaopen_cofloor"))()
local mode, n, size = arg[1], tonumber(arg[2]), tonumber(arg[3]) or 64
local write = cofloor.send
if mode == "c" then
  local read = coroutine.yield
  cofloor.run(n, function(id)
    while true do
      local d = read(id)
      if not d then break end
      write(id, d)
    end
  end, size)
elseif mode == "lua" then
  local yield, str = coroutine.yield, cofloor.str
  local function read(id)
    yield()
    return str(size)
  end
  local co = coroutine.create(function(id)
    while true do
      local d = read(id)
      if not d then break end
      write(id, d)
    end
  end)
  local resume = coroutine.resume
  resume(co, 7)
  for _ = 1, n do resume(co) end
else
  error("mode: c or lua")
end
