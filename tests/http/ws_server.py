#!/usr/bin/env python3
"""WebSocket echo server (Python's websockets) for skysocket's client. Prints its
port. "frag" is answered as a fragmented message, "bye" closes with 4001, "ping-me"
makes the server ping the client first."""
import asyncio
import websockets


async def handler(ws):
    async for msg in ws:
        if msg == "frag":
            await ws.send(["fr", "ag", "ments"])
        elif msg == "bye":
            await ws.close(code=4001, reason="server says bye")
            return
        elif msg == "ping-me":
            await asyncio.wait_for(await ws.ping(b"from-server"), 5)
            await ws.send("pinged")
        else:
            await ws.send(msg)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
