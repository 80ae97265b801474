"""The unmodified AWS CLI against `fanout emulator` started as a user starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.awscli

BIN = Path(sys.executable).parent


class RunningEmulator:
    def __init__(self, process: subprocess.Popen[str], info: dict[str, Any], tmp: Path) -> None:
        self.process = process
        self.info = info
        self.tmp = tmp

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL_S3=self.info["s3_endpoint"],
            # KMS, IAM and STS are served beside S3: no call may leave loopback.
            AWS_ENDPOINT_URL_KMS=self.info["s3_endpoint"],
            AWS_ENDPOINT_URL_IAM=self.info["s3_endpoint"],
            AWS_ENDPOINT_URL_STS=self.info["s3_endpoint"],
            AWS_ENDPOINT_URL_PERSONALIZE=self.info["personalize_endpoint"],
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=self.info["region"],
            AWS_CONFIG_FILE=str(self.tmp / "no-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.tmp / "no-credentials"),
            AWS_PAGER="",
        )
        return env

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "aws"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {result.stderr}")
        return result

    def aws_json(self, *args: str) -> Any:
        return json.loads(self.aws(*args, "--output", "json").stdout)

    def create_job(
        self, name: str, recipe: str, source: str, dest: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """`aws personalize create-batch-inference-job` with shorthand input/output syntax."""
        return self.aws(
            "personalize", "create-batch-inference-job",
            "--job-name", name,
            "--solution-version-arn", self.info["solution_versions"][recipe],
            "--job-input", f"s3DataSource={{{source}}}",
            "--job-output", f"s3DataDestination={{{dest}}}",
            "--role-arn", self.info["role_arn"],
            "--output", "json",
            *extra,
            check=False,
        )  # fmt: skip


def start_emulator(tmp: Path, *options: str) -> RunningEmulator:
    info_file = tmp / "emulator.json"
    process = subprocess.Popen(
        [str(BIN / "fanout"), "emulator", "--info-file", str(info_file), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not info_file.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"emulator exited: {process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("emulator did not write its info file within 90 s")
        time.sleep(0.05)
    return RunningEmulator(process, json.loads(info_file.read_text()), tmp)


def stop_emulator(running: RunningEmulator) -> str:
    running.process.send_signal(signal.SIGTERM)
    out, err = running.process.communicate(timeout=30)
    assert running.process.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def cli_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    tmp = tmp_path_factory.mktemp("awscli")
    running = start_emulator(tmp, "--job-seconds", "0.2")
    yield running
    stop_emulator(running)


def test_emulator_prints_exports_and_stops_cleanly(tmp_path: Path) -> None:
    """`fanout emulator` prints export lines for every endpoint and exits 0 on SIGTERM, taking
    its info file with it (a script waiting for the file would read dead ports)."""
    running = start_emulator(tmp_path)
    out = stop_emulator(running)
    assert not (tmp_path / "emulator.json").exists(), "a stopped emulator's info file was left"
    assert f"export AWS_ENDPOINT_URL_S3={running.info['s3_endpoint']}" in out
    assert f"export AWS_ENDPOINT_URL_PERSONALIZE={running.info['personalize_endpoint']}" in out
    assert "export AWS_DEFAULT_REGION=us-east-1" in out
    assert running.info["s3_endpoint"].startswith("http://127.0.0.1:")
    assert set(running.info["solution_versions"]) >= {
        "user-personalization",
        "user-personalization-v2",
        "popularity-count",
        "personalized-ranking",
        "personalized-ranking-v2",
        "similar-items",
        "sims",
        "item-affinity",
        "item-attribute-affinity",
    }
    assert running.info["filters"]


def test_emulator_rejects_a_bad_setting() -> None:
    """An unknown --set name or a bad value is a usage error that names the setting."""
    for option, text in (("nonsense=1", "no such emulator setting"), ("quota=0", "quota")):
        result = subprocess.run(
            [str(BIN / "fanout"), "emulator", "--set", option],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert text in result.stderr


def test_aws_cli_end_to_end(cli_emulator: RunningEmulator, tmp_path: Path) -> None:
    """The AWS CLI uploads with SSE-KMS, runs a job to ACTIVE and reads one line per user."""
    info = cli_emulator.info
    users = [f"user-{i}" for i in range(50)] + [str(i) for i in range(1, 51)]
    source = tmp_path / "users.jsonl"
    source.write_text("".join(json.dumps({"userId": u}) + "\n" for u in users))
    bucket, key = info["bucket"], info["kms_key_arn"]
    cli_emulator.aws(
        "s3", "cp", str(source), f"s3://{bucket}/cli/in/users.jsonl",
        "--sse", "aws:kms", "--sse-kms-key-id", key,
    )  # fmt: skip
    head = cli_emulator.aws_json(
        "s3api", "head-object", "--bucket", bucket, "--key", "cli/in/users.jsonl"
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key

    created = cli_emulator.create_job(
        "cli-job",
        "user-personalization",
        f"path=s3://{bucket}/cli/in/,kmsKeyArn={key}",
        f"path=s3://{bucket}/cli/out/,kmsKeyArn={key}",
        "--num-results",
        "10",
    )
    assert created.returncode == 0, created.stderr
    arn = json.loads(created.stdout)["batchInferenceJobArn"]
    deadline = time.monotonic() + 60
    while True:
        job = cli_emulator.aws_json(
            "personalize", "describe-batch-inference-job", "--batch-inference-job-arn", arn
        )["batchInferenceJob"]
        if job["status"] in {"ACTIVE", "CREATE FAILED"}:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "ACTIVE", job.get("failureReason")
    listed = cli_emulator.aws_json("personalize", "list-batch-inference-jobs")
    assert arn in [j["batchInferenceJobArn"] for j in listed["batchInferenceJobs"]]

    out = cli_emulator.aws("s3", "cp", f"s3://{bucket}/cli/out/users.jsonl.out", "-").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["input"]["userId"] for line in lines) == sorted(users)
    for line in lines:
        assert line["error"] is None
        assert len(line["output"]["recommendedItems"]) == 10
        assert len(line["output"]["scores"]) == 10

    reused = cli_emulator.create_job(
        "cli-job", "user-personalization", f"path=s3://{bucket}/cli/in/", f"path=s3://{bucket}/o2/"
    )
    assert reused.returncode != 0
    assert "ResourceAlreadyExistsException" in reused.stderr

    too_long = cli_emulator.create_job(
        "j" * 64, "user-personalization", f"path=s3://{bucket}/cli/in/", f"path=s3://{bucket}/o3/"
    )
    assert too_long.returncode != 0
    assert "InvalidInputException" in too_long.stderr
    assert "63" in too_long.stderr


def test_aws_cli_sixth_concurrent_job_is_refused(tmp_path: Path) -> None:
    """With the default quota of 5, a 6th concurrent job gets LimitExceededException."""
    running = start_emulator(tmp_path, "--job-seconds", "120")
    try:
        bucket = running.info["bucket"]

        source = tmp_path / "u.jsonl"
        source.write_text('{"userId": "1"}\n')
        running.aws("s3", "cp", str(source), f"s3://{bucket}/quota/in/u.jsonl")

        def create(i: int) -> subprocess.CompletedProcess[str]:
            return running.create_job(
                f"quota-{i}",
                "popularity-count",
                f"path=s3://{bucket}/quota/in/",
                f"path=s3://{bucket}/quota/out-{i}/",
            )

        for i in range(5):
            assert create(i).returncode == 0
        sixth = create(5)
        assert sixth.returncode != 0
        assert "LimitExceededException" in sixth.stderr
    finally:
        stop_emulator(running)


def test_aws_cli_kms_key_by_arn(tmp_path: Path) -> None:
    """KMS takes a key's ARN wherever it takes its ID: disabling the key by ARN works, and an
    SSE-KMS upload with it is then refused as S3 refuses it, until it is enabled again."""
    running = start_emulator(tmp_path)
    try:
        bucket = running.info["bucket"]
        key = running.aws_json("kms", "create-key")["KeyMetadata"]["Arn"]
        source = tmp_path / "u.jsonl"
        source.write_text('{"userId": "1"}\n')

        def upload() -> subprocess.CompletedProcess[str]:
            return running.aws(
                "s3", "cp", str(source), f"s3://{bucket}/kms/u.jsonl",
                "--sse", "aws:kms", "--sse-kms-key-id", key, check=False,
            )  # fmt: skip

        assert upload().returncode == 0
        running.aws("kms", "disable-key", "--key-id", key)
        state = running.aws_json("kms", "describe-key", "--key-id", key)["KeyMetadata"]
        assert state["KeyState"] == "Disabled"
        refused = upload()
        assert refused.returncode != 0 and "KMS.DisabledException" in refused.stderr
        # Nor can the key make data keys, nor can what it encrypted be read.
        data_key = running.aws(
            "kms", "generate-data-key", "--key-id", key, "--key-spec", "AES_256", check=False
        )
        assert data_key.returncode != 0 and "DisabledException" in data_key.stderr
        read = running.aws("s3", "cp", f"s3://{bucket}/kms/u.jsonl", "-", check=False)
        assert read.returncode != 0 and "KMS.DisabledException" in read.stderr
        running.aws("kms", "enable-key", "--key-id", key)
        assert upload().returncode == 0
        assert (
            running.aws("s3", "cp", f"s3://{bucket}/kms/u.jsonl", "-").stdout == '{"userId": "1"}\n'
        )
        running.aws("kms", "schedule-key-deletion", "--key-id", key)
        state = running.aws_json("kms", "describe-key", "--key-id", key)["KeyMetadata"]
        assert state["KeyState"] == "PendingDeletion"
    finally:
        stop_emulator(running)
