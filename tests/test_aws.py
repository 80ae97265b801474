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
    NoCredentialsError,
    ParamValidationError,
    TokenRetrievalError,
)

from fanout.aws import AwsOptions, BatchJobs, Encryption, S3Store, raise_s3_error
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


@pytest.mark.parametrize(
    "error",
    [NoCredentialsError(), TokenRetrievalError(provider="sso", error_msg="expired")],
    ids=["none", "sso-expired"],
)
async def test_missing_credentials_say_to_refresh_them_not_to_retry(error: Exception) -> None:
    """Without usable credentials no retry can help: Personalize calls fail at once (not
    RetryLater, which the submitter waits out for up to half an hour) and neither they nor S3
    calls blame the network."""
    with pytest.raises(SubmitError) as caught:
        await BatchJobs(AsyncRaising(error)).list_jobs_page(None)
    assert not isinstance(caught.value, RetryLater)
    with pytest.raises(UploadError) as uploading:
        await store(error).put_object("b", "k/x", b"data", Encryption(KEY))
    for message in (str(caught.value), str(uploading.value)):
        assert "no usable AWS credentials" in message and "aws sso login" in message
        assert "network" not in message and "did not answer" not in message


class Deleting:
    """An aioboto3 client double whose DeleteObjects leaves some keys, as S3 does (200, with
    `Errors`)."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.requests: list[list[str]] = []

    async def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        keys = [item["Key"] for item in Delete["Objects"]]
        self.requests.append(keys)
        errors = [
            {"Key": key, "Code": "AccessDenied", "Message": "Access Denied"}
            for key in keys
            if key in self.refused
        ]
        return {"Errors": errors} if errors else {}


async def test_objects_s3_did_not_delete_are_an_error() -> None:
    """DeleteObjects answers 200 even for keys it could not delete: those are a MergeError
    naming the first, how many more, and the permission; a clean answer is no error."""
    keys = [f"out/part-{k:05d}.parquet" for k in range(1500)]
    fine = Deleting(set())
    await S3Store(fine, None).delete_objects("b", keys)
    assert [len(batch) for batch in fine.requests] == [1000, 500]
    refused = Deleting({keys[1200], keys[1300]})
    with pytest.raises(MergeError) as caught:
        await S3Store(refused, None).delete_objects("b", keys)
    message = str(caught.value)
    assert f"could not delete s3://b/{keys[1200]} and 1 more: AccessDenied" in message
    assert "s3:DeleteObject" in message


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


def no_configured_endpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS_ENDPOINT_URL* variables and an empty config file: botocore finds no endpoint."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE":
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


async def test_checks_never_leave_endpoints_given_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the run's endpoints given as flags, the KMS and IAM checks go to the endpoint
    configured for KMS and IAM, and are skipped when there is none (not sent to AWS)."""
    from fanout.aws import Aws

    no_configured_endpoints(monkeypatch, tmp_path)
    local = "http://127.0.0.1:9"
    flags = AwsOptions(region="us-east-1", endpoint_url=local, s3_endpoint_url=local)
    async with Aws(flags) as aws:
        assert aws._client("kms") is None and aws._client("iam") is None
        await aws.check_kms_key(KEY)  # skipped: nothing to reach
        await aws.check_role("arn:aws:iam::111122223333:role/r")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:10")
    async with Aws(flags) as aws:
        client = aws._client("kms")
        assert client is not None
        async with client as kms:
            assert kms.meta.endpoint_url == "http://127.0.0.1:10"
        assert aws._client("iam") is None
    async with Aws(AwsOptions(region="us-east-1")) as aws:  # no flags: botocore's own choice
        client = aws._client("iam")
        assert client is not None
        async with client as iam:  # made, never called
            assert iam.meta.endpoint_url == "https://iam.amazonaws.com"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (AwsOptions(region="us-east-1", s3_endpoint_url="127.0.0.1:4566"),
         "--s3-endpoint-url '127.0.0.1:4566'"),
        (AwsOptions(region="us-east-1", endpoint_url="localhost:4566"),
         "--endpoint-url 'localhost:4566'"),
    ],
)  # fmt: skip
async def test_a_malformed_endpoint_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, options: AwsOptions, named: str
) -> None:
    """An endpoint without its scheme is refused with the flag and an example, not a
    traceback (botocore raises ValueError)."""
    from fanout.aws import Aws
    from fanout.errors import ConfigError

    no_configured_endpoints(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as caught:
        async with Aws(options):
            pass
    assert named in str(caught.value) and "http://127.0.0.1:4566" in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [client_error("LimitExceededException", "Rate exceeded"), client_error("SlowDown", "Reduce")],
    ids=["throttled", "slow-down"],
)
async def test_a_check_the_service_throttles_is_not_a_configuration_error(error: Exception) -> None:
    """helper-34: DescribeSolutionVersion throttled during the checks before a run was a
    ConfigError (exit 2, which a scheduler takes as a usage error for good); a throttling or
    busy service fails the command for now (exit 1) and says to run it again."""
    from fanout.aws import describe_solution_version

    arn = "arn:aws:personalize:us-east-1:111122223333:solution/s/1"
    with pytest.raises(RetryLater, match="run the command again in a minute") as caught:
        await describe_solution_version(AsyncRaising(error), arn)
    assert caught.value.exit_code == 1
    with pytest.raises(RetryLater):
        await store(error).check_bucket("b")
    not_found = client_error("ResourceNotFoundException", "no such version")
    with pytest.raises(FanoutError) as missing:
        await describe_solution_version(AsyncRaising(not_found), arn)
    assert missing.value.exit_code == 2


async def test_a_request_that_gets_no_answer_is_said_each_time_it_is_sent_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """helper-34: with S3 not answering (a network that drops its answers), prepare showed
    nothing for 7.6 minutes (8 attempts of a 60 s read timeout) before it failed; each attempt
    that got no answer is now said, with how many were made."""
    import socket
    import threading

    from fanout.aws import Aws

    no_configured_endpoints(monkeypatch, tmp_path)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # takes every connection, answers none
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    said: list[str] = []
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    options = AwsOptions(
        region="us-east-1", s3_endpoint_url=endpoint, read_timeout=0.3, max_attempts=3
    )
    try:
        async with Aws(options, said.append) as aws:
            with pytest.raises(UploadError, match="S3 did not answer"):
                await aws.s3.put_object("b", "k", b"x", Encryption(None))
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()
    assert [line.split("(")[0] for line in said] == ["warning: PutObject got no answer "] * 2
    assert said[-1].endswith("(2 of 3 attempts so far)")
