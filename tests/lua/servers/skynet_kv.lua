-- A Skynet-style service run through the shim (tests/lua/test_skynet_services.lua):
-- written as for Skynet, plus the first line that installs the shim in its state.
require "skysocket.skynet"
local skynet = require "skynet"

local db = {}
local CMD = {}
function CMD.set(k, v) db[k] = v return true end
function CMD.get(k) return db[k] end
function CMD.slowget(k) skynet.sleep(2) return db[k] end
function CMD.fail() error("kv: asked to fail") end

skynet.start(function()
  skynet.dispatch("lua", function(session, source, cmd, ...)
    if cmd == "whoami" then return skynet.retpack(skynet.self(), source, session) end
    if cmd == "noreply" then return end
    skynet.ret(skynet.pack(CMD[cmd](...)))
  end)
  skynet.register(".kv")
end)
