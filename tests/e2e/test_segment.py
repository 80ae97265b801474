"""`fanout segment`: batch segment jobs through the same fan-out, against the emulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from emulated import User, start

from fanout.emulator import Emulator
from fanout.journal import read_events
from fanout.state import RunState


@pytest.fixture
def user(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    return User(emulator.info, tmp_path, monkeypatch)


def segment_args(user: User, run: str, source: list[str], out: Path, recipe: str) -> list[str]:
    info = user.info
    return [
        "segment", *source, "--out", str(out), "--run-id", run, "--state-dir", str(user.state),
        "--solution-version-arn", info.solution_versions[recipe], "--role-arn", info.role_arn,
        "--job-input", f"s3DataSource={{path=s3://{info.bucket}/seg-in/}}",
        "--job-output",
        f"s3DataDestination={{path=s3://{info.bucket}/seg-out/,kmsKeyArn={info.kms_key_arn}}}",
        "--num-results", "5", "--poll-interval", "0.05", "--tps", "50", "--log-format", "json",
    ]  # fmt: skip


def parts_of(user: User, run: str) -> list[dict[str, Any]]:
    return [e for e in read_events(user.state / run) if e["event"] == "part-written"]


@pytest.mark.parametrize("order", ["completion", "input"])
def test_item_affinity_segments_within_the_file_limit(
    user: User, capsys: pytest.CaptureFixture[str], order: str
) -> None:
    items = user.tmp / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(1, 1101)) + "5\n")
    out = user.tmp / "segments.jsonl"
    run = f"aff-{order}"  # the emulator keeps jobs across tests: a run ID of each
    args = segment_args(user, run, ["--items", str(items)], out, "item-affinity")
    code, stdout, err = user.cli([*args, "--order", order], capsys)
    assert code == 3, err  # items 1001-1100 are not in the catalog: error lines, listed
    parts = parts_of(user, run)
    assert len(parts) >= 3 and all(p["records"] <= 500 for p in parts)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["itemId"] for row in rows} == {str(i) for i in range(1, 1001)}
    if order == "input":
        assert [row["itemId"] for row in rows] == [str(i) for i in range(1, 1001)]
    assert all(len(row["users"]) == 5 for row in rows)
    errors = [json.loads(x) for x in (user.state / run / "errors.jsonl").read_text().splitlines()]
    assert sorted(int(e["id"]) for e in errors) == list(range(1001, 1101))
    assert "1,000" in stdout and "100 (errors.jsonl)" in stdout
    jobs = user.personalize.list_batch_segment_jobs()["batchSegmentJobs"]
    assert any(job["jobName"].startswith("fanout-aff-") for job in jobs)


def test_item_attribute_queries_are_checked_and_sharded_by_ten(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    genres = ["Comedy", "Drama", "Horror", "Action", "Romance"]
    queries = [f'ITEMS.GENRES = "{a}" AND ITEMS.GENRES = "{b}"' for a in genres for b in genres]
    source = user.tmp / "queries.txt"
    source.write_text("\n".join([*queries, 'ITEMS.GENRES = "Comedy" OR ITEMS.X = "y"']) + "\n")
    out = user.tmp / "segments.csv"
    args = segment_args(
        user, "attr", ["--item-attributes", str(source)], out, "item-attribute-affinity"
    )
    code, _, err = user.cli(args, capsys)
    assert code == 0, err
    assert (
        all(p["records"] <= 10 for p in parts_of(user, "attr")) and len(parts_of(user, "attr")) == 3
    )
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["itemAttributes"] for row in rows) == sorted(queries)
    rejects = [
        json.loads(x) for x in (user.state / "attr" / "rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == 1 and "OR" in rejects[0]["reason"] + rejects[0].get("detail", "")


def test_segment_recipe_and_input_must_agree(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    items = user.tmp / "items.txt"
    items.write_text("1\n2\n")
    args = segment_args(user, "bad", ["--items", str(items)], user.tmp / "x.jsonl",
                        "item-attribute-affinity")  # fmt: skip
    code, _, err = user.cli([*args, "--dry-run"], capsys)
    assert code == 2 and "--items does not fit recipe" in err and "--item-attributes" in err
    assert "--input-kind" not in err  # `fanout segment` has no such option
    args = segment_args(user, "bad", ["--items", str(items)], user.tmp / "x.jsonl",
                        "user-personalization")  # fmt: skip
    code, _, err = user.cli([*args, "--dry-run"], capsys)
    assert code == 2 and "fanout run" in err


def test_segment_quota_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fanout import upload_s3
    from fanout.errors import UploadError

    emulator = start(segment_quota=2, job_seconds=0.1)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        items = tmp_path / "items.txt"
        items.write_text("".join(f"{i}\n" for i in range(1, 1001)))
        out = tmp_path / "seg.parquet"
        args = segment_args(user, "sq", ["--items", str(items)], out, "item-affinity")
        args += ["--max-job-bytes", "3KB", "--max-concurrent-jobs", "5"]
        real_write = upload_s3.S3PartWriter.write
        count = {"n": 0}

        async def crash_after_three(self: Any, part: Any) -> Any:
            count["n"] += 1
            if count["n"] > 3:
                raise UploadError("the network went away")
            return await real_write(self, part)

        monkeypatch.setattr(upload_s3.S3PartWriter, "write", crash_after_three)
        code, _, _ = user.cli(args, capsys)
        assert code == 1
        monkeypatch.setattr(upload_s3.S3PartWriter, "write", real_write)
        code, _, err = user.cli(["resume", "sq", "--state-dir", str(user.state)], capsys)
        assert code == 0, err
        state = RunState.replay(read_events(user.state / "sq"))
        assert state.merged is not None and state.merged["counts"]["results"] == 1000
        assert len(state.shards) > 2
        assert emulator.service.max_in_flight["segment"] <= 2
    finally:
        emulator.stop()


def test_the_documented_output_form_merges_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = start(segment_output_key="recommendedUsers")
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        items = tmp_path / "items.txt"
        items.write_text("".join(f"{i}\n" for i in range(1, 41)))
        out = tmp_path / "documented.jsonl"
        args = segment_args(user, "doc", ["--items", str(items)], out, "item-affinity")
        code, _, err = user.cli(args, capsys)
        assert code == 0, err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 40 and all(len(row["users"]) == 5 for row in rows)
    finally:
        emulator.stop()
