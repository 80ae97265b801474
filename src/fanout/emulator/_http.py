"""The Personalize endpoint's wire protocol: AWS JSON 1.1 over HTTP on loopback.

`POST /` with `X-Amz-Target: AmazonPersonalize.<Operation>` and a JSON body; success is HTTP 200
with `application/x-amz-json-1.1` and an `x-amzn-RequestId`; errors are HTTP 400 with
`{"__type": "<Exception>", "message": "..."}`, exactly the shape botocore parses.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from ._personalize import PersonalizeService, ServiceError
from ._serving import ServerThread

_CONTENT_TYPE = "application/x-amz-json-1.1"
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def _signing_region(authorization: str) -> str | None:
    """The region a SigV4 request was signed for (`Credential=AKID/DATE/REGION/…`)."""
    _, found, rest = authorization.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/") if found else []
    return scope[2] if len(scope) > 2 else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator's callers do their own logging."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = self._dispatch(raw)
        except ServiceError as exc:
            self._send(exc.status, {"__type": exc.code, "message": exc.message})
            return
        except Exception as exc:  # a bug in the emulator: answer like the service's 500
            self._send(500, {"__type": "InternalFailure", "message": f"fanout emulator: {exc!r}"})
            return
        self._send(200, body)

    def do_GET(self) -> None:
        self._send(404, {"__type": "UnknownOperationException", "message": "Use POST /."})

    def _dispatch(self, raw: bytes) -> dict[str, Any]:
        service = self.server.service
        if self.path.split("?", 1)[0] != "/":
            raise ServiceError("UnknownOperationException", f"No route for {self.path}.", 404)
        if service.settings.require_signature and not self.headers.get("Authorization"):
            raise ServiceError(
                "MissingAuthenticationTokenException", "Missing Authentication Token", 403
            )
        target = self.headers.get("X-Amz-Target", "")
        prefix, _, operation = target.partition(".")
        if prefix != service.shapes.target_prefix or not operation:
            raise ServiceError(
                "UnknownOperationException",
                f"X-Amz-Target must be {service.shapes.target_prefix}.<Operation>; got "
                f"{target or 'nothing'}.",
            )
        try:
            params = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise ServiceError(
                "SerializationException", "Request body is not valid JSON."
            ) from None
        region = _signing_region(self.headers.get("Authorization", ""))
        if region and region != service.settings.region:
            return service.call_elsewhere(region, operation, params)
        return service.call(operation, params)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = orjson.dumps(body)
        self.send_response(status, _PHRASES.get(status))
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if status >= 400:
            self.send_header("x-amzn-ErrorType", str(body.get("__type", "")))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: PersonalizeService) -> None:
        super().__init__(address, _Handler)
        self.service = service


class PersonalizeServer(ServerThread):
    """The Personalize endpoint on a loopback port, in a daemon thread."""

    def __init__(self, service: PersonalizeService, host: str, port: int) -> None:
        super().__init__(_Server((host, port), service), host, "fanout-emulator-personalize")
