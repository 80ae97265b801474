"""Running a socketserver-style server in a daemon thread on a loopback port."""

from __future__ import annotations

import threading
from typing import Any, Protocol


class _Serving(Protocol):
    server_address: Any  # (host, port) for the TCP servers used here

    def serve_forever(self, poll_interval: float = ...) -> None: ...
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...


class ServerThread:
    """Serves `server` in a daemon thread; `endpoint` is its http:// URL."""

    def __init__(self, server: _Serving, host: str, name: str) -> None:
        self._server = server
        self._host = host
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
