"""What the end-to-end tests share: emulators with given settings, and a user at a shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from fanout.cli import main
from fanout.emulator import Emulator, EmulatorInfo, EmulatorSettings


def start(**settings: Any) -> Emulator:
    emulator = Emulator(EmulatorSettings(**{"job_seconds": 0.05, "seed": 11, **settings}))
    emulator.start()
    return emulator


class User:
    """A user at a shell: the emulator's environment, a state dir, and the fanout CLI."""

    def __init__(self, info: EmulatorInfo, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.info = info
        self.tmp = tmp
        self.state = tmp / "state"
        self.env = info.environment()
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info.region
        )
        self.s3 = session.client("s3", endpoint_url=info.s3_endpoint)
        self.personalize = session.client("personalize", endpoint_url=info.personalize_endpoint)
        self._empty_bucket()

    def _empty_bucket(self) -> None:
        """Each test starts with an empty bucket, as a run ID's prefixes must be unused for a
        new run: the emulators of a test session share one S3 (moto's, one per process), so
        what an earlier test's run of the same ID left would be found there."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.info.bucket)
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=self.info.bucket, Delete={"Objects": keys})

    def client(self, service: str) -> Any:
        """A boto3 client of a service the emulator serves beside S3 (KMS, IAM, STS)."""
        return boto3.client(
            service,
            endpoint_url=self.info.s3_endpoint,
            region_name=self.info.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def ids(self, count: int, name: str = "ids.txt") -> Path:
        path = self.tmp / name
        path.write_text("".join(f"user-{i}\n" for i in range(count)))
        return path

    def prepare_args(self, run: str, ids: Path, *extra: str) -> list[str]:
        job_input = (
            f"s3DataSource={{path=s3://{self.info.bucket}/in/,kmsKeyArn={self.info.kms_key_arn}}}"
        )
        return [
            "prepare", "--ids", str(ids), "--job-input", job_input, "--run-id", run,
            "--state-dir", str(self.state), *extra,
        ]  # fmt: skip

    def submit_args(self, run: str, *extra: str) -> list[str]:
        info = self.info
        return [
            "submit", run, "--state-dir", str(self.state),
            "--solution-version-arn", info.solution_versions["user-personalization"],
            "--role-arn", info.role_arn, "--num-results", "5",
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/,kmsKeyArn={info.kms_key_arn}}}",
            "--poll-interval", "0.05", "--tps", "50", *extra,
        ]  # fmt: skip

    def cli(self, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = main(args)
        out, err = capsys.readouterr()
        return code, out, err

    def jobs(self, run: str) -> list[dict[str, Any]]:
        pages = self.personalize.get_paginator("list_batch_inference_jobs").paginate()
        return [
            job
            for page in pages
            for job in page["batchInferenceJobs"]
            if job["jobName"].startswith(f"fanout-{run}-")
        ]

    def sent_ids(self, run: str) -> list[str]:
        """Every ID in the run's uploaded shards (what the jobs read)."""
        found: list[str] = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.info.bucket, Prefix=f"in/{run}/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.info.bucket, Key=obj["Key"])["Body"].read()
                found += [json.loads(line)["userId"] for line in body.splitlines()]
        return found
