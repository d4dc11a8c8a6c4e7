"""Real transfers each way through an HTTP address, with the rate each reached: the demo
app's ``GET /bytes?n=N`` (a download) and ``POST /upload`` (an upload). A rate counts the
bytes after the first ``SKIP`` (the shaper's burst and the socket buffers fill at once)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

__all__ = ["SKIP", "download_rate", "upload_rate"]

SKIP = 512 * 1024
CHUNK = 64 * 1024


def download_rate(address: str, port: int, size: int, timeout: float = 60.0) -> float:
    """Bits per second of a ``size``-byte download, after its first SKIP bytes."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", f"/bytes?n={size}")
        reply = conn.getresponse()
        assert reply.status == 200, reply.status
        received, started = 0, 0.0
        while chunk := reply.read(CHUNK):
            received += len(chunk)
            if not started and received >= SKIP:
                started, counted = time.monotonic(), received
        assert received == size, (received, size)
        return (received - counted) * 8 / (time.monotonic() - started)
    finally:
        conn.close()


def upload_rate(address: str, port: int, size: int, timeout: float = 60.0) -> float:
    """Bits per second of a ``size``-byte upload, from its first SKIP bytes handed to the
    socket until the server answered that it read them all."""
    marks: list[float] = []

    def body() -> Iterator[bytes]:
        chunk, sent = b"u" * CHUNK, 0
        while sent < size:
            piece = chunk[:size - sent]
            sent += len(piece)
            if not marks and sent >= SKIP:
                marks.append(time.monotonic())
            yield piece

    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(size)})
        reply = conn.getresponse()
        answer = reply.read()
        assert reply.status == 200 and f'"received": {size}'.encode() in answer, answer
        return (size - SKIP) * 8 / (time.monotonic() - marks[0])
    finally:
        conn.close()
