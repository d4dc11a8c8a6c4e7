"""A tiny HTTP backend for data plane tests, run as its own process.

``python dataplane_backend.py ADDR PORT VERSION NAME [--error-every N] [--slow-every N]
[--slow-ms MS] [--fast-ms MS]``. ``GET /healthz`` answers 200. Any other GET answers
200 with body ``VERSION NAME`` and header ``X-Served-Version``, except that every
N-th request answers 500 (``--error-every``) and every N-th one is slow.
"""

from __future__ import annotations

import argparse
import itertools
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("port", type=int)
    parser.add_argument("version")
    parser.add_argument("name")
    parser.add_argument("--error-every", type=int, default=0)
    parser.add_argument("--slow-every", type=int, default=0)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--fast-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    counter = itertools.count(1)
    lock = threading.Lock()
    body = f"{args.version} {args.name}".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body are separate writes: without this, Nagle's algorithm and the
        # peer's delayed ACK stall every keep-alive response by ~40 ms
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, b"ok")
                return
            with lock:
                n = next(counter)
            slow = args.slow_every and n % args.slow_every == 0
            delay = args.slow_ms if slow else args.fast_ms
            if delay:
                time.sleep(delay / 1000.0)
            failed = args.error_every and n % args.error_every == 0
            self._send(500 if failed else 200, body)

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Served-Version", args.version)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *items: object) -> None:
            return

    class Server(socketserver.ThreadingMixIn, HTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def handle_error(self, request: object, client_address: object) -> None:
            return  # HAProxy ends health checks with a reset; nothing to report

    server = Server((args.addr, args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
