#!/usr/bin/env python3
"""Fixed-count keep-alive HTTP/1.1 client for bench/http/callgrind.sh.

    client.py PORT REQUESTS [CONNS] [TIMEOUT_S]

Opens CONNS connections (default 100) to 127.0.0.1:PORT and sends, on each, one
GET at a time (no pipelining, like wrk) until REQUESTS responses have arrived in
total; every response must be a 200 with a Content-Length body. The request is the
one wrk sends ("GET / HTTP/1.1" + Host). Prints "OK requests=N seconds=S"; exits 1
on any error or after TIMEOUT_S seconds (default 1800).
"""
import selectors
import socket
import sys
import time


def main():
    port = int(sys.argv[1])
    total = int(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 1800.0
    conns = min(conns, total)
    request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
    sel = selectors.DefaultSelector()
    sent = 0      # requests sent
    done = 0      # responses received
    start = time.monotonic()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, bytearray())
        s.sendall(request)
        sent += 1
    while done < total:
        if time.monotonic() - start > limit:
            print("client.py: timeout after %d responses" % done, file=sys.stderr)
            sys.exit(1)
        for key, _ in sel.select(timeout=1.0):
            s, buf = key.fileobj, key.data
            data = s.recv(65536)
            if not data:
                print("client.py: server closed a connection", file=sys.stderr)
                sys.exit(1)
            buf += data
            while True:
                e = buf.find(b"\r\n\r\n")
                if e < 0:
                    break
                head = bytes(buf[:e]).decode("latin-1")
                lines = head.split("\r\n")
                if not lines[0].startswith("HTTP/1.1 200 "):
                    print("client.py: bad status line %r" % lines[0], file=sys.stderr)
                    sys.exit(1)
                length = None
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    print("client.py: no Content-Length", file=sys.stderr)
                    sys.exit(1)
                if len(buf) < e + 4 + length:
                    break
                del buf[: e + 4 + length]
                done += 1
                if sent < total:
                    s.sendall(request)
                    sent += 1
    for s in socks:
        s.close()
    print("OK requests=%d seconds=%.2f" % (done, time.monotonic() - start))


if __name__ == "__main__":
    main()
