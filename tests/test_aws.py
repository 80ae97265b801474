"""The AWS adapter's S3 store: every failure comes out as a fanout error that says what to do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
)

from fanout.aws import BatchJobs, Encryption, S3Store, raise_s3_error
from fanout.errors import FanoutError, MergeError, RetryLater, SubmitError, UploadError

KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def client_error(code: str, message: str = "", operation: str = "PutObject") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


DISABLED = client_error("KMS.DisabledException", f"{KEY} is Disabled.")


class Raising:
    """A boto3 (sync) client double whose every call raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(**params: Any) -> Any:
            self.calls.append(name)
            raise self.error

        return call


class AsyncRaising(Raising):
    """An aioboto3 client double whose every call raises `error`."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(**params: Any) -> Any:
            self.calls.append(name)
            raise self.error

        return call


def store(error: Exception) -> S3Store:
    return S3Store(AsyncRaising(error), Raising(error))


WRITES: dict[str, Callable[[S3Store], Awaitable[Any]]] = {
    "PutObject": lambda s: s.put_object("b", "k/x", b"data", Encryption(KEY)),
    "CreateMultipartUpload": lambda s: s.create_multipart("b", "k/x", Encryption(KEY)),
    "UploadPart": lambda s: s.upload_part("b", "k/x", "up-1", 1, b"data"),
    "CompleteMultipartUpload": lambda s: s.complete_multipart("b", "k/x", "up-1", []),
}
ERRORS: dict[str, Exception] = {
    "disabled-key": DISABLED,
    "access-denied": client_error("AccessDenied", "Access Denied"),
    "unreachable": EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
}


@pytest.mark.parametrize("operation", WRITES)
@pytest.mark.parametrize("error", ERRORS.values(), ids=ERRORS.keys())
async def test_every_write_raises_an_upload_error_not_botocores(
    operation: str, error: Exception
) -> None:
    """put_object and the multipart calls turn ClientError and BotoCoreError into UploadError."""
    with pytest.raises(UploadError) as caught:
        await WRITES[operation](store(error))
    assert not isinstance(caught.value, ClientError | BotoCoreError)
    assert caught.value.__cause__ is error
    assert "s3://b/k/x" in str(caught.value) and operation in str(caught.value)


async def test_a_disabled_kms_key_says_to_enable_it() -> None:
    """The message names the key and says what to do: enable it, or grant kms:GenerateDataKey."""
    with pytest.raises(UploadError) as caught:
        await store(DISABLED).put_object("b", "run/_fanout/journal.jsonl", b"{}", Encryption(KEY))
    message = str(caught.value)
    assert f"the KMS key {KEY} is disabled: enable it" in message
    assert "kms:GenerateDataKey" in message
    assert "s3://b/run/_fanout/journal.jsonl" in message


async def test_upload_file_raises_a_merge_error(tmp_path: Path) -> None:
    """A result file that cannot be uploaded is a MergeError, single PUT or multipart."""
    local = tmp_path / "part.parquet"
    local.write_bytes(b"x" * 10)
    for chunk in (1 << 20, 4):  # one PUT; multipart
        with pytest.raises(MergeError, match="is disabled: enable it"):
            await store(DISABLED).upload_file(local, "b", "out/p.parquet", Encryption(KEY), chunk)


@pytest.mark.parametrize(
    ("code", "operation", "expected"),
    [
        ("KMS.NotFoundException", "PutObject", "does not exist in this account and region"),
        ("KMS.KMSInvalidStateException", "PutObject", "cancel its deletion"),
        ("KMS.AccessDeniedException", "PutObject", "allow the caller kms:GenerateDataKey"),
        ("KMS.DisabledException", "GetObject", "allows the caller kms:Decrypt"),
    ],
)
def test_kms_failures_say_what_to_do(code: str, operation: str, expected: str) -> None:
    """Each KMS refusal S3 passes on gets advice for its cause and for reads or writes."""
    with pytest.raises(FanoutError, match=expected):
        raise_s3_error(client_error(code, operation=operation), operation, "s3://b/k")


def test_access_denied_by_the_key_policy_names_the_kms_action() -> None:
    """S3's AccessDenied for a KMS action points at the key, not at an S3 permission."""
    denied = client_error(
        "AccessDenied", f"User: arn:aws:iam::1:user/u is not authorized to perform: "
        f"kms:GenerateDataKey on resource: {KEY}",
    )  # fmt: skip
    with pytest.raises(UploadError) as caught:
        raise_s3_error(denied, "PutObject", "s3://b/k", UploadError, key=KEY)
    assert "kms:GenerateDataKey" in str(caught.value) and "s3:PutObject" not in str(caught.value)


async def test_a_request_botocore_refuses_is_a_submit_error_not_retry_later() -> None:
    """A request the client's model refuses before sending fails the job: retrying cannot help."""
    refused = ParamValidationError(report='Unknown parameter in batchInferenceJobConfig: "x"')
    with pytest.raises(SubmitError) as caught:
        await BatchJobs(AsyncRaising(refused)).create_job({"jobName": "j"})
    assert not isinstance(caught.value, RetryLater)
    assert "Unknown parameter in batchInferenceJobConfig" in str(caught.value)


async def test_the_two_s3_clients_share_one_data_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writes' boto3 client reads S3's model through the async clients' loader: held once
    (~12 MiB), parsed once. No request is sent."""
    from fanout.aws import Aws, AwsOptions

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    nowhere = "http://127.0.0.1:9"
    async with Aws(
        AwsOptions(region="us-east-1", s3_endpoint_url=nowhere, endpoint_url=nowhere)
    ) as aws:
        assert aws.s3._sync._loader is aws.s3._client._loader
