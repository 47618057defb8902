#!/usr/bin/env python3
"""WebSocket client (Python's websockets) against skysocket's echo server:
text, binary, 1 MiB, fragmented, ping, close code. Prints one line per check."""
import asyncio, sys
import websockets


async def main(url):
    async with websockets.connect(url, max_size=None, subprotocols=["chat", "echo"]) as ws:
        print("protocol", ws.subprotocol)
        await ws.send("héllo wörld")
        print("text", await ws.recv())
        await ws.send(b"\x00\xffbinary")
        r = await ws.recv()
        print("binary", type(r).__name__, r == b"\x00\xffbinary")
        big = bytes(range(256)) * 4096
        await ws.send(big)
        r = await ws.recv()
        print("1MiB", len(r), r == big)
        await ws.send(["frag", "men", "ted"])
        print("fragmented", await ws.recv())
        await ws.send("fragment-me")   # the server answers this one in 3-byte frames
        print("server-fragmented", await ws.recv())
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        print("pong ok")
        await ws.close(code=4321, reason="done here")
        print("closed", ws.close_code, ws.close_reason)

asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
