"""The AWS adapter: the only module that imports aioboto3/botocore.

It builds the clients (region, profile, endpoints, TLS, timeouts, retries), implements the
object-store protocol for S3, and turns botocore's `ClientError`s into fanout errors whose
messages say what to do. Nothing botocore-shaped leaks past it.

Retries: botocore's `standard` mode retries transport errors, 5xx and throttling (S3 `SlowDown`
included) with jittered backoff, `max_attempts` times per request. fanout adds its own layer only
where botocore cannot help (quota admission, failed jobs).

Personalize answers both "too many requests per second" and "too many jobs in progress" with
`LimitExceededException` (HTTP 400). `legacy` mode does not retry it at all; `standard` and
`adaptive` retry it as throttling, and `adaptive` also slows the client down for what is really a
quota. So the Personalize client runs in `standard` mode with only `PERSONALIZE_ATTEMPTS`
attempts: a brief rate limit is absorbed, while a quota rejection comes back within seconds as
`RetryLater` and the submitter waits for jobs to finish instead of burning retries.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aioboto3
import aiobotocore.session
import aiohttp
import anyio
import boto3
import botocore
import botocore.session
from botocore import UNSIGNED, xform_name
from botocore.config import Config
from botocore.configprovider import ConfiguredEndpointProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoAuthTokenError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSOError,
    TokenRetrievalError,
)

from .awsargs import use_newer_model
from .errors import (
    ConfigError,
    FanoutError,
    InputError,
    JobExists,
    MergeError,
    RetryLater,
    SubmitError,
    UploadError,
)
from .records import JobSummary, JobType, job_options
from .storage import ObjectInfo, S3Uri

PERSONALIZE_ATTEMPTS = 3
READ_ATTEMPTS = 5  # reads of one object body, each from where the last one broke off


@dataclass(frozen=True, slots=True)
class AwsOptions:
    """How to reach AWS (or the emulator): the AWS CLI's global options, and a few more."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None  # Personalize (the service of the command, as in the CLI)
    s3_endpoint_url: str | None = None
    verify_ssl: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    max_attempts: int = 8
    max_pool_connections: int = 32
    sign: bool = True  # False: --no-sign-request


@dataclass(frozen=True, slots=True)
class Encryption:
    """SSE-KMS settings for objects fanout writes."""

    kms_key_arn: str | None

    def put_args(self) -> dict[str, Any]:
        if not self.kms_key_arn:
            return {}
        return {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": self.kms_key_arn,
            "BucketKeyEnabled": True,
        }


_PERMISSION = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObjects": "s3:DeleteObject",
}


def sha256_checksum(hexdigest: str) -> str:
    """S3's `x-amz-checksum-sha256` for the SHA-256 `hexdigest`: the digest in base64."""
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _kms_advice(code: str, detail: str, operation: str, key: str | None) -> str | None:
    """What to do about a KMS failure behind an S3 call, or None if it is not one."""
    the_key = f"the KMS key {key}" if key else "the KMS key"
    action = "kms:Decrypt" if operation in {"GetObject", "HeadObject"} else "kms:GenerateDataKey"
    if code == "KMS.DisabledException":
        return (
            f"{the_key} is disabled: enable it (aws kms enable-key --key-id KEY), or use an "
            f"enabled key that allows the caller {action}"
        )
    if code == "KMS.NotFoundException":
        return f"{the_key} does not exist in this account and region: check kmsKeyArn"
    if code == "KMS.KMSInvalidStateException":
        return (
            f"{the_key} cannot be used in its current state (pending deletion or import?): "
            "cancel its deletion (aws kms cancel-key-deletion), or use another key"
        )
    if code.startswith("KMS.") or (code in {"AccessDenied", "403"} and "kms:" in detail):
        return (
            f"{the_key} refused it ({code}): the key must exist, be enabled, and allow the "
            f"caller {action} (kms:GenerateDataKey to write, kms:Decrypt to read)"
        )
    return None


# A request that got no answer: the network, or a service that stopped answering.
_NO_ANSWER = (ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, EndpointConnectionError)

# The caller's credentials are missing or expired (an SSO session, a credential process): no
# retry can help, unlike a service that does not answer.
_CREDENTIALS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    SSOError,
    NoAuthTokenError,
)


def credentials_advice(exc: BaseException) -> str | None:
    """What to do when `exc` says the caller has no usable credentials; None if it does not."""
    if not isinstance(exc, _CREDENTIALS):
        return None
    return (
        f"no usable AWS credentials ({exc}): refresh them (`aws sso login`, the profile's "
        "keys, or the AWS_* variables), then resume the run (`fanout resume RUN`) or run the "
        "command again"
    )


# Codes of a service that is throttling or busy: a check that meets one after botocore's own
# retries failed for now, not for good (not a configuration error, exit 2).
_BUSY = {
    "LimitExceededException",
    "ThrottlingException",
    "TooManyRequestsException",
    "Throttling",
    "SlowDown",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalError",
}


def _busy(exc: ClientError) -> bool:
    """Whether `exc` says the service is throttling or failing for now (a code of `_BUSY`, or
    a 5xx)."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in _BUSY or (isinstance(status, int) and status >= 500)


def raise_if_busy(exc: ClientError, what: str) -> None:
    """Raise RetryLater (exit 1) if `exc` says the service is throttling or failing for now."""
    if _busy(exc):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        raise RetryLater(
            f"{what}: {error_code(exc) or status}: the service is throttling or busy (after "
            "botocore's retries): run the command again in a minute"
        ) from exc


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return ""


def raise_s3_error(
    exc: Exception,
    operation: str,
    uri: str,
    error: type[FanoutError] = FanoutError,
    *,
    key: str | None = None,
) -> NoReturn:
    """Raise `error` for a failed S3 call (a `ClientError`, a `BotoCoreError`, a broken body),
    with what to do about it. `key` is the KMS key the call used, if any."""
    code = error_code(exc)
    detail = error_message(exc)
    kms = _kms_advice(code, detail, operation, key)
    if kms is not None:
        message = f"{operation} on {uri} failed: {kms}"
    elif code in {"AccessDenied", "403", "Forbidden"}:
        permission = _PERMISSION.get(operation, f"s3:{operation}")
        message = f"access denied to {uri} ({operation}): the caller needs {permission} on it"
    elif code == "NoSuchBucket":
        message = f"bucket of {uri} does not exist (or is in another region)"
    elif code in {"NoSuchKey", "404", "NotFound"}:
        message = f"{uri} does not exist"
    elif isinstance(exc, ClientError):
        message = f"{operation} on {uri} failed: {code}: {detail}"
    elif (advice := credentials_advice(exc)) is not None:
        message = f"{operation} on {uri} failed: {advice}"
    elif isinstance(exc, BotoCoreError):
        message = f"{operation} on {uri} failed: S3 did not answer ({exc}): check the network"
    else:
        message = f"{operation} on {uri} failed: {exc}"
    raise error(message) from exc


@contextlib.contextmanager
def _s3_errors(
    operation: str,
    bucket: str,
    key: str = "",
    error: type[FanoutError] = UploadError,
    encryption: Encryption | None = None,
) -> Iterator[None]:
    """Translate botocore's errors of one S3 call into `error` (see `raise_s3_error`)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        kms_key = encryption.kms_key_arn if encryption is not None else None
        raise_s3_error(exc, operation, f"s3://{bucket}/{key}", error, key=kms_key)


class S3Store:
    """S3 for fanout: reads and listings through aioboto3, large writes through boto3 in threads.

    Uploads of tens of MB go through a synchronous boto3 client on worker threads: hashing
    releases the GIL, so several parts hash and send in parallel; and urllib3 sends the body as
    it is, where aiohttp copies every body once more (measured: 2× the memory and 0.65× the
    throughput of boto3's TransferManager with aioboto3, ≥ 1× with threads; benchmarks/upload.py).

    Every write carries its SHA-256 as S3's checksum (`x-amz-checksum-sha256`): a part's is the
    one the run journal records, so each part is hashed once, and S3 refuses a body that does
    not match it. That header is signed, so it binds the body to the signature as a signed
    payload hash would; the writes' client therefore sends `UNSIGNED-PAYLOAD` (`Aws`), which is
    what botocore sends over https with a checksum anyway, instead of hashing every body a
    second time over http.
    """

    def __init__(self, client: Any, sync_client: Any) -> None:
        self._client = client
        self._sync = sync_client

    async def list_objects(self, bucket: str, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        uri = f"s3://{bucket}/{prefix}"
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], int(obj["Size"]), str(obj.get("ETag", "")))
        except (ClientError, BotoCoreError) as exc:
            raise_s3_error(exc, "ListObjectsV2", uri, InputError)

    async def read_chunks(
        self, bucket: str, key: str, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        """The object's bytes in chunks. A body cut off mid-way (a reset connection, a truncated
        response) is picked up where it stopped, with a ranged GET of the same version (If-Match
        its ETag), up to `READ_ATTEMPTS` times: botocore retries requests, not bodies."""
        uri = f"s3://{bucket}/{key}"
        offset = 0
        etag: str | None = None
        for attempt in range(1, READ_ATTEMPTS + 1):
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if etag is not None:
                params.update(IfMatch=etag, Range=f"bytes={offset}-")
            try:
                response = await self._client.get_object(**params)
            except (ClientError, BotoCoreError) as exc:
                raise_s3_error(exc, "GetObject", uri, InputError)
            etag = etag or response.get("ETag")
            body = response["Body"]
            try:
                while chunk := await body.read(chunk_size):
                    offset += len(chunk)
                    yield chunk
                return
            except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if attempt == READ_ATTEMPTS or etag is None:
                    raise_s3_error(exc, "GetObject", uri, InputError)
                await anyio.sleep(0.1 * 2**attempt)
            finally:
                body.close()

    async def head(self, bucket: str, key: str, checksums: bool = False) -> dict[str, Any] | None:
        """The object's metadata (with `checksums`, its checksum too, as `ChecksumSHA256`…), or
        None if there is no such object."""
        mode = {"ChecksumMode": "ENABLED"} if checksums else {}
        try:
            return dict(await self._client.head_object(Bucket=bucket, Key=key, **mode))
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise_s3_error(exc, "HeadObject", f"s3://{bucket}/{key}")
        except BotoCoreError as exc:
            raise_s3_error(exc, "HeadObject", f"s3://{bucket}/{key}")

    async def upload_file(
        self, path: Path, bucket: str, key: str, encryption: Encryption, chunk: int = 16 << 20
    ) -> str:
        """Upload a local file (a result dataset's file), one chunk in memory at a time: a single
        PUT up to `chunk` bytes, multipart above. Returns the ETag; raises MergeError."""
        size = (await anyio.Path(path).stat()).st_size
        with _s3_errors("PutObject", bucket, key, MergeError, encryption):
            if size <= chunk:
                data = await anyio.Path(path).read_bytes()
                return await self._put_object(bucket, key, data, encryption)
            upload_id = await self._create_multipart(bucket, key, encryption)
            try:
                parts = []
                async with await anyio.open_file(path, "rb") as handle:
                    number = 1
                    while data := await handle.read(chunk):
                        parts.append(await self._upload_part(bucket, key, upload_id, number, data))
                        number += 1
                return await self._complete_multipart(bucket, key, upload_id, parts)
            except BaseException:
                with anyio.move_on_after(30, shield=True):
                    await self.abort_multipart(bucket, key, upload_id)
                raise

    async def delete_objects(self, bucket: str, keys: list[str]) -> None:
        """Delete the objects, 1,000 a request; raise MergeError if S3 could not delete one
        (DeleteObjects answers 200 and lists those keys under `Errors`)."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            try:
                response = await self._client.delete_objects(
                    Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise_s3_error(exc, "DeleteObjects", f"s3://{bucket}/", MergeError)
            if failed := response.get("Errors"):
                first = failed[0]
                code, said = first.get("Code", ""), first.get("Message", "")
                more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
                hint = (
                    " (the caller needs s3:DeleteObject on them)" if code == "AccessDenied" else ""
                )
                raise MergeError(
                    f"could not delete s3://{bucket}/{first.get('Key', '')}{more}: {code}: "
                    f"{said}{hint}"
                )

    async def check_bucket(self, bucket: str, prefix: str = "") -> None:
        """Raise ConfigError, saying what to do, unless the bucket exists and is reachable.

        A one-key listing of fanout's own prefix, not HeadBucket: the least-privilege policy
        (`fanout iam-policy`) allows ListBucket on those prefixes only, and HeadBucket carries
        no prefix."""
        try:
            await self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            raise_if_busy(exc, f"cannot check bucket {bucket}")
            code = error_code(exc)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise ConfigError(
                    f"bucket {bucket} does not exist (or not in this region): create it, or fix "
                    "the path"
                ) from exc
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise ConfigError(
                    f"access to bucket {bucket} denied: the caller needs s3:ListBucket on it"
                ) from exc
            raise ConfigError(f"bucket {bucket}: {code}") from exc
        except BotoCoreError as exc:
            raise ConfigError(f"cannot reach S3 for bucket {bucket}: {exc}") from exc
        where = await self._bucket_region(bucket)
        here = self._client.meta.region_name
        if where is not None and here and where != here:
            raise ConfigError(
                f"bucket {bucket} is in {where}, the jobs in {here}: Personalize reads and "
                f"writes buckets of the jobs' region only; use a bucket in {here}, or run the "
                f"jobs in {where} (--region {where})"
            )

    async def _bucket_region(self, bucket: str) -> str | None:
        """The bucket's region, as HeadBucket tells it (`x-amz-bucket-region`, on a redirect
        too); None if the caller may not ask (a policy without HeadBucket) or S3 does not say."""
        try:
            response = await self._client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            response = exc.response
        except BotoCoreError:
            return None
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = response.get("BucketRegion") or headers.get("x-amz-bucket-region")
        return str(region) if region else None

    async def _send(self, call: Any, data: bytes, sha256: str | None = None, **params: Any) -> Any:
        """`call(Body=data, ChecksumSHA256=…, **params)` on a worker thread, where the checksum
        is computed unless `sha256` (hex) gives it. (ChecksumAlgorithm goes too: botocore then
        names the algorithm, and computes nothing itself for a checksum given.)"""

        def send() -> Any:
            # hashlib releases the GIL: parts hash in parallel on their threads
            checksum = sha256_checksum(sha256 or hashlib.sha256(data).hexdigest())
            return call(Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum, **params)

        # Abandoned if the caller is cancelled: a stopping run does not wait for botocore's
        # retries of a request S3 does not answer (minutes). The request may still land; an
        # object or part it leaves is one the run never recorded, rewritten by a resume, and
        # multipart uploads are aborted.
        return await anyio.to_thread.run_sync(send, abandon_on_cancel=True)

    # Writes. Each public method raises UploadError, saying what to do, for any S3 failure; the
    # private twins raise botocore's errors, for `upload_file` to translate as a MergeError.

    async def put_object(
        self, bucket: str, key: str, data: bytes, encryption: Encryption, sha256: str | None = None
    ) -> str:
        """Upload one object with its SHA-256 checksum (`sha256`, hex, if the caller has it);
        return its ETag."""
        with _s3_errors("PutObject", bucket, key, encryption=encryption):
            return await self._put_object(bucket, key, data, encryption, sha256)

    async def create_multipart(self, bucket: str, key: str, encryption: Encryption) -> str:
        with _s3_errors("CreateMultipartUpload", bucket, key, encryption=encryption):
            return await self._create_multipart(bucket, key, encryption)

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        with _s3_errors("UploadPart", bucket, key):
            return await self._upload_part(bucket, key, upload_id, number, data)

    async def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]
    ) -> str:
        with _s3_errors("CompleteMultipartUpload", bucket, key):
            return await self._complete_multipart(bucket, key, upload_id, parts)

    async def _put_object(
        self, bucket: str, key: str, data: bytes, encryption: Encryption, sha256: str | None = None
    ) -> str:
        response = await self._send(
            self._sync.put_object, data, sha256, Bucket=bucket, Key=key, **encryption.put_args()
        )
        return str(response["ETag"])

    async def _create_multipart(self, bucket: str, key: str, encryption: Encryption) -> str:
        response = await self._client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **encryption.put_args()
        )
        return str(response["UploadId"])

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        response = await self._send(
            self._sync.upload_part,
            data,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumSHA256" in response:
            part["ChecksumSHA256"] = response["ChecksumSHA256"]
        return part

    async def _complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]
    ) -> str:
        response = await self._client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return str(response["ETag"])

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    async def abort_uploads(self, prefix: S3Uri) -> int:
        """Abort every unfinished multipart upload under `prefix` (left by a killed run)."""
        aborted = 0
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
                for upload in page.get("Uploads", []):
                    await self.abort_multipart(prefix.bucket, upload["Key"], upload["UploadId"])
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise_s3_error(exc, "ListMultipartUploads", str(prefix), UploadError)
        return aborted


class Aws:
    """The clients of one run. `async with Aws(options) as aws: aws.s3, aws.personalize`."""

    def __init__(
        self, options: AwsOptions | None = None, warn: Callable[[str], None] | None = None
    ) -> None:
        self.options = options or AwsOptions()
        self._warn = warn  # told when a request got no answer and is sent again
        self._stack = contextlib.AsyncExitStack()
        self._s3: S3Store | None = None
        self._personalize: Any = None
        self._session: aioboto3.Session | None = None
        self.region: str | None = None  # the clients', once open

    def _config(self, max_attempts: int | None = None) -> Config:
        unsigned = {} if self.options.sign else {"signature_version": UNSIGNED}
        return Config(
            **unsigned,
            retries={"mode": "standard", "max_attempts": max_attempts or self.options.max_attempts},
            connect_timeout=self.options.connect_timeout,
            read_timeout=self.options.read_timeout,
            max_pool_connections=self.options.max_pool_connections,
        )

    async def __aenter__(self) -> Aws:
        options = self.options
        # Members AWS added after this botocore (rankingInfluence) are sent, not refused.
        core = use_newer_model(aiobotocore.session.get_session())
        try:
            session = aioboto3.Session(
                profile_name=options.profile, region_name=options.region, botocore_session=core
            )
        except BotoCoreError as exc:
            raise ConfigError(f"AWS configuration: {exc}") from exc
        if not session.region_name:
            raise ConfigError(
                "no AWS region: give --region, set AWS_DEFAULT_REGION, or set region in the "
                "profile (the bucket and the jobs must be in the same region)"
            )
        self.region = session.region_name
        self._session = session
        verify: bool | str = options.ca_bundle or options.verify_ssl
        common = {"config": self._config(), "verify": verify}
        try:
            s3 = await self._open(
                session.client("s3", endpoint_url=options.s3_endpoint_url, **common),
                "S3",
                options.s3_endpoint_url,
                "--s3-endpoint-url",
            )
            self._personalize = await self._open(
                session.client(
                    "personalize",
                    endpoint_url=options.endpoint_url,
                    config=self._config(PERSONALIZE_ATTEMPTS),
                    verify=verify,
                ),
                "Personalize",
                options.endpoint_url,
                "--endpoint-url",
            )
            # Its writes carry a signed SHA-256 checksum: no second hash of every body (S3Store).
            unsigned_payload = Config(s3={"payload_signing_enabled": False})
            # The same data loader: S3's model is read and held once, not once a session (its
            # JSON took ~12 MiB more and its parse the time of a client each run).
            sync_core = botocore.session.get_session()
            sync_core.register_component("data_loader", core.get_component("data_loader"))
            sync_s3 = boto3.Session(
                profile_name=options.profile,
                region_name=session.region_name,
                botocore_session=sync_core,
            ).client(
                "s3",
                endpoint_url=options.s3_endpoint_url,
                config=self._config().merge(unsigned_payload),
                verify=verify,
            )
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._stack.aclose()
            if isinstance(exc, BotoCoreError):
                raise ConfigError(f"AWS configuration: {exc}") from exc
            raise
        self._stack.callback(sync_s3.close)
        self._s3 = S3Store(s3, sync_s3)
        if self._warn is not None:
            for client, service, limit in (
                (s3, "s3", options.max_attempts),
                (sync_s3, "s3", options.max_attempts),
                (self._personalize, "personalize", PERSONALIZE_ATTEMPTS),
            ):
                handler = functools.partial(self._no_answer, limit)
                client.meta.events.register_first(f"needs-retry.{service}", handler)
        return self

    def _no_answer(
        self,
        limit: int,
        caught_exception: object = None,
        attempts: int = 0,
        operation: Any = None,
        **_: Any,
    ) -> None:
        """botocore's `needs-retry` event of a client that makes `limit` attempts: say that a
        request got no answer and is tried again (a network that drops S3's answers otherwise
        shows nothing for minutes: 8 attempts of a 60 s read timeout). Decides nothing:
        botocore's retry handler, after it, does."""
        if not isinstance(caught_exception, _NO_ANSWER):
            return
        name = getattr(operation, "name", "a request")
        if attempts < limit and self._warn is not None:
            self._warn(
                f"warning: {name} got no answer ({caught_exception}); trying again "
                f"({attempts} of {limit} attempts so far)"
            )

    async def _open(self, client: Any, service: str, endpoint: str | None, flag: str) -> Any:
        """Enter the client `session.client(...)` made; a malformed endpoint URL (given as
        `flag`, or configured: AWS_ENDPOINT_URL_*) is a ConfigError that names it."""
        try:
            return await self._stack.enter_async_context(client)
        except ValueError as exc:  # botocore's "Invalid endpoint: …"
            given = f"{flag} {endpoint!r}" if endpoint else "the configured endpoint"
            raise ConfigError(
                f"{service}: {exc}: {given} must be a URL such as http://127.0.0.1:4566 "
                f"(check {flag} and the AWS_ENDPOINT_URL* variables)"
            ) from exc

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def s3(self) -> S3Store:
        if self._s3 is None:
            raise RuntimeError("Aws is not open: use `async with Aws(...)`")
        return self._s3

    @property
    def personalize(self) -> Any:
        if self._personalize is None:
            raise RuntimeError("Aws is not open: use `async with Aws(...)`")
        return self._personalize

    @property
    def batch_jobs(self) -> BatchJobs:
        return BatchJobs(self.personalize)

    def jobs(self, job_type: JobType) -> BatchJobs:
        """Batch inference jobs, or batch segment jobs (same calls, other names)."""
        return BatchJobs(self.personalize, job_type)

    def _client(self, service: str) -> Any | None:
        """A client of `service` for a check or two (KMS, IAM), with the run's options and
        session: use it as `async with`. None (skip the check) when the run's endpoints were
        given on the command line (`--endpoint-url`, `--s3-endpoint-url`: the emulator, MinIO,
        LocalStack) and `service` has none configured (AWS_ENDPOINT_URL_<SERVICE>,
        AWS_ENDPOINT_URL, the config file's `services` section): AWS's own endpoint would be
        another world than the one the run talks to, and a run against a local endpoint must
        not reach AWS."""
        options = self.options
        session = self._session
        if session is None:
            raise RuntimeError("Aws is not open: use `async with Aws(...)`")
        core = session._session  # the botocore session under aioboto3's
        if (options.endpoint_url or options.s3_endpoint_url) and not _configured_endpoint(
            core, service
        ):
            return None
        verify: bool | str = options.ca_bundle or options.verify_ssl
        return session.client(service, config=self._config(), verify=verify)

    async def check_kms_key(self, key_arn: str) -> None:
        """Raise ConfigError unless the key is in the clients' region (S3 encrypts an object
        only with a key in its bucket's region, which is the jobs') and the caller can make a
        data key with it."""
        region = key_arn.split(":")[3] if key_arn.count(":") >= 5 else ""
        if region and self.region and region != self.region:
            raise ConfigError(
                f"KMS key {key_arn} is in {region}, but the region is {self.region}: S3 and "
                "Personalize use a key in the bucket's and the jobs' region; give a key of "
                f"{self.region}, or --region {region} if the bucket and the jobs are there"
            )
        if (client := self._client("kms")) is None:
            return
        try:
            async with client as kms:
                await kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256")
        except ClientError as exc:
            raise_if_busy(exc, f"cannot check KMS key {key_arn}")
            code = error_code(exc)
            raise ConfigError(
                f"KMS key {key_arn} cannot make a data key ({code}): it must exist, be enabled, "
                "and allow the caller kms:GenerateDataKey and kms:Decrypt"
            ) from exc
        except BotoCoreError as exc:
            raise ConfigError(f"cannot reach KMS for {key_arn}: {exc}") from exc

    async def check_role(self, role_arn: str) -> None:
        """Raise ConfigError if IAM says the role does not exist: no role of that name, or one
        whose ARN is not this one (another account's, or another path). A caller that may not
        read IAM (AccessDenied), or cannot reach it, is not stopped: creating the job checks."""
        if (client := self._client("iam")) is None:
            return
        try:
            async with client as iam:
                found = await iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                raise ConfigError(
                    f"role {role_arn} does not exist in this account: check --role-arn (`fanout "
                    "iam-policy` prints the policy the role needs)"
                ) from exc
            return
        except BotoCoreError:
            return
        actual = str(found.get("Role", {}).get("Arn", role_arn))
        if actual != role_arn:
            raise ConfigError(
                f"role {role_arn} does not exist: this account's role of that name is {actual}; "
                "give that ARN to --role-arn (its account and path must match)"
            )

    async def check_filter(self, arn: str) -> str:
        """Raise ConfigError unless the filter exists and is ACTIVE; its expression."""
        try:
            found = (await self.personalize.describe_filter(filterArn=arn))["filter"]
        except ClientError as exc:
            raise_if_busy(exc, f"cannot describe filter {arn}")
            if error_code(exc) == "ResourceNotFoundException":
                raise ConfigError(
                    f"filter {arn} does not exist in this account and region: check --filter-arn"
                ) from exc
            said = exc.response.get("Error", {}).get("Message")
            raise ConfigError(
                f"cannot describe filter {arn}: {error_code(exc)}" + (f": {said}" if said else "")
            ) from exc
        except BotoCoreError as exc:
            raise ConfigError(f"cannot reach Personalize to describe {arn}: {exc}") from exc
        if found.get("status") != "ACTIVE":
            raise ConfigError(f"filter {arn} is {found.get('status')}: wait until it is ACTIVE")
        return str(found.get("filterExpression") or "")


def _configured_endpoint(core: Any, service: str) -> str | None:
    """The endpoint botocore's session `core` has configured for `service` (environment or
    config file), as its clients would find it; None if none, or if told to ignore them."""
    if core.get_config_variable("ignore_configured_endpoint_urls"):
        return None
    provider = ConfiguredEndpointProvider(
        full_config=core.full_config, scoped_config=core.get_scoped_config(), client_name=service
    )
    found = provider.provide()
    return str(found) if found else None


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return float(value.timestamp())


def _summary(
    job: dict[str, Any], arn_key: str = "batchInferenceJobArn", described: bool = False
) -> JobSummary:
    return JobSummary(
        arn=str(job[arn_key]),
        name=str(job.get("jobName", "")),
        status_text=str(job.get("status", "")),
        failure_reason=job.get("failureReason") or None,
        created=_epoch(job.get("creationDateTime")),
        updated=_epoch(job.get("lastUpdatedDateTime")),
        options=job_options(job) if described else None,
    )


_JOB_HINTS = {
    "InvalidInputException": "check the job options (ARNs, paths, numResults, job config)",
    "ResourceNotFoundException": "check that the solution version, filter and role exist in "
    "this account and region",
    "ResourceInUseException": "the solution version or filter is not ACTIVE yet: wait for it",
    "TooManyTagsException": "use at most 50 tags",
    "AccessDeniedException": "the caller needs personalize:CreateBatchInferenceJob, "
    "ListBatchInferenceJobs, DescribeBatchInferenceJob and iam:PassRole on the role",
}


def _job_error(exc: Exception, operation: str) -> NoReturn:
    """Map a Personalize failure to RetryLater, JobExists or SubmitError (with what to do)."""
    if isinstance(exc, ParamValidationError):  # refused before sending: retrying cannot help
        raise SubmitError(
            f"{operation}: the request does not fit botocore {botocore.__version__}'s model of "
            f"Personalize: {exc} (upgrade fanout's botocore, or leave that member out)"
        ) from exc
    if (advice := credentials_advice(exc)) is not None:
        raise SubmitError(f"{operation} failed: {advice}") from exc
    if isinstance(exc, BotoCoreError):  # no answer after botocore's retries
        raise RetryLater(f"{operation}: Personalize did not answer: {exc}") from exc
    response: dict[str, Any] = exc.response if isinstance(exc, ClientError) else {}
    code = error_code(exc)
    detail = response.get("Error", {}).get("Message", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if isinstance(exc, ClientError) and _busy(exc):  # the rate, the quota, a 5xx
        raise RetryLater(f"{operation}: {code or status}: {detail}") from exc
    if code == "ResourceAlreadyExistsException":
        raise JobExists(f"{operation}: {detail}") from exc
    hint = _JOB_HINTS.get(code, "see the message")
    raise SubmitError(f"{operation} failed: {code}: {detail} ({hint})") from exc


class BatchJobs:
    """Batch inference (or segment) jobs of the account: create, list (page by page), describe."""

    def __init__(self, client: Any, job_type: JobType = "inference") -> None:
        self._client = client
        noun = "Inference" if job_type == "inference" else "Segment"
        self._create = f"CreateBatch{noun}Job"
        self._list = f"ListBatch{noun}Jobs"
        self._describe = f"DescribeBatch{noun}Job"
        self._arn = f"batch{noun}JobArn"
        self._listed = f"batch{noun}Jobs"
        self._described = f"batch{noun}Job"

    def _call(self, operation: str) -> Any:
        return getattr(self._client, xform_name(operation))

    async def create_job(self, request: dict[str, Any]) -> str:
        try:
            response = await self._call(self._create)(**request)
        except (ClientError, BotoCoreError) as exc:
            _job_error(exc, self._create)
        return str(response[self._arn])

    async def list_jobs_page(self, token: str | None) -> tuple[list[JobSummary], str | None]:
        """One page of every job of this type in the account (all solution versions)."""
        params: dict[str, Any] = {"maxResults": 100}
        if token:
            params["nextToken"] = token
        try:
            response = await self._call(self._list)(**params)
        except (ClientError, BotoCoreError) as exc:
            _job_error(exc, self._list)
        jobs = [_summary(job, self._arn) for job in response.get(self._listed, [])]
        return jobs, response.get("nextToken") or None

    async def describe_job(self, arn: str) -> JobSummary | None:
        """The job, or None if the service does not know it."""
        try:
            response = await self._call(self._describe)(**{self._arn: arn})
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            _job_error(exc, self._describe)
        except BotoCoreError as exc:
            _job_error(exc, self._describe)
        return _summary(response[self._described], self._arn, described=True)


@dataclass(frozen=True, slots=True)
class SolutionVersionInfo:
    arn: str
    status: str
    recipe_arn: str
    recipe_type: str


async def describe_solution_version(personalize: Any, arn: str) -> SolutionVersionInfo:
    """The solution version's status and recipe (DescribeSolutionVersion + DescribeRecipe)."""
    try:
        version = (await personalize.describe_solution_version(solutionVersionArn=arn))[
            "solutionVersion"
        ]
        recipe_arn = str(version["recipeArn"])
        recipe = (await personalize.describe_recipe(recipeArn=recipe_arn))["recipe"]
    except ClientError as exc:
        raise_if_busy(exc, f"cannot describe solution version {arn}")
        code = error_code(exc)
        detail = exc.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            raise ConfigError(
                f"solution version {arn} does not exist in this account and region: check "
                "--solution-version-arn and --region"
            ) from exc
        raise ConfigError(f"cannot describe solution version {arn}: {code}: {detail}") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"cannot reach Personalize to describe {arn}: {exc}") from exc
    return SolutionVersionInfo(arn, str(version["status"]), recipe_arn, str(recipe["recipeType"]))
