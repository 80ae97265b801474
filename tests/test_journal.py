"""The run journal: durable appends, replay, torn tails, private files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fanout.errors import ConfigError
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
    """A damaged line that is not the last one is reported, not skipped."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "journal.jsonl").write_bytes(b'{"event":"a"}\nnot json\n{"event":"b"}\n')
    with pytest.raises(ConfigError, match="corrupt"):
        read_events(run)


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
