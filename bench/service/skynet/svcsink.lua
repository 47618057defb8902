local skynet = require "skynet"
local root, expect = ...
root, expect = tonumber(root), tonumber(expect)
local n = 0
skynet.start(function()
  skynet.dispatch("lua", function()
    n = n + 1
    if n == expect then skynet.send(root, "lua", "done") end
  end)
end)
