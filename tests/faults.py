"""A loopback HTTP proxy that injects the faults S3 shows in production, for the reliability tests.

Put it between fanout and the emulator's S3 (`AWS_ENDPOINT_URL_S3` → the proxy). For each request,
with probability `rate`, it answers with one fault instead of the real response, chosen at random
(seeded): `500 InternalError`, `503 SlowDown`, a connection reset before any answer, a slow body
(the real response, dribbled out with pauses), or a truncated body (the real headers, half the
body, then the connection closes). Every other request is forwarded as it is. `counts` says which
faults were injected.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

FAULTS = ("500", "503", "reset", "slow", "truncate")

_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    b"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
)


class FaultProxy:
    def __init__(self, upstream: str, rate: float, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _pick(self) -> str | None:
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            fault = self._rng.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(handler)
        fault = self._pick()
        if fault == "reset":
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            handler.close_connection = True
            handler.connection.close()
            return
        if fault in {"500", "503"}:
            code, message = (
                ("InternalError", "We encountered an internal error.")
                if fault == "500"
                else ("SlowDown", "Please reduce your request rate.")
            )
            payload = _ERROR.replace(b"{code}", code.encode()).replace(
                b"{message}", message.encode()
            )
            handler.send_response(int(fault))
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(payload)
            return
        status, headers, answer = self._forward(handler, body)
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                handler.send_header(name, value)
        declared = headers_length(headers, answer)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if fault == "truncate" and len(answer) > 1:
            handler.wfile.write(answer[: len(answer) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            step = max(1, len(answer) // 4)
            for start in range(0, len(answer), step):
                handler.wfile.write(answer[start : start + step])
                handler.wfile.flush()
                time.sleep(0.05)
            return
        handler.wfile.write(answer)

    def _forward(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            headers.pop("Transfer-Encoding", None)
            headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            return response.status, list(response.getheaders()), answer
        finally:
            connection.close()


def headers_length(headers: list[tuple[str, str]], answer: bytes) -> int:
    """What Content-Length to declare: the upstream's for HEAD, else the body's."""
    for name, value in headers:
        if name.lower() == "content-length" and not answer:
            return int(value)
    return len(answer)


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    body = b""
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            handler.rfile.readline()
            return body
        body += handler.rfile.read(size)
        handler.rfile.readline()
