-- The Skynet twin of bench/service/bench.lua: one-way messages/s and call round trips/s
-- between two services (skynet.send / skynet.call, "lua" protocol).
local skynet = require "skynet"
local MSGS = tonumber(skynet.getenv("bench_msgs")) or 1000000
local CALLS = tonumber(skynet.getenv("bench_calls")) or 200000

skynet.start(function()
  if MSGS > 0 then
    local sink = skynet.newservice("svcsink", skynet.self(), MSGS)
    local t0 = skynet.hpc()
    local done = false
    skynet.dispatch("lua", function() done = true end)
    skynet.newservice("svcsender", sink, MSGS)
    while not done do skynet.sleep(1) end
    local ms = (skynet.hpc() - t0) / 1e6
    print(string.format("skynet oneway %d msgs in %.0f ms: %.0f msgs/s", MSGS, ms, MSGS / ms * 1000))
  end
  if CALLS > 0 then
    local echo = skynet.newservice("svcecho")
    local t0 = skynet.hpc()
    skynet.call(skynet.newservice("svccaller", echo, CALLS), "lua")
    local ms = (skynet.hpc() - t0) / 1e6
    print(string.format("skynet call %d round trips in %.0f ms: %.0f calls/s", CALLS, ms, CALLS / ms * 1000))
  end
  skynet.abort()
end)
