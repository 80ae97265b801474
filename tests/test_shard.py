"""Cutting records into shards and parts: limits, order, determinism."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout import upload
from fanout.errors import ConfigError, UploadError
from fanout.records import RecordBatch
from fanout.shard import (
    PartChunk,
    PartFile,
    ShardLayout,
    ShardSealed,
    cut_shards,
    part_name,
    stream_parts,
)
from fanout.upload import LocalParts, UploadedPart


def batch_of(lines: Sequence[bytes]) -> RecordBatch:
    data = b"".join(lines)
    ends = np.cumsum([len(line) for line in lines], dtype=np.int64)
    return RecordBatch(data, ends)


def split_batches(lines: list[bytes], sizes: list[int]) -> list[RecordBatch]:
    batches, start = [], 0
    for size in [*sizes, len(lines)]:
        chunk = lines[start : start + max(1, size)]
        if chunk:
            batches.append(batch_of(chunk))
        start += len(chunk)
        if start >= len(lines):
            break
    return batches


async def cut(
    batches: list[RecordBatch], layout: ShardLayout, join: bool = False
) -> list[PartFile | ShardSealed]:
    async def source() -> AsyncIterator[RecordBatch]:
        for batch in batches:
            yield batch

    return [item async for item in cut_shards(source(), layout, join=join)]


def run_cut(
    batches: list[RecordBatch], layout: ShardLayout, join: bool = False
) -> list[PartFile | ShardSealed]:
    return anyio.run(cut, batches, layout, join)


def run_stream(
    batches: list[RecordBatch], layout: ShardLayout, log: list[object] | None = None
) -> list[PartChunk | ShardSealed]:
    """`stream_parts` of `batches`; `log` gets ("fed", k) as batch k is handed over, then the
    items, in the order they happen."""
    log = [] if log is None else log

    async def source() -> AsyncIterator[RecordBatch]:
        for index, batch in enumerate(batches):
            log.append(("fed", index))
            yield batch

    async def go() -> list[PartChunk | ShardSealed]:
        out = []
        async for item in stream_parts(source(), layout):
            log.append(item)
            out.append(item)
        return out

    return anyio.run(go)


ids = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=300)
layouts = st.builds(
    ShardLayout,
    shard_bytes=st.integers(40, 2000),
    max_job_bytes=st.integers(2000, 3000),
    part_bytes=st.integers(20, 800),
    max_job_files=st.integers(1, 6),
    max_file_records=st.integers(1, 50),
    shards=st.integers(0, 6),
)


@settings(max_examples=150, deadline=None)
@given(ids=ids, layout=layouts, sizes=st.lists(st.integers(1, 64), max_size=10))
def test_shards_respect_limits_and_keep_every_record(
    ids: list[str], layout: ShardLayout, sizes: list[int]
) -> None:
    """No shard or part over its limits, none empty, and the parts decode to the input in order."""
    lines = [orjson.dumps({"userId": i}) + b"\n" for i in ids]
    items = run_cut(split_batches(lines, sizes), layout)
    parts = [i for i in items if isinstance(i, PartFile)]
    seals = [i for i in items if isinstance(i, ShardSealed)]
    decoded = [orjson.loads(line)["userId"] for p in parts for line in p.data.splitlines()]
    assert decoded == ids
    assert [s.shard for s in seals] == list(range(len(seals)))
    for seal in seals:
        mine = [p for p in parts if p.shard == seal.shard]
        assert [p.part for p in mine] == list(range(seal.parts))
        assert 1 <= seal.parts <= layout.max_job_files
        assert seal.records == sum(p.records for p in mine) > 0
        assert seal.nbytes == sum(len(p.data) for p in mine)
        assert seal.nbytes <= layout.max_job_bytes
        if seal.shard < len(seals) - 1 and seal.parts < layout.max_job_files:
            assert seal.nbytes >= layout.shard_bytes, "only the last shard may fall short"
        for part in mine:
            assert 0 < part.records <= layout.max_file_records
            assert len(part.data) <= layout.part_bytes or part.records == 1
            assert part.records == part.data.count(b"\n")
    # Every part is announced before its shard's seal.
    seen_sealed = set()
    for item in items:
        if isinstance(item, ShardSealed):
            seen_sealed.add(item.shard)
        else:
            assert item.shard not in seen_sealed


@settings(max_examples=60, deadline=None)
@given(ids=ids, layout=layouts, a=st.lists(st.integers(1, 64)), b=st.lists(st.integers(1, 64)))
def test_cut_does_not_depend_on_batch_boundaries(
    ids: list[str], layout: ShardLayout, a: list[int], b: list[int]
) -> None:
    """The same records give byte-identical parts however the input was batched."""
    lines = [orjson.dumps({"userId": i}) + b"\n" for i in ids]
    first = [
        (p.shard, p.part, p.data, p.sha256())
        for p in run_cut(split_batches(lines, a), layout)
        if isinstance(p, PartFile)
    ]
    second = [
        (p.shard, p.part, p.data, p.sha256())
        for p in run_cut(split_batches(lines, b), layout)
        if isinstance(p, PartFile)
    ]
    assert first == second


@settings(max_examples=120, deadline=None)
@given(ids=ids, layout=layouts, sizes=st.lists(st.integers(1, 64), max_size=10))
def test_streamed_parts_are_the_whole_parts_chunk_by_chunk(
    ids: list[str], layout: ShardLayout, sizes: list[int]
) -> None:
    """`stream_parts` gives the parts `cut_shards` gives, each as consecutive chunks ending in
    one `last`, every seal after its shard's last chunk; and all that a batch cuts comes before
    the next batch is asked for, so a writer can let each batch go as it is written."""
    lines = [orjson.dumps({"userId": i}) + b"\n" for i in ids]
    batches = split_batches(lines, sizes)
    whole = run_cut(batches, layout)
    log: list[object] = []
    streamed = run_stream(batches, layout, log)
    assert [i for i in whole if isinstance(i, ShardSealed)] == [
        i for i in streamed if isinstance(i, ShardSealed)
    ]
    rebuilt: list[tuple[int, int, bytes, int, int]] = []
    current: list[PartChunk] = []
    for item in streamed:
        if isinstance(item, ShardSealed):
            assert not current, "a shard sealed while one of its parts was open"
            continue
        assert not current or (current[0].shard, current[0].part) == (item.shard, item.part)
        current.append(item)
        if item.last:
            data = b"".join(b"".join(c.chunks) for c in current)
            records, nbytes = sum(c.records for c in current), sum(c.nbytes for c in current)
            rebuilt.append((item.shard, item.part, data, records, nbytes))
            current = []
    assert not current
    assert rebuilt == [
        (p.shard, p.part, p.data, p.records, p.nbytes) for p in whole if isinstance(p, PartFile)
    ]
    # Each chunk's bytes come from the batch fed last (they are cut from no other).
    fed = -1
    for entry in log:
        if isinstance(entry, tuple):
            fed = entry[1]
        elif isinstance(entry, PartChunk):
            for view in entry.chunks:
                assert view.obj is batches[fed].data


def test_joined_parts_are_one_buffer_with_the_same_bytes_and_hash() -> None:
    """With join, every part is a single bytes chunk, byte-identical to the unjoined part."""
    lines = [orjson.dumps({"userId": f"user-{i}"}) + b"\n" for i in range(2_000)]
    layout = ShardLayout(
        shard_bytes=9_000, max_job_bytes=10**6, part_bytes=3_000, max_job_files=10,
        max_file_records=10**6,
    )  # fmt: skip
    batches = split_batches(lines, [7, 300, 1, 50] * 20)
    views = [p for p in run_cut(batches, layout) if isinstance(p, PartFile)]
    joined = [p for p in run_cut(batches, layout, join=True) if isinstance(p, PartFile)]
    assert any(len(p.chunks) > 1 for p in views)
    assert all(len(p.chunks) == 1 and isinstance(p.chunks[0], bytes) for p in joined)
    assert [(p.shard, p.part, p.data, p.nbytes, p.records, p.sha256()) for p in views] == [
        (p.shard, p.part, p.data, p.nbytes, p.records, p.sha256()) for p in joined
    ]


def test_a_planned_target_gives_at_most_the_planned_shards() -> None:
    """With target ceil(total / n), records of uneven sizes still make at most n shards."""
    lines = [orjson.dumps({"userId": f"user-{i}"}) + b"\n" for i in range(1, 20_001)]
    total = sum(map(len, lines))
    for shards in (1, 2, 3, 5, 7):
        target = -(-total // shards)
        layout = ShardLayout(
            shard_bytes=target,
            max_job_bytes=10**9,
            part_bytes=10**6,
            max_job_files=1000,
            max_file_records=10**6,
        )
        seals = [i for i in run_cut([batch_of(lines)], layout) if isinstance(i, ShardSealed)]
        assert len(seals) == shards


@pytest.mark.parametrize(
    ("count", "files", "file_records", "shards"),
    [(200, 1, 100, 2), (200_000, 1000, 100, 2), (100_000, 50, 500, 4)],
)
def test_a_file_limit_closing_a_shard_short_does_not_add_a_shard(
    count: int, files: int, file_records: int, shards: int
) -> None:
    """IDs growing longer (1, 2, … 200): a shard that its last allowed file closes short of its
    byte target leaves those bytes to the shards after it, so the cut makes the shards the
    plan counted, not one more for the few records left over."""
    from fanout.config import Limits, Timing
    from fanout.plan import InputEstimate, make_plan

    lines = [orjson.dumps({"itemId": str(i)}) + b"\n" for i in range(1, count + 1)]
    limits = Limits(max_job_files=files, max_concurrent_jobs=1)
    estimate = InputEstimate(count, sum(map(len, lines)), exact=True, how="counted")
    plan = make_plan(estimate, limits, Timing(), file_records)
    assert plan.shards == shards
    items = run_cut([batch_of(lines)], plan.layout(limits, file_records))
    seals = [item for item in items if isinstance(item, ShardSealed)]
    assert len(seals) == shards
    assert sum(seal.records for seal in seals) == count
    assert all(part.records <= file_records for part in items if isinstance(part, PartFile))
    assert all(seal.parts <= files for seal in seals)


def test_record_larger_than_a_job_is_a_config_error() -> None:
    """A single record over the per-job byte limit cannot be sent: the limit is too low for
    the input (exit 2), and the message says which option to raise, and that the run is to
    be prepared again as a new one (a resume keeps its limits: helper-33 found no way out)."""
    layout = ShardLayout(
        shard_bytes=50, max_job_bytes=50, part_bytes=50, max_job_files=1, max_file_records=10
    )
    with pytest.raises(ConfigError, match=r"more than a whole job .*raise --max-job-bytes") as e:
        run_cut([batch_of([b"x" * 60 + b"\n"])], layout)
    assert "again as a new run (another --run-id" in str(e.value)


def test_part_names_follow_the_s3_layout() -> None:
    """Part files are named shard-NNNNN/part-NNNNN.jsonl."""
    assert part_name(3, 12) == "shard-00003/part-00012.jsonl"


def test_layout_rejects_impossible_limits() -> None:
    """A shard target above the job limit is a programming error."""
    with pytest.raises(ValueError, match="shard_bytes"):
        ShardLayout(
            shard_bytes=10, max_job_bytes=5, part_bytes=5, max_job_files=1, max_file_records=1
        )


def _chunks(sizes: list[int], seed: int) -> list[memoryview]:
    rng = np.random.default_rng(seed)
    return [memoryview(rng.integers(0, 256, size, dtype=np.uint8).tobytes()) for size in sizes]


async def _write_all(local: LocalParts, chunks: list[PartChunk]) -> list[UploadedPart]:
    """Every chunk written, and the parts the writer reported meanwhile."""
    written: list[UploadedPart] = []

    async def report() -> None:
        written.extend([part async for part in local.written()])

    async with anyio.create_task_group() as group:
        group.start_soon(report)
        for chunk in chunks:
            await local.write(chunk)
        await local.finish()
    return written


def test_local_parts_write_and_hash_parts_of_many_chunks(tmp_path: Path) -> None:
    """Parts given chunk by chunk (views of sizes around the writer's 1 MiB step, several per
    chunk) land byte for byte under their names, each reported once whole, with the file's
    SHA-256, sizes and records."""
    sizes = [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7]
    views = _chunks(sizes, 5)
    chunks = [
        PartChunk(0, 0, (views[0], views[1]), 2, 1, last=False),
        PartChunk(0, 0, (views[2],), 1, sizes[2], last=False),
        PartChunk(0, 0, (views[3], views[4]), 3, sizes[3] + sizes[4], last=False),
        PartChunk(0, 0, (), 0, 0, last=True),
        PartChunk(1, 0, (views[5],), 4, sizes[5], last=True),
    ]

    async def go() -> list[UploadedPart]:
        async with LocalParts(tmp_path) as local:
            return await _write_all(local, chunks)

    results = anyio.run(go)
    assert len(results) == 2
    for result, key, data, records in (
        (results[0], (0, 0), b"".join(views[:5]), 6),
        (results[1], (1, 0), bytes(views[5]), 4),
    ):
        body = (tmp_path / part_name(*key)).read_bytes()
        assert body == data
        assert result == UploadedPart(
            *key, str(tmp_path / part_name(*key)), "", len(data), records,
            hashlib.sha256(body).hexdigest(),
        )  # fmt: skip
    assert not list(tmp_path.rglob("*.tmp"))


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(
        st.lists(st.integers(0, 3 * (1 << 20) // 2), min_size=1, max_size=4),
        min_size=1,
        max_size=5,
    ),
    verify=st.sets(st.integers(0, 4)),
    seed=st.integers(0, 1 << 16),
)
def test_local_parts_report_every_part_once_with_its_hash(
    tmp_path_factory: pytest.TempPathFactory, parts: list[list[int]], verify: set[int], seed: int
) -> None:
    """However the parts and their chunks are sized, and whether a part is written or only
    hashed (an earlier attempt wrote it), every part is reported once, in order, with
    hashlib's SHA-256 of its bytes, and only the parts to write are written."""
    root = tmp_path_factory.mktemp("parts")
    chunks: list[PartChunk] = []
    expected: list[bytes] = []
    for index, sizes in enumerate(parts):
        views = _chunks(sizes, seed + index)
        expected.append(b"".join(views))
        for at, view in enumerate(views):
            chunks.append(PartChunk(0, index, (view,), 1, len(view), last=at == len(views) - 1))
    only_hashed = {(0, index) for index in verify if index < len(parts)}

    async def go() -> list[UploadedPart]:
        async with LocalParts(root, verify_only=only_hashed) as local:
            return await _write_all(local, chunks)

    results = anyio.run(go)
    assert [(r.shard, r.part) for r in results] == [(0, i) for i in range(len(parts))]
    for result, data in zip(results, expected, strict=True):
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.nbytes == len(data)
        path = root / part_name(result.shard, result.part)
        assert path.exists() != ((result.shard, result.part) in only_hashed)
        if path.exists():
            assert path.read_bytes() == data


def test_a_part_file_has_its_name_only_once_whole(tmp_path: Path) -> None:
    """Until its last chunk, a part is written under `<name>.tmp`; then moved to its name."""
    path = tmp_path / part_name(0, 0)
    part = upload._OpenPart((0, 0), path, write=True)
    view = memoryview(b'{"userId":"a"}\n')
    part.add(PartChunk(0, 0, (view,), 1, len(view), last=False))
    assert not path.exists() and path.with_name(path.name + ".tmp").exists()
    part.add(PartChunk(0, 0, (view,), 1, len(view), last=True))
    assert path.read_bytes() == bytes(view) * 2 and part.records == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_local_parts_only_hash_the_parts_to_verify(tmp_path: Path) -> None:
    """A part an earlier attempt wrote is hashed, not written again: its file is left as is."""
    (tmp_path / "shard-00000").mkdir()
    (tmp_path / part_name(0, 0)).write_bytes(b"left by the earlier attempt")
    data = b'{"userId":"a"}\n'

    async def go() -> list[UploadedPart]:
        async with LocalParts(tmp_path, verify_only={(0, 0)}) as local:
            chunk = PartChunk(0, 0, (memoryview(data),), 1, len(data), True)
            return await _write_all(local, [chunk])

    [result] = anyio.run(go)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / part_name(0, 0)).read_bytes() == b"left by the earlier attempt"


def _added(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the writer's thread has added a chunk to a part."""
    added = threading.Event()
    add = upload._OpenPart.add

    def spy(self: upload._OpenPart, chunk: PartChunk) -> None:
        add(self, chunk)
        added.set()

    monkeypatch.setattr(upload._OpenPart, "add", spy)
    return added


def test_local_parts_remove_an_unfinished_part_and_refuse_interleaved_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed with a part half written, the writer removes its temporary file (no part file
    appears); a chunk of another part while one is open is a programming error."""
    view = memoryview(b'{"userId":"a"}\n')
    added = _added(monkeypatch)

    async def go() -> None:
        async with LocalParts(tmp_path) as local:
            await local.write(PartChunk(0, 0, (view,), 1, len(view), last=False))
            await anyio.to_thread.run_sync(added.wait)
            assert await anyio.Path(tmp_path / (part_name(0, 0) + ".tmp")).exists()
            with pytest.raises(ValueError, match="before"):
                await local.write(PartChunk(0, 1, (view,), 1, len(view), last=True))

    anyio.run(go)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_local_parts_clean_up_when_the_run_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled with a part half written (another stage failed) while waiting for the next
    part, the writer's thread still ends and removes the part's temporary file."""
    view = memoryview(b'{"userId":"a"}\n')
    added = _added(monkeypatch)

    async def writer(local: LocalParts) -> None:
        await local.write(PartChunk(0, 0, (view,), 1, len(view), last=False))
        async for _ in local.written():
            pass

    async def go() -> None:
        async with LocalParts(tmp_path) as local, anyio.create_task_group() as group:
            group.start_soon(writer, local)
            await anyio.to_thread.run_sync(added.wait)
            assert await anyio.Path(tmp_path / (part_name(0, 0) + ".tmp")).exists()
            group.cancel_scope.cancel()

    anyio.run(go)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_local_parts_say_which_file_they_cannot_write(tmp_path: Path) -> None:
    """A write that fails is an UploadError naming the part's path and why, raised where the
    written parts are reported."""
    (tmp_path / "shard-00000").write_text("a file where the shard's directory should be")
    view = memoryview(b'{"userId":"a"}\n')

    async def go() -> None:
        async with LocalParts(tmp_path) as local:
            await local.write(PartChunk(0, 0, (view,), 1, len(view), last=True))
            await local.finish()
            async for _ in local.written():
                pass

    with pytest.raises(UploadError, match=r"cannot write .*shard-00000/part-00000\.jsonl"):
        anyio.run(go)
