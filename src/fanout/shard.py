"""Cutting encoded records into job shards and part files, within every service limit.

A *job shard* is what one batch job reads: one S3 prefix holding part files. The cut is decided
record by record from cumulative sizes, never from where the input's batches happened to end,
so the same records and the same `ShardLayout` always give byte-identical parts.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from .errors import ConfigError
from .records import RecordBatch


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """Where to cut: target bytes per shard, and the per-file limits.

    A shard is closed at the first record that brings it to its target or more, and never
    exceeds `max_job_bytes`; so a planned `ceil(total / n)` target gives at most n shards. The
    target is `shard_bytes`, but with `shards` planned, the bytes by which the shards before
    fell short of `shard_bytes` (a file limit closed them: their IDs were shorter than the
    average) are shared among the shards left, so that they are not spilled into a shard more
    than planned. (A shard that reached its target went over it by less than a record: that
    gives nothing back.) Past the planned shards (an estimate that was short), each is filled
    up to the job limit.

    With `records` (the input's, counted exactly) a shard also takes at least its share of the
    records left, `record_target`: cut by bytes alone, shards of longer IDs than the average
    close with fewer records, and where a job's records are what limit it (`--max-file-records`
    times `--max-job-files`), the few left over made a shard more than planned (and a wave).
    """

    shard_bytes: int  # target input bytes per job shard (at most the job limit)
    max_job_bytes: int  # the hard limit: one record over it cannot be sent at all
    part_bytes: int  # target bytes per part file
    max_job_files: int
    max_file_records: int
    shards: int = 0  # planned; 0: one target for every shard
    records: int = 0  # the input's records, with `shards`: each takes its share; 0: not counted

    def record_target(self, shard: int, done: int) -> int:
        """The records `shard` takes at least, after `done` records in the shards before it:
        its share of those left (0: no such floor)."""
        left = self.shards - shard
        if not self.records or left <= 0:
            return 0
        return -(-max(self.records - done, 0) // left)

    def target(self, shard: int, done: int) -> int:
        """The target bytes of `shard`, after `done` bytes in the shards before it."""
        if not self.shards:
            return self.shard_bytes
        left = self.shards - shard
        if left <= 0:
            return self.max_job_bytes
        short = shard * self.shard_bytes - done
        extra = -(-short // left) if short > 0 else 0
        return min(self.max_job_bytes, self.shard_bytes + extra)

    def __post_init__(self) -> None:
        if not 0 < self.shard_bytes <= self.max_job_bytes:
            raise ValueError("shard_bytes must be in (0, max_job_bytes]")
        if self.part_bytes <= 0 or self.max_job_files <= 0 or self.max_file_records <= 0:
            raise ValueError("part_bytes, max_job_files and max_file_records must be positive")


@dataclass(frozen=True, slots=True)
class PartFile:
    """One part file of one shard, ready to upload.

    Its bytes are `chunks`: views into the record batches, in order; for S3,
    `cut_shards(join=True)` makes each part one `bytes` chunk (`joined`), the request body.
    `sha256()` hashes them; writers call it in their worker thread, so hashing runs beside the
    source instead of in its way. (`--local-dir` writes parts as they are cut: `PartChunk`.)
    """

    shard: int
    part: int
    chunks: tuple[bytes | memoryview, ...]
    records: int
    nbytes: int

    @classmethod
    def of(cls, shard: int, part: int, data: bytes, records: int) -> PartFile:
        """A part made of one buffer."""
        return cls(shard, part, (data,), records, len(data))

    @property
    def name(self) -> str:
        return part_name(self.shard, self.part)

    @property
    def single(self) -> bool:
        """Whether the part is one `bytes` chunk (then `data` is not a copy)."""
        return len(self.chunks) == 1 and isinstance(self.chunks[0], bytes)

    @property
    def data(self) -> bytes:
        """The part's bytes as one buffer (a copy, unless it is `single`)."""
        first = self.chunks[0] if len(self.chunks) == 1 else None
        return first if isinstance(first, bytes) else b"".join(self.chunks)

    def joined(self) -> PartFile:
        """This part as one `bytes` chunk (a copy): it no longer holds on to the batches."""
        return PartFile.of(self.shard, self.part, self.data, self.records)

    def sha256(self) -> str:
        """The hex SHA-256 of the part's bytes (releases the GIL: call it in a worker thread)."""
        digest = hashlib.sha256()
        for chunk in self.chunks:
            digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class PartChunk:
    """The next bytes of one part file, cut from the batch just fed (`stream_parts`).

    A part's chunks come in order, one after the other (never two parts' interleaved); the one
    with `last` completes it. `records` and `nbytes` are this chunk's; `chunks` may be empty when
    the part was completed by the next batch's first record not fitting.
    """

    shard: int
    part: int
    chunks: tuple[memoryview, ...]
    records: int
    nbytes: int
    last: bool


@dataclass(frozen=True, slots=True)
class ShardSealed:
    """No more parts will be added to `shard`: it holds `parts` files, `records`, `nbytes`."""

    shard: int
    parts: int
    records: int
    nbytes: int


def shard_dir(shard: int) -> str:
    return f"shard-{shard:05d}/"


def part_name(shard: int, part: int) -> str:
    """The part's path under the run's input prefix, e.g. `shard-00000/part-00000.jsonl`."""
    return f"{shard_dir(shard)}part-{part:05d}.jsonl"


class _Cutter:
    """The cutting state machine; `feed` collects the parts and seals a batch completes (with
    `stream`, the part chunks it cut instead of whole parts: `PartChunk`)."""

    def __init__(self, layout: ShardLayout, stream: bool = False) -> None:
        self.layout = layout
        self.stream = stream
        self.shard = 0
        self.target = layout.shard_bytes  # this shard's
        self.record_target = layout.record_target(0, 0)  # this shard's
        self.done_bytes = 0  # in the shards sealed
        self.done_records = 0
        self.shard_bytes = 0
        self.shard_records = 0
        self.shard_parts = 0
        self.chunks: list[memoryview] = []
        self.part_bytes = 0
        self.part_records = 0
        self.sent_bytes = 0  # with `stream`: of the part, in chunks already collected
        self.sent_records = 0
        self.out: list[PartFile | PartChunk | ShardSealed] = []

    def _flush_part(self) -> None:
        if not self.part_records:
            return
        if self.stream:
            self._send(last=True)
        else:
            chunks = tuple(self.chunks)
            self.out.append(
                PartFile(self.shard, self.shard_parts, chunks, self.part_records, self.part_bytes)
            )
        self.shard_parts += 1
        self.chunks, self.part_bytes, self.part_records = [], 0, 0
        self.sent_bytes = self.sent_records = 0

    def _send(self, last: bool) -> None:
        """Collect the current part's chunks not collected yet (`stream`)."""
        records, nbytes = self.part_records - self.sent_records, self.part_bytes - self.sent_bytes
        chunks = tuple(self.chunks)
        self.out.append(PartChunk(self.shard, self.shard_parts, chunks, records, nbytes, last))
        self.chunks, self.sent_records, self.sent_bytes = [], self.part_records, self.part_bytes

    def _seal(self) -> None:
        self._flush_part()
        if self.shard_records:
            self.out.append(
                ShardSealed(self.shard, self.shard_parts, self.shard_records, self.shard_bytes)
            )
            self.shard += 1
            self.done_bytes += self.shard_bytes
            self.done_records += self.shard_records
            self.target = self.layout.target(self.shard, self.done_bytes)
            self.record_target = self.layout.record_target(self.shard, self.done_records)
        self.shard_bytes = self.shard_records = self.shard_parts = 0

    def feed(self, batch: RecordBatch) -> None:
        layout = self.layout
        ends = batch.ends
        view = memoryview(batch.data)
        n = batch.records
        pos = 0
        while pos < n:
            start = int(ends[pos - 1]) if pos else 0
            size = int(ends[pos]) - start
            if size > layout.max_job_bytes:
                raise ConfigError(
                    f"a record of {size} bytes is more than a whole job may hold "
                    f"(--max-job-bytes {layout.max_job_bytes}): raise --max-job-bytes (the "
                    "service takes up to 1 GB a job) and prepare the input again as a new run "
                    "(another --run-id, or after deleting this run's state directory): a "
                    "resume keeps the limits the run began with"
                )
            reached = self.shard_bytes >= self.target and self.shard_records >= self.record_target
            if self.shard_records and (reached or self.shard_bytes + size > layout.max_job_bytes):
                self._seal()
                continue
            part_full = (
                self.part_records and self.part_bytes + size > layout.part_bytes
            ) or self.part_records >= layout.max_file_records
            if part_full:
                self._flush_part()
                if self.shard_parts >= layout.max_job_files:
                    self._seal()
                continue
            room = min(layout.part_bytes - self.part_bytes, layout.max_job_bytes - self.shard_bytes)
            take = bisect.bisect_right(ends, start + room, pos) - pos
            # Up to and including the record that reaches the shard's targets.
            to_target = start + self.target - self.shard_bytes
            by_bytes = bisect.bisect_left(ends, to_target, pos) - pos + 1
            take = min(take, max(by_bytes, self.record_target - self.shard_records))
            take = max(1, min(take, layout.max_file_records - self.part_records, n - pos))
            stop = int(ends[pos + take - 1])
            self.chunks.append(view[start:stop])
            self.part_bytes += stop - start
            self.part_records += take
            self.shard_bytes += stop - start
            self.shard_records += take
            pos += take
        if self.stream and self.chunks:
            self._send(last=False)

    def finish(self) -> None:
        self._seal()

    def take(self) -> list[PartFile | PartChunk | ShardSealed]:
        out, self.out = self.out, []
        return out


async def cut_shards(
    batches: AsyncIterator[RecordBatch], layout: ShardLayout, *, join: bool = False
) -> AsyncIterator[PartFile | ShardSealed]:
    """Parts as they fill, each shard's `ShardSealed` after its last part.

    With `join`, each part comes as one buffer, joined on a worker thread as it is cut: for
    writers that send a part as one request body (S3), which would otherwise hold both the
    joined copy and the batches it came from while the part is in flight.
    """
    async for item in _cut(batches, _Cutter(layout)):
        assert not isinstance(item, PartChunk)
        if join and isinstance(item, PartFile) and not item.single:
            item = await anyio.to_thread.run_sync(item.joined)
        yield item


async def stream_parts(
    batches: AsyncIterator[RecordBatch], layout: ShardLayout
) -> AsyncIterator[PartChunk | ShardSealed]:
    """The same parts as `cut_shards`, each as the chunks cut from each batch, as soon as they
    are cut: for a writer that writes a part as it grows (a local file), so that a batch is let
    go once written, not when the part it ends up in is full."""
    async for item in _cut(batches, _Cutter(layout, stream=True)):
        assert not isinstance(item, PartFile)
        yield item


async def _cut(
    batches: AsyncIterator[RecordBatch], cutter: _Cutter
) -> AsyncIterator[PartFile | PartChunk | ShardSealed]:
    async for batch in batches:
        cutter.feed(batch)
        for item in cutter.take():
            yield item
    cutter.finish()
    for item in cutter.take():
        yield item
