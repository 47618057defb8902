#!/usr/bin/env python3
"""HTTP/1.1 test server for skysocket.http's client (Python's http.server).
Prints its port, then serves until killed.
  GET /len/N      N bytes ("x"), Content-Length, keep-alive
  GET /chunked    a chunked response in three pieces
  POST /echo      the request body back (Content-Length or chunked request)
  GET /slow       answers after 2 s
  GET /close      HTTP/1.0-style body delimited by the close
Every response carries X-Peer-Port: the client's port (shows connection reuse)."""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body, extra=()):
        self.send_response(code)
        self.send_header("X-Peer-Port", str(self.client_address[1]))
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/len/"):
            self.send(200, b"x" * int(self.path[5:]))
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("X-Peer-Port", str(self.client_address[1]))
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/slow":
            time.sleep(2)
            self.send(200, b"late")
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True
        else:
            self.send(404, b"no")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.read(2)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send(200, body, [("X-Method", self.command)])

    do_PUT = do_POST


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
