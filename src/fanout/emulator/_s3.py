"""S3 (with KMS, IAM and STS) for the emulator: moto's server behind a thin fault-and-KMS front.

moto is the ecosystem's standard S3 double; this module adds what the emulator needs on top:

- `throttle_rate` answers that fraction of S3 requests with 503 `SlowDown`, as S3 does under load;
- an SSE-KMS write naming a key that does not exist or is disabled is refused with the errors S3
  returns (`KMS.NotFoundException`, `KMS.DisabledException`); moto alone stores any key ID;
- a KMS request naming its key by ARN reaches moto naming it by key ID, as KMS takes either:
  moto looks some operations' keys up by ID only (`aws kms disable-key --key-id ARN` was a 500);
- a key that is not enabled cannot be used: KMS refuses to make data keys, encrypt or decrypt
  with it (`DisabledException`, `KMSInvalidStateException` while pending deletion), and S3
  refuses to read an object encrypted under it (`KMS.DisabledException`); moto does neither;
- an object uploaded in parts reports a composite checksum as S3 does (`…-N`, COMPOSITE);
- a write whose `Content-MD5`, `x-amz-checksum-sha256`, `-sha1` or `-crc32` header does not
  match its body is refused with `BadDigest` (`InvalidDigest` for an MD5 that is not one), as
  S3 refuses it; moto stores whatever checksum it is given;
- the emulator's own job traffic carries an internal header and is never faulted.

moto keeps its state in module globals, so every emulator in one process shares one S3 world;
seeding is idempotent for that reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import random
import re
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3
from botocore.config import Config
from moto.kms.models import kms_backends
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

from ._serving import ServerThread
from ._settings import DEFAULT_ACCOUNT_ID, EmulatorSettings

INTERNAL_HEADER = "x-fanout-emulator-internal"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SERVICE_ROLE_NAME = "fanout-personalize-batch"
KMS_ALIAS = "alias/fanout-emulator"

_StartResponse = Callable[..., Any]
_KEY_USES = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)
# The checksum headers of a write S3 checks against the body: the algorithm's name in S3's
# message, and the digest.
_CHECKSUMS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "HTTP_X_AMZ_CHECKSUM_SHA256": ("SHA256", lambda body: hashlib.sha256(body).digest()),
    "HTTP_X_AMZ_CHECKSUM_SHA1": ("SHA1", lambda body: hashlib.sha1(body).digest()),
    "HTTP_X_AMZ_CHECKSUM_CRC32": ("CRC32", lambda body: zlib.crc32(body).to_bytes(4, "big")),
}
_KEY_ARN = re.compile(
    r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):key/(?P<id>[0-9A-Za-z-]+)"
)


def _elsewhere(region: str, key: str) -> bool:
    """Whether `key` is the ARN of a key in another region or account than the emulator's:
    KMS there has no such key, whatever its ID (moto looks keys up by ID alone)."""
    match = _KEY_ARN.fullmatch(key)
    return match is not None and (match["region"], match["account"]) != (region, DEFAULT_ACCOUNT_ID)


def _s3_error(code: str, message: str, status: str) -> tuple[str, bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>0000000000000000</RequestId></Error>"
    ).encode()
    return status, body


_SSE_METHODS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})


def _key_arn(region: str, key_id: str) -> str:
    """The ARN of an existing KMS key named by ID, ARN or alias."""
    try:
        return str(kms_backends[DEFAULT_ACCOUNT_ID][region].describe_key(key_id).arn)
    except Exception:  # checked to exist just before: keep the name as given
        return key_id


def kms_key_state(region: str, key_id: str) -> str | None:
    """The KeyState of a KMS key (ID, ARN or alias) in moto's KMS; None if there is none."""
    if _elsewhere(region, key_id):
        return None
    backend = kms_backends[DEFAULT_ACCOUNT_ID][region]
    try:
        key = backend.describe_key(key_id)
    except Exception:  # moto raises its own NotFoundException family; any failure means "no key"
        return None
    return str(getattr(key, "key_state", "Enabled"))


class _Front:
    """WSGI middleware in front of moto: fault injection and KMS key checks for S3 requests."""

    def __init__(self, app: Any, settings: EmulatorSettings, rng: random.Random) -> None:
        self._app = app
        self._settings = settings
        self._rng = rng
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        service = _service_of(environ)
        if service == "kms":
            named = _key_named(environ)
            if named is not None and _elsewhere(self._settings.region, named):
                body = json.dumps(
                    {"__type": "NotFoundException", "message": f"Key '{named}' does not exist"}
                ).encode()
                return _answer(
                    start_response, "400 Bad Request", body, "application/x-amz-json-1.1"
                )
            key_id = _key_arn_to_id(environ)
            refusal = self._unusable_key(environ, key_id)
            if refusal is not None:
                return _answer(start_response, *refusal, "application/x-amz-json-1.1")
        if service == "s3" and not environ.get("HTTP_X_FANOUT_EMULATOR_INTERNAL"):
            refusal = self._refusal(environ)
            if refusal is not None:
                _request_body(environ)  # drained: keep-alive connections stay usable
                return _answer(start_response, *refusal, "application/xml")
            if environ.get("REQUEST_METHOD") in {"GET", "HEAD"}:
                start_response = _composite_checksums(start_response)
            if environ.get("REQUEST_METHOD") == "POST":
                return _keeping_bucket_key(self._app, environ, start_response)
        return self._app(environ, start_response)  # type: ignore[no-any-return]

    def _unusable_key(
        self, environ: dict[str, Any], key_id: str | None
    ) -> tuple[str, bytes] | None:
        """KMS's refusal of a cryptographic operation with a key that is not enabled."""
        operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rsplit(".", 1)[-1]
        if operation not in _KEY_USES or not key_id:
            return None
        state = kms_key_state(self._settings.region, key_id)
        if state in (None, "Enabled"):
            return None  # an unknown key: moto says so itself
        code = "DisabledException" if state == "Disabled" else "KMSInvalidStateException"
        message = f"{key_id} is {'disabled' if state == 'Disabled' else state}."
        return "400 Bad Request", json.dumps({"__type": code, "message": message}).encode()

    def _refusal(self, environ: dict[str, Any]) -> tuple[str, bytes] | None:
        rate = self._settings.throttle_rate
        if rate > 0:
            with self._lock:
                throttled = self._rng.random() < rate
            if throttled:
                return _s3_error("SlowDown", "Please reduce your request rate.", "503 Slow Down")
        if environ.get("REQUEST_METHOD") == "GET":
            if _unknown_continuation(environ):
                message = "The continuation token provided is incorrect"
                return _s3_error("InvalidArgument", message, "400 Bad Request")
            held, under = _object_key_state(self._settings.region, environ)
            if held not in (None, "Enabled"):
                return _s3_error("KMS.DisabledException", f"{under} is {held}.", "400 Bad Request")
        if environ.get("REQUEST_METHOD") in {"PUT", "POST"}:
            sse = environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION")
            key_id = environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID")
            if sse is not None and sse not in _SSE_METHODS:
                return _s3_error(
                    "InvalidArgument",
                    "The encryption method specified is not supported",
                    "400 Bad Request",
                )
            if key_id and sse not in ("aws:kms", "aws:kms:dsse"):
                return _s3_error(
                    "InvalidArgument",
                    "Server Side Encryption with AWS KMS managed key requires HTTP header "
                    "x-amz-server-side-encryption : aws:kms",
                    "400 Bad Request",
                )
            if sse == "aws:kms" and key_id:
                state = kms_key_state(self._settings.region, key_id)
                if state is None:
                    return _s3_error(
                        "KMS.NotFoundException", f"Invalid keyId '{key_id}'", "400 Bad Request"
                    )
                if state != "Enabled":
                    return _s3_error(
                        "KMS.DisabledException", f"{key_id} is {state}.", "400 Bad Request"
                    )
                # S3 keeps (and gives back) the key's ARN, however the request named it.
                environ["HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID"] = _key_arn(
                    self._settings.region, key_id
                )
            return _bad_digest(environ)
        return None


def _bad_digest(environ: dict[str, Any]) -> tuple[str, bytes] | None:
    """S3's refusal of a write whose Content-MD5 or checksum header does not match its body
    (the body is read and put back for moto). Not for a copy, nor CompleteMultipartUpload,
    whose checksum is the object's, not its body's; checksums that come in an aws-chunked
    body's trailer are not checked."""
    given = [header for header in _CHECKSUMS if header in environ]
    md5 = environ.get("HTTP_CONTENT_MD5")
    if not given and md5 is None:
        return None
    completing = environ.get("REQUEST_METHOD") == "POST" and "uploadId" in parse_qs(
        str(environ.get("QUERY_STRING", "")), keep_blank_values=True
    )
    chunked = "aws-chunked" in str(environ.get("HTTP_CONTENT_ENCODING", ""))
    if completing or chunked or environ.get("HTTP_X_AMZ_COPY_SOURCE"):
        return None
    body = _request_body(environ)
    if md5 is not None:
        try:
            want = base64.b64decode(md5, validate=True)
        except ValueError:
            want = b""
        if len(want) != 16:
            return _s3_error(
                "InvalidDigest", "The Content-MD5 you specified was invalid.", "400 Bad Request"
            )
        if hashlib.md5(body).digest() != want:
            message = "The Content-MD5 you specified did not match what we received."
            return _s3_error("BadDigest", message, "400 Bad Request")
    for header in given:
        name, digest = _CHECKSUMS[header]
        if base64.b64encode(digest(body)).decode() != environ[header]:
            message = f"The {name} you specified did not match the calculated checksum."
            return _s3_error("BadDigest", message, "400 Bad Request")
    return None


_PARTS_ETAG = re.compile(r'"?[0-9a-f]+-(\d+)"?')


def _composite_checksums(start_response: _StartResponse) -> _StartResponse:
    """`start_response`, answering for an object uploaded in N parts with its composite
    checksum as S3 gives it: `…-N`, `ChecksumType: COMPOSITE` (moto leaves the suffix off in
    HEAD, and both off when the upload named no ChecksumType)."""

    def respond(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
        names = {name.lower(): value for name, value in headers}
        parts = _PARTS_ETAG.fullmatch(names.get("etag", ""))
        if parts is None or names.get("x-amz-checksum-type", "COMPOSITE") != "COMPOSITE":
            return start_response(status, headers, *rest)
        fixed = []
        for name, value in headers:
            low = name.lower()
            if low.startswith("x-amz-checksum-") and low != "x-amz-checksum-type":
                value = value if "-" in value else f"{value}-{parts[1]}"
            fixed.append((name, value))
        if "x-amz-checksum-type" not in names and any(
            low.startswith("x-amz-checksum-") for low in names
        ):
            fixed.append(("x-amz-checksum-type", "COMPOSITE"))
        return start_response(status, fixed, *rest)

    return respond


def _answer(
    start_response: _StartResponse, status: str, body: bytes, content_type: str
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _key_arn_to_id(environ: dict[str, Any]) -> str | None:
    """A KMS request's `KeyId` given as a key ARN becomes the key ID (the body is rewritten);
    the KeyId, if the request names one."""
    body = _request_body(environ)
    if not body:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    key = request.get("KeyId") if isinstance(request, dict) else None
    match = _KEY_ARN.fullmatch(key) if isinstance(key, str) else None
    if match is not None:
        assert isinstance(request, dict)
        key = match["id"]
        body = json.dumps({**request, "KeyId": key}).encode()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
    return key if isinstance(key, str) else None


def _key_named(environ: dict[str, Any]) -> str | None:
    """The `KeyId` a KMS request names, as it names it."""
    try:
        request = json.loads(_request_body(environ) or b"null")
    except ValueError:
        return None
    key = request.get("KeyId") if isinstance(request, dict) else None
    return key if isinstance(key, str) else None


def _request_body(environ: dict[str, Any]) -> bytes:
    """The request's body, read here and put back for what reads it next (moto)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ.get("wsgi.input")
    body = stream.read(length) if stream is not None and length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _keeping_bucket_key(
    app: Any, environ: dict[str, Any], start_response: _StartResponse
) -> Iterable[bytes]:
    """`app` for a POST, keeping S3 Bucket Keys through a multipart upload, which moto drops: an
    upload created with `x-amz-server-side-encryption-bucket-key-enabled: true` is marked, and
    the object its CompleteMultipartUpload makes has the Bucket Key on, as S3 gives it back."""
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    path = unquote(str(environ.get("PATH_INFO", ""))).lstrip("/")
    bucket_name, _, key = path.partition("/")
    try:
        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_bucket(bucket_name)
    except Exception:  # no such bucket: moto answers for it
        return app(environ, start_response)  # type: ignore[no-any-return]
    uploads: dict[str, Any] = bucket.multiparts
    if "uploads" in query:  # CreateMultipartUpload
        asked = environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_BUCKET_KEY_ENABLED", "")
        before = set(uploads)
        answer = app(environ, start_response)
        if str(asked).lower() == "true":
            for upload_id in set(uploads) - before:
                uploads[upload_id].fanout_bucket_key = True
        return answer  # type: ignore[no-any-return]
    upload = uploads.get(query.get("uploadId", [""])[0])
    answer = app(environ, start_response)
    if upload is not None and getattr(upload, "fanout_bucket_key", False):
        with contextlib.suppress(Exception):  # not completed: nothing to mark
            bucket.keys[key].bucket_key_enabled = "true"
    return answer  # type: ignore[no-any-return]


def _object_key_state(region: str, environ: dict[str, Any]) -> tuple[str | None, str]:
    """The state of the KMS key an object read (path-style GET) is encrypted under, and the
    key: (None, "") for an object that is not under a KMS key, or not there."""
    bucket, _, key = unquote(str(environ.get("PATH_INFO", ""))).lstrip("/").partition("/")
    if not bucket or not key:
        return None, ""
    try:
        found = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(bucket, key)
    except Exception:  # no such bucket: moto answers for it
        return None, ""
    key_id = getattr(found, "kms_key_id", None)
    if getattr(found, "encryption", None) != "aws:kms" or not key_id:
        return None, ""
    return kms_key_state(region, key_id), key_id


def _unknown_continuation(environ: dict[str, Any]) -> bool:
    """Whether a ListObjectsV2 request gives a continuation token S3 never handed out (moto
    answered it with a 500 and a traceback)."""
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    token = query.get("continuation-token", [""])[0]
    if not token or query.get("list-type") != ["2"]:
        return False
    known = getattr(s3_backends[DEFAULT_ACCOUNT_ID]["global"], "_pagination_tokens", None)
    return isinstance(known, dict) and token not in known


def _service_of(environ: dict[str, Any]) -> str | None:
    """The SigV4 signing service of a request (`s3`, `kms`, …), from its Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    start = auth.find(marker)
    if start >= 0:
        credential = auth[start + len(marker) :].split(",", 1)[0]
    else:
        # Presigned URLs carry the scope in the query string; unsigned requests go to S3.
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if "X-Amz-Credential" not in query:
            return None if auth else "s3"
        credential = query["X-Amz-Credential"][0]
    scope = credential.split("/")
    return scope[3] if len(scope) > 3 else None


class _QuietHandler(MotoRequestHandler):
    """moto's request handler without werkzeug's line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class S3Server(ServerThread):
    """moto's server (S3, KMS, IAM, STS) on a loopback port, in a daemon thread."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self._settings = settings
        app = _Front(
            DomainDispatcherApplication(create_backend_app), settings, random.Random(settings.seed)
        )
        server = make_server(
            settings.host, settings.s3_port, app, threaded=True, request_handler=_QuietHandler
        )
        super().__init__(server, settings.host, "fanout-emulator-s3")
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def client(self, service: str) -> Any:
        """A boto3 client for the emulator's own traffic (never faulted); one per service."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self._new_client(service)
            return self._clients[service]

    def _new_client(self, service: str) -> Any:
        client = boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=self._settings.region,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"},
                max_pool_connections=16,
            ),
            **CREDENTIALS,
        )
        client.meta.events.register("before-sign", _mark_internal)
        return client

    def seed(self) -> tuple[str, str]:
        """Create (or find) the bucket, KMS key and service role; return (key ARN, role ARN)."""
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=self._settings.bucket)
        except Exception:
            kwargs: dict[str, Any] = {"Bucket": self._settings.bucket}
            if self._settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._settings.region}
            s3.create_bucket(**kwargs)

        kms = self.client("kms")
        aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
        if aliases.get(KMS_ALIAS):
            key_id = aliases[KMS_ALIAS]
        else:
            key_id = kms.create_key(Description="fanout emulator key for batch inputs and outputs")[
                "KeyMetadata"
            ]["KeyId"]
            kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key_id)
        key_arn = str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])

        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "personalize.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        try:
            role_arn = iam.get_role(RoleName=SERVICE_ROLE_NAME)["Role"]["Arn"]
        except Exception:
            role_arn = iam.create_role(
                RoleName=SERVICE_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust)
            )["Role"]["Arn"]
        return key_arn, str(role_arn)

    def role_exists(self, role_arn: str) -> bool:
        """Whether IAM has a role with exactly this ARN (its account and path included)."""
        name = role_arn.rsplit("/", 1)[-1]
        try:
            found = self.client("iam").get_role(RoleName=name)
        except Exception:
            return False
        return bool(found["Role"]["Arn"] == role_arn)


def _mark_internal(request: Any, **_: Any) -> None:
    request.headers[INTERNAL_HEADER] = "1"
