-- Differences between Lua 5.1, 5.2+, 5.4 and LuaJIT, in one place.
local M = {}

M.unpack = table.unpack or unpack

-- pack(...) -> table with field n
function M.pack(...) return { n = select("#", ...), ... } end

-- running() -> the current coroutine, or nil on the main thread (5.1 already
-- returns nil there; 5.2+ returns the main thread and true).
function M.running()
  local co, main = coroutine.running()
  if main then return nil end
  return co
end

-- Integer division that yields an integer-valued number on every version.
function M.idiv(a, b) return math.floor(a / b) end

return M
