"""The run journal: durable appends, replay, torn tails, private files."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from fanout.errors import ConfigError, RunBusy
from fanout.journal import FileSink, Journal, read_events, write_private


async def test_append_and_replay(tmp_path: Path) -> None:
    """Events come back in order with their fields, a time and a name."""
    async with Journal.open(tmp_path / "run") as journal:
        await journal.append("run-started", run_id="r1")
        await journal.append("part-written", shard=0, part=1)
    events = read_events(tmp_path / "run")
    assert [e["event"] for e in events] == ["run-started", "part-written"]
    assert events[1]["shard"] == 0 and events[1]["part"] == 1
    assert all(isinstance(e["t"], float) for e in events)


async def test_torn_tail_is_dropped_and_appends_continue(tmp_path: Path) -> None:
    """A crash mid-write leaves half a line: replay drops it and new events start cleanly."""
    run = tmp_path / "run"
    async with Journal.open(run) as journal:
        await journal.append("a")
    with (run / "journal.jsonl").open("ab") as handle:
        handle.write(b'{"t": 1, "event": "tor')
    assert [e["event"] for e in read_events(run)] == ["a"]
    async with Journal.open(run) as journal:
        await journal.append("b")
    assert [e["event"] for e in read_events(run)] == ["a", "b"]


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    """A damaged line that is not the last one is reported, not skipped, with the way back:
    the journal's copy on S3. So is an emptied journal."""
    from fanout.state import RunState

    run = tmp_path / "run"
    run.mkdir()
    (run / "journal.jsonl").write_bytes(b'{"event":"a"}\nnot json\n{"event":"b"}\n')
    with pytest.raises(ConfigError, match=r"corrupt; .*`fanout resume RUN --job-output VALUE`"):
        read_events(run)
    with pytest.raises(ConfigError, match=r"or the file was emptied \(.*--job-output"):
        RunState.replay([])


def test_missing_journal_says_what_to_check(tmp_path: Path) -> None:
    """Reading a run that does not exist names the path and what to check."""
    with pytest.raises(ConfigError, match="run ID or --state-dir"):
        read_events(tmp_path / "nope")


async def test_files_are_private(tmp_path: Path) -> None:
    """The journal, sinks and summaries are 0600 in a 0700 directory."""
    run = tmp_path / "run"
    async with Journal.open(run) as journal:
        await journal.append("a")
    async with FileSink(run / "rejects.jsonl") as sink:
        await sink.write(b"x\n")
    write_private(run / "summary.json", b"{}")
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    for name in ("journal.jsonl", "rejects.jsonl", "summary.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o600


async def test_append_needs_an_open_journal(tmp_path: Path) -> None:
    """Appending outside `async with` is a misuse: RuntimeError."""
    journal = Journal.open(tmp_path / "run")
    with pytest.raises(RuntimeError):
        await journal.append("a")
    await journal.aclose()


class _FlakyS3:
    """A boto3 S3 client double: `put_object` raises `error` while it is set, then succeeds."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.bodies: list[bytes] = []

    def put_object(self, **params: Any) -> dict[str, str]:
        if self.error is not None:
            raise self.error
        self.bodies.append(params["Body"])
        return {"ETag": '"e"'}


async def test_a_mirror_write_s3_refuses_is_a_warning_and_the_next_one_catches_up(
    tmp_path: Path,
) -> None:
    """A failed S3 copy of the journal (a disabled KMS key) warns once while it lasts, never
    raises, and is tried again at the next flush."""
    from botocore.exceptions import ClientError

    from fanout.aws import Encryption, S3Store
    from fanout.pipeline import _Mirror
    from fanout.storage import S3Uri

    key = "arn:aws:kms:us-east-1:111122223333:key/k1"
    refused: Any = {"Error": {"Code": "KMS.DisabledException", "Message": f"{key} is Disabled."}}
    sync = _FlakyS3(ClientError(refused, "PutObject"))
    aws = SimpleNamespace(s3=S3Store(None, sync))
    async with Journal.open(tmp_path / "run") as journal:
        await journal.append("prepared", shards=1)
    warnings: list[str] = []
    uri = S3Uri("b", "out/run/_fanout/journal.jsonl")
    mirror = _Mirror(journal.path, aws, uri, Encryption(key), warnings.append)  # type: ignore[arg-type]
    await mirror.flush()
    await mirror.flush()
    assert len(warnings) == 1
    assert f"could not mirror the journal to {uri}" in warnings[0]
    assert "is disabled: enable it" in warnings[0] and "kms:GenerateDataKey" in warnings[0]
    sync.error = None  # the key is enabled again: the next flush sends the whole journal
    await mirror.flush()
    assert sync.bodies == [journal.path.read_bytes()] and len(warnings) == 1


class _StalledS3:
    """A boto3 S3 client double whose `put_object` waits (as for an S3 that does not answer,
    through botocore's retries) until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def put_object(self, **params: Any) -> dict[str, str]:
        self.release.wait(60)
        return {"ETag": '"e"'}


async def test_a_stopping_run_does_not_wait_for_s3_that_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write S3 does not answer is abandoned when its caller is cancelled (botocore's own
    retries would hold a stopping run for minutes), and the journal's mirror, which a stopping
    run still flushes (shielded), gives up after `MIRROR_DEADLINE` with a warning."""
    from fanout import pipeline
    from fanout.aws import Encryption, S3Store
    from fanout.pipeline import _Mirror
    from fanout.storage import S3Uri

    stalled = _StalledS3()
    store = S3Store(None, stalled)
    try:
        started = time.monotonic()
        with anyio.move_on_after(0.3):
            await store.put_object(
                "b", "in/run/shard-00000/part-00000.jsonl", b"x", Encryption(None)
            )
        assert time.monotonic() - started < 5
        monkeypatch.setattr(pipeline, "MIRROR_DEADLINE", 0.3)
        async with Journal.open(tmp_path / "run") as journal:
            await journal.append("prepared", shards=1)
        warnings: list[str] = []
        aws: Any = SimpleNamespace(s3=store)
        mirror = _Mirror(journal.path, aws, S3Uri("b", "k"), Encryption(None), warnings.append)
        started = time.monotonic()
        with anyio.CancelScope() as scope:
            scope.cancel()  # the run is being stopped: the flush still tries, within its limit
            await mirror.flush()
        assert time.monotonic() - started < 5
        assert warnings == ["warning: could not mirror the journal to s3://b/k: S3 did not "
                            "answer within 0.3 s"]  # fmt: skip
    finally:
        stalled.release.set()


def test_a_run_another_process_holds_is_busy_with_exit_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second opener of a run's journal (a second `fanout resume`, say) is refused with
    RunBusy, exit code 75 (EX_TEMPFAIL): a scheduler can tell the last run still going from a
    failure. The lock is let go with the journal."""
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("u1\nu2\n")
    state = ["--run-id", "busy", "--state-dir", str(tmp_path)]
    assert main(["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out"), *state]) == 0
    run_dir = tmp_path / "busy"

    async def hold() -> None:
        async with Journal.open(run_dir):
            with pytest.raises(RunBusy, match="in use by another fanout process") as caught:
                Journal.open(run_dir)
            assert caught.value.exit_code == 75
            code = await anyio.to_thread.run_sync(
                main, ["resume", "busy", "--state-dir", str(tmp_path)]
            )
            assert code == 75
            # A new run of that ID, while the other process holds it, is busy too (it said
            # "already exists: `fanout resume` continues it", which was busy as well).
            assert await anyio.to_thread.run_sync(main, again) == 75
        async with Journal.open(run_dir):
            pass

    again = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "o2"), *state]
    anyio.run(hold)
    assert main(again) == 2  # once it is let go: it exists, to be resumed
    err = capsys.readouterr().err
    assert "RunBusy: run busy is in use by another fanout process" in err
    assert "`fanout status busy` shows how far it got" in err


def test_a_journal_that_cannot_be_opened_says_what_to_do(tmp_path: Path) -> None:
    """helper-28: 'cannot write the run journal … Operation not permitted' gave no next step."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "journal.jsonl").mkdir()  # not a file: opening it for appending fails
    with pytest.raises(ConfigError, match=r"cannot write the run journal .*must be writable"):
        Journal.open(run_dir)


def test_no_journal_says_which_commands_fetch_one_from_s3(tmp_path: Path) -> None:
    """helper-31: the hint said --job-output as if every command took it (report, merge and
    retry do not): it names the two that fetch a run's journal from S3."""
    with pytest.raises(ConfigError, match=r"`fanout status RUN --job-output PATH` or `fanout "):
        read_events(tmp_path / "nosuch")
