"""`fanout run` through a proxy that injects S3's production faults, end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from emulated import User

from fanout.cli import main
from fanout.emulator import Emulator
from fanout.journal import read_events
from faults import FAULTS, FaultProxy


def run_args(user: User, run: str, ids: Path, out: Path) -> list[str]:
    info = user.info
    key = info.kms_key_arn
    return [
        "run", "--ids", str(ids), "--out", str(out), "--run-id", run,
        "--state-dir", str(user.state), "--num-results", "5",
        "--solution-version-arn", info.solution_versions["user-personalization"],
        "--role-arn", info.role_arn,
        "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={key}}}",
        "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/,kmsKeyArn={key}}}",
        "--max-job-bytes", "40KB", "--part-bytes", "8KB",
        "--poll-interval", "0.05", "--tps", "50", "--log-format", "json",
    ]  # fmt: skip


def test_run_completes_through_injected_s3_faults(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = User(emulator.info, tmp_path, monkeypatch)
    ids = user.ids(6000)
    clean = tmp_path / "clean.jsonl"
    assert main(run_args(user, "nofault", ids, clean)) == 0

    with FaultProxy(emulator.info.s3_endpoint, rate=0.15, seed=4) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
        faulty = tmp_path / "faulty.jsonl"
        assert main(run_args(user, "faulty", ids, faulty)) == 0
    assert set(proxy.counts) == set(FAULTS), proxy.counts  # every kind of fault happened

    # The same result as without faults, every part as journalled, nothing left unfinished.
    assert sorted(faulty.read_bytes().splitlines()) == sorted(clean.read_bytes().splitlines())
    bucket = user.info.bucket
    for event in read_events(user.state / "faulty"):
        if event["event"] == "part-written":
            key = event["uri"].removeprefix(f"s3://{bucket}/")
            body = user.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == event["sha256"]
    assert not user.s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
