"""A loopback S3 sink that accepts uploads and drops the bytes: the client's own ceiling.

It speaks just enough S3 for boto3, s3transfer and aiobotocore uploads: PutObject,
CreateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload; anything else
(HeadBucket, ...) gets an empty 200. Bodies are read in 1 MiB chunks into a reused buffer and
dropped; `Content-Length` and `Transfer-Encoding: chunked` bodies are both drained,
`Expect: 100-continue` is answered (by `http.server`) and connections are kept alive. ETags are
md5-shaped but not computed; a request's `x-amz-checksum-*` header is echoed back.

    .venv/bin/python benchmarks/discard_s3.py --port 0   # prints its URL; stop: ^C or SIGTERM

    from discard_s3 import start_discard_server
    url, stop = start_discard_server()
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

CHUNK = 1024 * 1024
_FAKE_MD5 = "d41d8cd98f00b204e9800998ecf8427e"  # any 32 hex digits will do
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class DiscardServer(ThreadingHTTPServer):
    """The threading HTTP server; counts the requests and body bytes it dropped."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests = 0
        self.received = 0  # body bytes, as sent on the wire (chunk framing excluded)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def count(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.received += nbytes

    def upload_id(self) -> str:
        with self._lock:
            return f"discard-{next(self._ids):08d}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; also makes http.server answer 100-continue
    disable_nagle_algorithm = True
    server: DiscardServer

    def setup(self) -> None:
        super().setup()
        self._buffer = memoryview(bytearray(CHUNK))

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- bodies -----------------------------------------------------------------------------------

    def _drain(self, length: int) -> None:
        buffer, readinto = self._buffer, self.rfile.readinto
        while length > 0:
            got = readinto(buffer[: min(length, CHUNK)])
            if not got:
                raise ConnectionError("client closed the connection mid-body")
            length -= got

    def _drain_body(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed the connection mid-body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return total
                self._drain(size + 2)  # the chunk and its CRLF
                total += size
        length = int(self.headers.get("Content-Length") or 0)
        self._drain(length)
        return length

    # -- answers ----------------------------------------------------------------------------------

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response_only(status)
        self.send_header("x-amz-request-id", "0000000000000000")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _checksum_headers(self) -> dict[str, str]:
        headers = {"ETag": f'"{_FAKE_MD5}"'}
        for name, value in self.headers.items():
            if name.lower().startswith("x-amz-checksum-") and name.lower() != "x-amz-checksum-type":
                headers[name.lower()] = value
        return headers

    def _bucket_key(self) -> tuple[str, str]:
        path = urlsplit(self.path).path.lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def do_PUT(self) -> None:
        nbytes = self._drain_body()
        self.server.count(nbytes)
        self._reply(200, headers=self._checksum_headers())

    def do_POST(self) -> None:
        nbytes = self._drain_body()
        self.server.count(nbytes)
        query = self._query()
        bucket, key = (escape(part) for part in self._bucket_key())
        if "uploads" in query:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<InitiateMultipartUploadResult xmlns="{_XMLNS}"><Bucket>{bucket}</Bucket>'
                f"<Key>{key}</Key><UploadId>{self.server.upload_id()}</UploadId>"
                "</InitiateMultipartUploadResult>"
            )
            self._reply(200, body.encode())
        elif "uploadId" in query:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<CompleteMultipartUploadResult xmlns="{_XMLNS}">'
                f"<Location>{self.server.url}/{bucket}/{key}</Location><Bucket>{bucket}</Bucket>"
                f"<Key>{key}</Key><ETag>&quot;{_FAKE_MD5}-1&quot;</ETag>"
                "</CompleteMultipartUploadResult>"
            )
            self._reply(200, body.encode())
        else:
            self._reply(200)

    def do_DELETE(self) -> None:
        self.server.count(self._drain_body())
        self._reply(204)

    def do_GET(self) -> None:
        self.server.count(self._drain_body())
        self._reply(200)

    def do_HEAD(self) -> None:
        self.server.count(self._drain_body())
        self._reply(200)


def start_discard_server(host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve on `host:port` (0 = a free port) in a daemon thread; return (url, stop)."""
    server = serve_in_thread(host, port)
    return server.url, lambda: stop_server(server)


def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> DiscardServer:
    """Like `start_discard_server`, but the server itself (for its `received` counter)."""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("the discard server binds to loopback only")
    server = DiscardServer(host, port)
    thread = threading.Thread(target=server.serve_forever, name="discard-s3", daemon=True)
    thread.start()
    return server


def stop_server(server: DiscardServer) -> None:
    server.shutdown()
    server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = DiscardServer(args.host, args.port)
    # Stop cleanly on ^C and on SIGTERM, even when started in the background (SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"dropped {server.received:,} bytes in {server.requests:,} requests", flush=True)


if __name__ == "__main__":
    main()
