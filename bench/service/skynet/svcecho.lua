local skynet = require "skynet"
skynet.start(function()
  skynet.dispatch("lua", function(_, _, x) skynet.ret(skynet.pack(x)) end)
end)
