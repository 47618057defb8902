#!/usr/bin/env python3
"""Sequential connection churn against an echo server: connect, send 16 bytes, read the
echo, close; N times. Source addresses rotate over 127.0.0.2-127.0.0.251 so closed
connections in TIME_WAIT never exhaust the ephemeral ports of one address.

usage: churn.py PORT N [TIMEOUT_S]   exit 0 when all N round trips echoed exactly."""
import socket
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 300)
t0 = time.monotonic()
for i in range(n):
    if time.monotonic() > deadline:
        sys.exit(f"churn: timed out after {i} connections")
    msg = b"%015d\n" % i
    try:
        s = socket.socket()
        s.settimeout(10)
        s.bind((f"127.0.0.{2 + i % 250}", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(64)
            if not chunk:
                break
            got += chunk
        s.close()
    except OSError as e:
        sys.exit(f"churn: connection {i + 1}: {e}")
    if got != msg:
        sys.exit(f"churn: connection {i + 1}: echoed {got!r}, sent {msg!r}")
dt = time.monotonic() - t0
print(f"churn: {n} connections in {dt:.1f} s ({n / dt:.0f}/s)")
