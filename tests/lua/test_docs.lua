-- The README's API reference matches the module: every exported function is documented.
local socket = require "skysocket"
local tests = {}

local function readme()
  local dir = arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
  local f = assert(io.open(dir .. "/README.md", "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

function tests.every_exported_function_is_documented()
  local text = readme()
  local missing = {}
  for name, v in pairs(socket) do
    local documented = text:find("`" .. name .. "(", 1, true) or text:find("alias `" .. name .. "`", 1, true)
    if type(v) == "function" and not documented then
      missing[#missing + 1] = name
    end
  end
  table.sort(missing)
  if #missing > 0 then error("not in README.md: " .. table.concat(missing, ", ")) end
end

function tests.every_documented_function_exists()
  local text = readme()
  local api = text:match("## API %(`require \"skysocket\"`%)(.-)\n## ")
  assert(api, "API section not found")
  local unknown = {}
  for name in api:gmatch("\n| `([%w_]+)%(") do
    if type(socket[name]) ~= "function" then unknown[#unknown + 1] = name end
  end
  if #unknown > 0 then error("documented but missing: " .. table.concat(unknown, ", ")) end
end

function tests.every_coroutine_function_is_documented()
  local co = require "skysocket.socket"
  local text = readme()
  local section = text:match("## Coroutine API(.-)\n## ")
  assert(section, "Coroutine API section not found")
  local missing = {}
  for name, v in pairs(co) do
    if type(v) == "function" and not section:find("`" .. name .. "(", 1, true)
      and not section:find(" `" .. name .. "(", 1, true) and not section:find("`" .. name .. "`", 1, true) then
      missing[#missing + 1] = name
    end
  end
  table.sort(missing)
  if #missing > 0 then error("skysocket.socket functions not in README.md: " .. table.concat(missing, ", ")) end
end

return tests
