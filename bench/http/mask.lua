-- Masking 1 MiB: skysocket.ws_mask (Rust) vs XOR in Lua. lua bench/http/mask.lua
local raw = require "skysocket"
local data = string.rep("abcdefgh", 131072) -- 1 MiB
local key = "\1\2\3\4"
local N = 20
local t0 = os.clock()
for _ = 1, N do raw.ws_mask(data, key) end
local rust = (os.clock() - t0) / N
-- pure Lua: XOR per byte (5.3+: ~ operator; LuaJIT: bit.bxor; 5.1: 256x256 table)
local bxor
if jit then bxor = bit.bxor
elseif _VERSION >= "Lua 5.3" then bxor = load("return function(a, b) return a ~ b end")()
else
  local T = {}
  for a = 0, 255 do
    T[a] = {}
    for b = 0, 255 do
      local r, p, x, y = 0, 1, a, b
      for _ = 1, 8 do
        if x % 2 ~= y % 2 then r = r + p end
        x, y, p = math.floor(x / 2), math.floor(y / 2), p * 2
      end
      T[a][b] = r
    end
  end
  bxor = function(a, b) return T[a][b] end
end
local k = { key:byte(1, 4) }
local function lua_mask(s)
  local out, n = {}, #s
  for i = 1, n, 4096 do
    local t = { s:byte(i, math.min(i + 4095, n)) }
    for j = 1, #t do t[j] = bxor(t[j], k[(j - 1) % 4 + 1]) end
    out[#out + 1] = string.char((table.unpack or unpack)(t))
  end
  return table.concat(out)
end
t0 = os.clock()
local r = lua_mask(data)
local lua = os.clock() - t0
assert(r == raw.ws_mask(data, key))
print(string.format("%-28s 1 MiB mask: Rust %.2f ms, Lua %.1f ms (%.0fx)", _VERSION .. (jit and " (LuaJIT)" or ""), rust * 1e3, lua * 1e3, lua / rust))
