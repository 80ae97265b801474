"""Memory faulted in ahead (`fanout._ahead`) for a local file: the dedupe table, taken by the
run's table of about that size, and the encoder's output buffers, taken by its pool; all given
back when the run does not take them."""

from __future__ import annotations

import argparse
import ctypes
import gzip
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fanout import _ahead, cli, source
from fanout._ahead import allocate, output_buffer, prefault_for, words_for

OUTPUTS_FROM = _ahead.OUTPUTS_FROM  # before the fixture lowers it


@pytest.fixture(autouse=True)
def _small_tables_too(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tables of any size, and output buffers for files of two pieces and more, are faulted in
    ahead here, so the files can stay small."""
    monkeypatch.setattr(_ahead, "MIN_EARLY", 0)
    monkeypatch.setattr(_ahead, "OUTPUTS_FROM", 2 * _ahead.SAMPLE)
    yield
    _ahead.discard()


def ids_file(path: Path, count: int, repeat_every: int = 0) -> Path:
    lines = [f"user-{i:07d}\n" for i in range(count)]
    if repeat_every:
        lines[repeat_every::repeat_every] = lines[: len(lines[repeat_every::repeat_every])]
    path.write_text("".join(lines))
    return path


def faulted_in() -> tuple[mmap.mmap | None, int]:
    """The table faulted in ahead and its words, once its pages are written."""
    early = _ahead._table
    if early is None:
        return None, 0
    assert early.ready.wait(10)
    return early.memory, early.words


def test_a_table_for_the_file_is_faulted_in_and_taken_by_a_request_of_its_size(
    tmp_path: Path,
) -> None:
    """The table is sized from the lines and the file's size with a 3% margin; a request for
    the table the IDs need gets that very memory, zeroed and writable, and only once."""
    path = ids_file(tmp_path / "ids.txt", 50_000)
    prefault_for(str(path))
    memory, words = faulted_in()
    assert memory is not None
    assert words == words_for(int(np.ceil(50_000 * _ahead.MARGIN)))
    need = words_for(50_000)
    table = allocate(need)
    assert table is memory
    values = np.frombuffer(table, np.uint64, need)
    assert not values.any()
    values[:] = 7  # writable
    assert faulted_in() == (None, 0)
    assert allocate(need) is not memory


def test_requests_of_another_size_get_fresh_memory(tmp_path: Path) -> None:
    """A small request (the set's first table) leaves the table for the run; a large request
    too far from its size (an estimate gone wrong) gets fresh memory and lets the table go."""
    prefault_for(str(ids_file(tmp_path / "ids.txt", 50_000)))
    memory, words = faulted_in()
    assert memory is not None
    assert allocate(words // 5) is not memory
    assert faulted_in()[0] is memory
    assert allocate(int(words / _ahead.TAKE_WITHIN) - 10) is not memory
    assert faulted_in() == (None, 0)


def test_a_request_of_another_size_does_not_wait_for_the_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the pages are still being written, a request the table cannot serve (the plan's
    small sample set) gets fresh memory at once; the run's request waits and gets the table."""
    release = threading.Event()
    memset = ctypes.memset
    this_thread = threading.current_thread()

    def slow_memset(address: int, value: int, size: int) -> int:
        if threading.current_thread() is not this_thread:  # the thread faulting in ahead
            assert release.wait(10)
        return memset(address, value, size)

    monkeypatch.setattr(ctypes, "memset", slow_memset)
    prefault_for(str(ids_file(tmp_path / "ids.txt", 50_000)))
    early = _ahead._table
    assert early is not None and early.sized.wait(10)
    assert allocate(early.words // 5) is not None  # did not wait for `release`
    assert early.memory is None and not early.ready.is_set()
    threading.Timer(0.05, release.set).start()
    assert allocate(words_for(50_000)) is early.memory is not None


@pytest.mark.parametrize("kind", ["stdin", "s3", "gzip", "parquet", "empty", "one line", "dir"])
def test_nothing_is_faulted_in_where_lines_say_nothing(tmp_path: Path, kind: str) -> None:
    """No table ahead for stdin, S3, gzip, Parquet, an empty file, a file without a line end
    or a path that is not a file: the run sizes its table itself."""
    path = tmp_path / "in"
    spec = str(path)
    if kind == "stdin":
        spec = "-"
    elif kind == "s3":
        spec = "s3://bucket/ids.txt"
    elif kind == "gzip":
        path.write_bytes(gzip.compress(b"a\nb\n" * 1000))
    elif kind == "parquet":
        path.write_bytes(b"PAR1" + b"\n" * 1000)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "one line":
        path.write_bytes(b"x" * 1000)
    else:
        path.mkdir()
    prefault_for(spec)
    assert faulted_in() == (None, 0)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_not_opened(tmp_path: Path) -> None:
    """A named pipe (or `<(zcat ids.gz)`) is left alone: opening it would wait for a writer,
    and closing it again could leave the writer without a reader. Here no writer ever comes: an
    open would never return."""
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    prefault_for(str(fifo))
    early = _ahead._table
    assert early is not None and early.sized.wait(10), "the thread is stuck opening the pipe"
    assert faulted_in() == (None, 0)


def test_a_table_over_the_cap_is_left_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ahead, "MAX_EARLY", 1024)
    prefault_for(str(ids_file(tmp_path / "ids.txt", 50_000)))
    assert faulted_in() == (None, 0)


def test_discard_lets_the_table_go(tmp_path: Path) -> None:
    prefault_for(str(ids_file(tmp_path / "ids.txt", 50_000)))
    _ahead.discard()
    assert faulted_in() == (None, 0)


def test_prepare_dedupes_into_the_table_faulted_in_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fanout prepare` faults in the table for its file and a dedupe set of the run takes it
    (here the plan's exact count: the file is small); the repeats are still found and listed.
    With --keep-duplicates nothing is faulted in."""
    path = ids_file(tmp_path / "ids.txt", 400_000, repeat_every=1000)
    taken: list[Any] = []
    claim = _ahead._claim

    def spy(words: int) -> mmap.mmap | None:
        got = claim(words)
        taken.append(got)
        return got

    monkeypatch.setattr(_ahead, "_claim", spy)
    argv = ["prepare", "--ids", str(path), "--state-dir", str(tmp_path / "state")]
    argv += ["--local-dir", str(tmp_path / "out"), "--output", "json"]
    assert cli.main([*argv, "--run-id", "ahead"]) == 0
    assert [m for m in taken if m is not None], "no dedupe set took the table faulted in ahead"
    duplicates = (tmp_path / "state" / "ahead" / "duplicates.txt").read_text().splitlines()
    assert len(duplicates) == 399
    assert faulted_in() == (None, 0)

    taken.clear()
    assert cli.main([*argv, "--run-id", "kept", "--keep-duplicates"]) == 0
    assert taken == []


@pytest.mark.parametrize(
    ("keep", "dry_run", "table", "outputs"),
    [(False, False, True, True), (True, False, False, True), (False, True, False, False)],
)
def test_the_cli_faults_in_ahead_what_the_run_will_use(
    tmp_path: Path, keep: bool, dry_run: bool, table: bool, outputs: bool
) -> None:
    """`fanout prepare`, `run` and `segment` fault in a table only when they will dedupe the
    input (not with --keep-duplicates), output buffers either way, nothing for --dry-run; and
    let go of what was not taken at the end."""
    path = ids_file(tmp_path / "ids.txt", 700_000)  # two pieces and more
    args = argparse.Namespace(ids=str(path), keep_duplicates=keep, dry_run=dry_run)
    with cli._memory_ahead(args):
        assert (faulted_in()[0] is not None) == table
        assert len(outputs_faulted_in()) == (_ahead.OUTPUTS if outputs else 0)
    assert faulted_in() == (None, 0)
    assert outputs_faulted_in() == []


def outputs_faulted_in() -> list[mmap.mmap]:
    """The output buffers faulted in ahead and not taken, once the thread is done with them."""
    early = _ahead._outputs
    if early is None:
        return []
    assert early.done.wait(10)
    return list(early.buffers)


def test_output_buffers_are_faulted_in_for_pieces_like_the_first(tmp_path: Path) -> None:
    """For a file of more than one piece, `OUTPUTS` buffers with room for what the encoder
    asks for a piece like the first (twice its lines, a template of up to 64 bytes): zeroed,
    writable, each handed out once, and only to a request they have room for."""
    path = ids_file(tmp_path / "ids.txt", 700_000)
    lines = path.read_bytes()[: _ahead.SAMPLE].count(b"\n")
    prefault_for(str(path), table=False)
    buffers = outputs_faulted_in()
    assert len(buffers) == _ahead.OUTPUTS
    assert faulted_in() == (None, 0)
    template = len('{"userId":""}\n')
    ask = _ahead.records_room(_ahead.SAMPLE, lines, template) + _ahead.LINE_BYTES * lines
    assert output_buffer(10 * len(buffers[0])) is None  # too big: none handed out
    taken = [output_buffer(ask) for _ in buffers]
    assert taken == buffers
    for memory in taken:
        assert memory is not None and len(memory) >= ask
        values = np.frombuffer(memory, np.uint8)
        assert not values.any()
        values[:] = 7  # writable
    assert output_buffer(ask) is None


def test_a_piece_runs_as_far_past_its_size_as_the_source_lets_it() -> None:
    assert _ahead.PROBE == source._PROBE_BYTES


def test_no_output_buffers_for_a_file_the_plan_counts(tmp_path: Path) -> None:
    """A file the plan counts in a pass of its own (up to `EXACT_COUNT_BYTES`: the default
    `OUTPUTS_FROM`) gets none: that pass would take them, and the run would make buffers of its
    own again. (The fixture lowered the bound to two pieces.)"""
    from fanout.pipeline import EXACT_COUNT_BYTES

    assert OUTPUTS_FROM == EXACT_COUNT_BYTES
    prefault_for(str(ids_file(tmp_path / "ids.txt", 50_000)))
    assert faulted_in()[0] is not None
    assert outputs_faulted_in() == []
    assert output_buffer(1) is None


def test_discard_lets_the_output_buffers_go(tmp_path: Path) -> None:
    prefault_for(str(ids_file(tmp_path / "ids.txt", 700_000)), table=False)
    assert outputs_faulted_in()
    _ahead.discard()
    assert output_buffer(1) is None


def test_prepare_encodes_into_the_output_buffers_faulted_in_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder's pool takes the buffers faulted in ahead for its first pieces, and the
    parts it writes hold the input's records, in order."""
    path = ids_file(tmp_path / "ids.txt", 700_000)
    taken: list[mmap.mmap] = []
    hand_out = _ahead.output_buffer

    def spy(nbytes: int) -> mmap.mmap | None:
        got = hand_out(nbytes)
        if got is not None:
            taken.append(got)
        return got

    monkeypatch.setattr(_ahead, "output_buffer", spy)
    argv = ["prepare", "--ids", str(path), "--state-dir", str(tmp_path / "state")]
    argv += ["--local-dir", str(tmp_path / "out"), "--output", "json", "--run-id", "outs"]
    assert cli.main([*argv, "--keep-duplicates"]) == 0
    assert taken, "the encoder took no output buffer faulted in ahead"
    parts = sorted((tmp_path / "out" / "outs").glob("shard-*/part-*.jsonl"))
    written = b"".join(part.read_bytes() for part in parts).splitlines()
    ids = path.read_text().split()
    assert written == [b'{"userId":"%s"}' % i.encode() for i in ids]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status")
def test_tables_are_private_memory_not_shared() -> None:
    """A table is private anonymous memory (`mmap.mmap(-1, n)` alone would be shmem, which the
    kernel gives no transparent huge pages): writing 32 MiB of it adds nothing to RssShmem."""

    def shmem_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
        raise AssertionError("no RssShmem line")

    before = shmem_kib()
    words = 4 * 1024 * 1024
    table = np.frombuffer(allocate(words), np.uint64, words)
    table[:] = 1
    assert shmem_kib() - before < 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the RSS from /proc")
def test_fresh_memory_is_faulted_in_by_writes_before_it_is_used() -> None:
    """Memory not faulted in ahead comes with every page already written: a table's inserts
    read each slot first, and a page first read then written is faulted in twice, the second
    time flushing it from the TLB of every other CPU the process runs on."""

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE

    words = 8 * 1024 * 1024 // 8
    before = rss()
    memory = allocate(words)
    assert rss() - before >= 0.9 * words * 8  # resident, though nothing was written to it yet
    assert memory[:16] == bytes(16) and memory[-16:] == bytes(16)
