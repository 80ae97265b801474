"""The journal's S3 mirror against the emulator: a mirror S3 refuses never stops a run."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from emulated import User, start


def test_a_disabled_kms_key_only_warns_about_the_mirror_in_submit_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the run's KMS key disabled after prepare, submit and resume end with a summary and
    a warning that says what to do; once the key is enabled again, the mirror is written."""
    emulator = start()
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        info = user.info
        kms = boto3.client(
            "kms",
            endpoint_url=info.s3_endpoint,
            region_name=info.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        key = kms.create_key()["KeyMetadata"]
        code, _, err = user.cli(
            [
                "prepare", "--ids", str(user.ids(30)), "--run-id", "cold",
                "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={key['Arn']}}}",
                "--state-dir", str(user.state),
            ],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        kms.disable_key(KeyId=key["KeyId"])
        submit = [
            "--state-dir", str(user.state), "--num-results", "5", "--job-retries", "0",
            "--solution-version-arn", info.solution_versions["user-personalization"],
            "--role-arn", info.role_arn, "--poll-interval", "0.05", "--tps", "50",
            # No output key: the mirror is encrypted with the run's input key, now disabled.
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/}}",
        ]  # fmt: skip
        for command in (
            ["submit", "cold", *submit],
            ["resume", "cold", "--state-dir", str(user.state)],
        ):
            code, out, err = user.cli(command, capsys)
            assert code == 1, err  # the jobs cannot read their input: failed shards, reported
            assert "could not mirror the journal to s3://" in err
            assert f"the KMS key {key['Arn']} is disabled: enable it" in err
            assert "Traceback" not in err + out
        kms.enable_key(KeyId=key["KeyId"])
        code, _, err = user.cli(["resume", "cold", "--state-dir", str(user.state)], capsys)
        assert "could not mirror" not in err
        mirrored = user.s3.get_object(Bucket=info.bucket, Key="out/cold/_fanout/journal.jsonl")
        assert mirrored["Body"].read() == (user.state / "cold" / "journal.jsonl").read_bytes()
    finally:
        emulator.stop()
