"""Cutting records into shards and parts: limits, order, determinism."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.errors import InputError
from fanout.records import RecordBatch
from fanout.shard import PartFile, ShardLayout, ShardSealed, cut_shards, part_name


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


ids = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=300)
layouts = st.builds(
    ShardLayout,
    shard_bytes=st.integers(40, 2000),
    max_job_bytes=st.integers(2000, 3000),
    part_bytes=st.integers(20, 800),
    max_job_files=st.integers(1, 6),
    max_file_records=st.integers(1, 50),
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


def test_record_larger_than_a_job_is_an_input_error() -> None:
    """A single record over the per-job byte limit cannot be sent and says so."""
    layout = ShardLayout(
        shard_bytes=50, max_job_bytes=50, part_bytes=50, max_job_files=1, max_file_records=10
    )
    with pytest.raises(InputError, match="more than a whole job"):
        run_cut([batch_of([b"x" * 60 + b"\n"])], layout)


def test_part_names_follow_the_s3_layout() -> None:
    """Part files are named shard-NNNNN/part-NNNNN.jsonl."""
    assert part_name(3, 12) == "shard-00003/part-00012.jsonl"


def test_layout_rejects_impossible_limits() -> None:
    """A shard target above the job limit is a programming error."""
    with pytest.raises(ValueError, match="shard_bytes"):
        ShardLayout(
            shard_bytes=10, max_job_bytes=5, part_bytes=5, max_job_files=1, max_file_records=1
        )


def test_local_writer_writes_and_hashes_parts_of_many_chunks(tmp_path: Path) -> None:
    """A part of views of several sizes (around the writer's 1 MiB step) lands byte for byte,
    and the SHA-256 returned is the file's."""
    from fanout.upload import LocalPartWriter

    rng = np.random.default_rng(5)
    sizes = [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7]
    chunks = [memoryview(rng.integers(0, 256, size, dtype=np.uint8).tobytes()) for size in sizes]
    total = sum(sizes)
    part = PartFile(0, 0, tuple(chunks), 1, total)
    written = anyio.run(LocalPartWriter(tmp_path).write, part)
    body = (tmp_path / part.name).read_bytes()
    assert body == b"".join(chunks)
    assert written.sha256 == hashlib.sha256(body).hexdigest() == part.sha256()
    assert not list(tmp_path.rglob("*.tmp"))
