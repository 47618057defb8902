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
    if type(v) == "function" and not documented and not name:find("^_test") then
      missing[#missing + 1] = name
    end
  end
  table.sort(missing)
  if #missing > 0 then error("not in README.md: " .. table.concat(missing, ", ")) end
end

-- Documented functions a build may lack by design: coreader needs C functions that
-- can yield and be continued (Lua 5.3+; not 5.1, not LuaJIT).
local function absent_by_design(name)
  return name == "coreader" and _VERSION == "Lua 5.1"
end

function tests.every_documented_function_exists()
  local text = readme()
  local api = text:match("## API %(`require \"skysocket\"`%)(.-)\n## ")
  assert(api, "API section not found")
  local unknown = {}
  for name in api:gmatch("\n| `([%w_]+)%(") do
    if type(socket[name]) ~= "function" and not absent_by_design(name) then
      unknown[#unknown + 1] = name
    end
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

-- docs/API.md: every function of skysocket, skysocket.socket, skysocket.sched,
-- skysocket.channel and skysocket.redis has a
-- `### name(` heading in that module's section.
local function api_doc()
  local dir = arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
  local f = assert(io.open(dir .. "/docs/API.md", "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- The text of the `## ...` section whose heading names `require "<module>"`, up to the
-- next level-2 heading.
local function api_section(text, module)
  local marker = '`require "' .. module .. '"`'
  local pos = 1
  while true do
    local s, e = text:find("\n## [^\n]*", pos)
    assert(s, "docs/API.md has no section for " .. module)
    if text:sub(s, e):find(marker, 1, true) then
      local stop = text:find("\n## ", e, true)
      return text:sub(e + 1, stop or #text)
    end
    pos = e + 1
  end
end

local function check_headings(module)
  local mod = require(module)
  local section = api_section(api_doc(), module)
  local missing = {}
  for name, v in pairs(mod) do
    if type(v) == "function" and not section:find("\n### " .. name .. "(", 1, true)
      and not name:find("^_test") then
      missing[#missing + 1] = name
    end
  end
  table.sort(missing)
  if #missing > 0 then
    error(module .. " functions without a '### name(' heading in docs/API.md: " .. table.concat(missing, ", "))
  end
end

function tests.api_md_documents_every_skysocket_function()
  check_headings("skysocket")
end

function tests.api_md_documents_every_coroutine_function()
  check_headings("skysocket.socket")
end

function tests.api_md_documents_every_sched_function()
  check_headings("skysocket.sched")
end

function tests.api_md_documents_every_service_function()
  check_headings("skysocket.service")
end

function tests.api_md_documents_every_channel_and_redis_function()
  check_headings("skysocket.channel")
  check_headings("skysocket.redis")
end

function tests.api_md_headings_name_existing_functions()
  local text = api_doc()
  for module in pairs({ ["skysocket"] = 1, ["skysocket.socket"] = 1, ["skysocket.sched"] = 1,
    ["skysocket.channel"] = 1, ["skysocket.redis"] = 1, ["skysocket.service"] = 1 }) do
    local mod = require(module)
    local unknown = {}
    for name in api_section(text, module):gmatch("\n### ([%w_]+)%(") do
      if type(mod[name]) ~= "function" and not absent_by_design(name) then
        unknown[#unknown + 1] = name
      end
    end
    if #unknown > 0 then
      error("docs/API.md documents missing " .. module .. " functions: " .. table.concat(unknown, ", "))
    end
  end
end

-- docs/ARCHITECTURE.md: every source file it names exists (the map stays true).
function tests.architecture_names_only_existing_files()
  local dir = arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
  local f = assert(io.open(dir .. "/docs/ARCHITECTURE.md", "rb"))
  local text = f:read("*a")
  f:close()
  local missing, seen = {}, 0
  local function check(path)
    seen = seen + 1
    local h = io.open(dir .. "/" .. path, "rb")
    if h then h:close() else missing[#missing + 1] = path end
  end
  for path in text:gmatch("(src/[%w_/]+%.rs)") do check(path) end
  for path in text:gmatch("(lua/skysocket/[%w_]+%.lua)") do check(path) end
  -- table rows name engine files without the src/ prefix: `engine/fsm.rs`
  for path in text:gmatch("`(engine/[%w_/]+%.rs)`") do check("src/" .. path) end
  assert(seen > 20, "too few file names found: " .. seen)
  if #missing > 0 then error("docs/ARCHITECTURE.md names missing files: " .. table.concat(missing, ", ")) end
end

return tests
