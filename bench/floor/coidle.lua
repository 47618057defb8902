-- lua5.4 bench/floor/coidle.lua [N]: the Lua heap one idle coroutine costs, the way a
-- coroutine server holds one per connection: the body blocked in a read one call deep
-- (body -> read -> yield), after a full collection (which shrinks stacks and frees
-- unused CallInfos). Prints bytes per coroutine (collectgarbage("count") growth / N).
local N = tonumber(arg and arg[1]) or 10000
local yield = coroutine.yield
local function read(id) return yield(id) end
local function body(id)
  while true do
    local d = read(id)
    if not d then break end
  end
end
local keep = {}
collectgarbage("collect"); collectgarbage("collect")
local before = collectgarbage("count")
for i = 1, N do
  local co = coroutine.create(body)
  coroutine.resume(co, i)
  keep[i] = co
end
collectgarbage("collect"); collectgarbage("collect")
local after = collectgarbage("count")
-- the `keep` array itself: 8 or 16 bytes a slot (a TValue), subtracted
local slot = (_VERSION == "Lua 5.1" or jit) and 8 or 16
print(string.format("%s: %.0f B per idle coroutine (heap), array slot %d B excluded",
  jit and jit.version or _VERSION, (after - before) * 1024 / N - slot, slot))
