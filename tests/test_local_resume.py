"""`fanout prepare --local-dir` stopped half way and resumed: the parts written before are
checked by their hash, not written again, the rest are written, and the result is the one an
uninterrupted run gives; an input that changed in between is refused. And an input that can be
read only once (a named pipe) is read once."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fanout import upload
from fanout.cli import main
from fanout.journal import read_events
from fanout.state import RunState


def ids_file(path: Path, count: int, prefix: str = "user") -> Path:
    path.write_text("".join(f"{prefix}-{i:06d}\n" for i in range(count)))
    return path


def prepare_args(ids: Path, tmp_path: Path, run_id: str, out: str = "out") -> list[str]:
    return [
        *("prepare", "--ids", str(ids), "--local-dir", str(tmp_path / out)),
        *("--run-id", run_id, "--state-dir", str(tmp_path / "state")),
        *("--part-bytes", "10KB", "--max-job-bytes", "40KB", "--output", "json"),
    ]


def files_of(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def crash_after(monkeypatch: pytest.MonkeyPatch, chunks: int) -> None:
    """Every chunk after the first `chunks` fails as a full disk would."""
    real_add = upload._OpenPart.add
    seen = {"n": 0}

    def add(self: Any, chunk: Any) -> None:
        seen["n"] += 1
        if seen["n"] > chunks:
            raise OSError(28, "No space left on device")
        real_add(self, chunk)

    monkeypatch.setattr(upload._OpenPart, "add", add)


def test_resume_checks_the_parts_written_and_writes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = ids_file(tmp_path / "ids.txt", 6000)
    assert main(prepare_args(ids, tmp_path, "whole", "whole")) == 0
    whole = files_of(tmp_path / "whole" / "whole")

    crash_after(monkeypatch, 7)
    assert main(prepare_args(ids, tmp_path, "halfway")) != 0
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "once the cause is fixed, `fanout resume halfway` continues" in err  # helper-34
    state = RunState.replay(read_events(tmp_path / "state" / "halfway"))
    written = {(p["shard"], p["part"]) for p in state.parts.values()}
    assert 0 < len(written) < len(whole) and state.prepared is None
    assert not list((tmp_path / "out").rglob("*.tmp")), "the unfinished part was left behind"

    monkeypatch.undo()
    kept = {key: (tmp_path / "out" / "halfway" / f"shard-{key[0]:05d}" / f"part-{key[1]:05d}.jsonl")
            for key in written}  # fmt: skip
    inodes = {key: path.stat().st_ino for key, path in kept.items()}
    wrote: list[bool] = []
    real_init = upload._OpenPart.__init__

    def spy(self: Any, key: Any, path: Path, write: bool) -> None:
        wrote.append(write)
        real_init(self, key, path, write)

    monkeypatch.setattr(upload._OpenPart, "__init__", spy)
    assert main(["resume", "halfway", "--state-dir", str(tmp_path / "state")]) == 0
    assert wrote.count(False) == len(written)  # checked by their hash, not written
    assert wrote.count(True) == len(whole) - len(written)
    assert {key: path.stat().st_ino for key, path in kept.items()} == inodes
    assert files_of(tmp_path / "out" / "halfway") == whole
    state = RunState.replay(read_events(tmp_path / "state" / "halfway"))
    assert state.prepared is not None and len(state.parts) == len(whole)


async def test_a_failed_prepare_stops_its_source_threads_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller of `pipeline.prepare` whose event loop goes on after a failure (a library user,
    not the CLI, whose loop's end closes every generator) gets the source's reader, encoder and
    deduper threads stopped by then, not left to the garbage collector with their buffers."""
    from fanout._relay import Relay
    from fanout.config import Limits
    from fanout.errors import UploadError, first_of
    from fanout.pipeline import PrepareSettings, prepare
    from fanout.source import SourceOptions

    def relay_threads() -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if getattr(getattr(thread, "_target", None), "__func__", None) is Relay._run
        ]

    ids = ids_file(tmp_path / "ids.txt", 200_000)

    async def write(self: Any, chunk: Any) -> None:  # fails as it is handed its first chunk
        raise UploadError("cannot write: No space left on device")

    monkeypatch.setattr(upload.LocalParts, "write", write)
    settings = PrepareSettings(
        ids=str(ids),
        run_id="fails",
        state_dir=tmp_path / "state",
        local_dir=tmp_path / "out",
        source=SourceOptions(chunk_bytes=16 * 1024),  # many pieces: the threads have more
        limits=Limits(part_bytes=64 * 1024),
    )
    with pytest.raises(BaseException) as caught:
        await prepare(settings)
    assert "No space left on device" in str(first_of(caught.value, (UploadError,)))
    assert not relay_threads()


def test_resume_refuses_an_input_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = ids_file(tmp_path / "ids.txt", 3000)
    crash_after(monkeypatch, 3)
    assert main(prepare_args(ids, tmp_path, "changed")) != 0
    monkeypatch.undo()
    ids_file(ids, 3000, prefix="other")
    capsys.readouterr()
    assert main(["resume", "changed", "--state-dir", str(tmp_path / "state")]) != 0
    assert "the input changed since the run started" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_prepare_reads_a_named_pipe_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipe given as a path (a named pipe, or `<(zcat ids.gz)` in a shell) is read once, in
    order: the plan does not read a sample of it first (which would take those IDs from the
    run), and its size counts as unknown, as stdin's does."""
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    data = "".join(f"user-{i:06d}\n" for i in range(30_000)).encode()

    def feed() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    args = prepare_args(fifo, tmp_path, "piped")
    assert main(args) == 0
    writer.join(10)
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == summary["lines"] == 30_000
    body = b"".join(p.read_bytes() for p in sorted((tmp_path / "out" / "piped").rglob("*.jsonl")))
    assert body.count(b"\n") == 30_000 and b'"user-029999"' in body


def test_resume_keeps_the_item_list_limit_the_run_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-item-list is recorded with the run: the resumed half rejects what the first half
    would have, and the parts are those of an uninterrupted run."""
    ids = tmp_path / "ranking.jsonl"
    ids.write_text(
        "".join(
            json.dumps({"userId": f"user-{i:05d}", "itemList": ["a", "b", "c", "d"][: 3 + i % 2]})
            + "\n"
            for i in range(3000)
        )
    )
    options = ["--input-kind", "itemList", "--max-item-list", "3"]
    assert main([*prepare_args(ids, tmp_path, "whole", "whole"), *options]) == 0
    whole = files_of(tmp_path / "whole" / "whole")

    crash_after(monkeypatch, 3)
    assert main([*prepare_args(ids, tmp_path, "halfway"), *options]) != 0
    monkeypatch.undo()
    assert main(["resume", "halfway", "--state-dir", str(tmp_path / "state")]) == 0
    assert files_of(tmp_path / "out" / "halfway") == whole
    rejects = (tmp_path / "state" / "halfway" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1500
    assert all(json.loads(line)["reason"] == "too-long" for line in rejects)


def test_resume_refuses_an_input_cut_short_after_the_parts_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated export: the parts written before are intact (their hashes match), but the
    users after the cut would have made shards of their own. The input's size, journalled
    when the run began, no longer matches: refused, not finished with users missing."""
    ids = ids_file(tmp_path / "ids.txt", 6000)
    crash_after(monkeypatch, 3)
    assert main(prepare_args(ids, tmp_path, "short")) != 0
    monkeypatch.undo()
    lines = ids.read_text().splitlines(keepends=True)
    ids.write_text("".join(lines[:5000]))
    capsys.readouterr()
    assert main(["resume", "short", "--state-dir", str(tmp_path / "state")]) != 0
    assert "the input changed since the run started" in capsys.readouterr().err
    state = RunState.replay(read_events(tmp_path / "state" / "short"))
    assert state.prepared is None


def test_a_resume_from_stdin_warns_that_the_inputs_end_cannot_be_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run from stdin has no size in its journal: resumed with an input cut short after the
    parts already written, it cannot tell, and says so rather than stay silent."""
    import io
    import sys

    lines = [f"user-{i:06d}\n" for i in range(6000)]
    with monkeypatch.context() as patched:
        crash_after(patched, 7)
        patched.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(lines).encode())))
        assert main(prepare_args(Path("-"), tmp_path, "piped")) != 0
    capsys.readouterr()
    with monkeypatch.context() as patched:  # the export, cut short
        patched.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(lines[:4000]).encode())))
        resume = ["resume", "piped", "--state-dir", str(tmp_path / "state"), "--ids", "-"]
        assert main(resume) == 0
    err = capsys.readouterr().err
    assert "warning: run piped reads its input from a pipe, whose size the journal does" in err
