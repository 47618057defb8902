local skynet = require "skynet"
local sink, msgs = ...
sink, msgs = tonumber(sink), tonumber(msgs)
skynet.start(function()
  for i = 1, msgs do skynet.send(sink, "lua", i) end
end)
