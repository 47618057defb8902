local skynet = require "skynet"
local echo, calls = ...
echo, calls = tonumber(echo), tonumber(calls)
skynet.start(function()
  skynet.dispatch("lua", function()
    for i = 1, calls do skynet.call(echo, "lua", i) end
    skynet.ret(skynet.pack(true))
  end)
end)
