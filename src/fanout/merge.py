"""The merge stage: read a finished job's outputs, write results and errors, reconcile.

`merge_shard` streams every `*.out` object under a shard's output prefix (anything else, such as
`_CHECK`, is ignored), parses it a block of lines at a time (`parse_block`), writes successes
to a result file (`open_results`: JSON lines, CSV or Parquet) and error lines to an errors
sink, and reports lines it cannot use (object, line number, reason) to a corrupt-lines sink.
Output order is not input order (reference §2.4), so lines are matched to what was sent by key,
never by position.

Reconciliation is exact. The shard's input parts are read back to learn which IDs were sent:

1. Each sent ID gets a 64-bit fingerprint (`_mergekernels.fingerprints`), kept in a sorted
   array with a one-byte "written" flag: 9 bytes per sent ID (~270 MB for 30M IDs; ~17 bytes
   per ID for a moment while the array is sorted). That array decides, while
   the outputs stream, whether a line is written (first line for a sent fingerprint) or not
   (a fingerprint never sent, or one already written).
2. The IDs themselves are spilled, hash-partitioned, to `partitions` local files: the sent IDs,
   and every output line's ID with what was done with it (a small shard's spill stays in
   memory). After the outputs are read, the partitions are reconciled with exact comparisons
   (`_mergekernels.reconcile`: a hash table of the sent IDs, by fingerprint, then byte for
   byte), a group of ~16 MB of spilled IDs at a time. Disk use
   is about twice the bytes of the shard's IDs, in a private temporary folder removed
   afterwards.

Lines of the common shape are never turned into Python objects: `_outputs.parse_block` keeps
them as byte ranges (`CommonLines`), which `ResultFile.write_common` writes; a result sink that
is not a `ResultFile` gets them as `OutputRecord`s. The per-line work (checking lines,
fingerprints, spilling IDs) is done by compiled kernels (`_mergekernels`) on worker threads,
which release the GIL, so shards merge on every core.

So a fingerprint collision can never hide a missing ID: an ID counts as answered only if a line
with exactly that ID was written. A collision can at worst (probability ~n²/2⁶⁵ per shard) make
one ID's line go unwritten, and that ID is then listed as missing; or write one row whose ID was
never sent (counted in `collisions` and `unexpected`). A corrupt line's ID is unknown, so it is
counted as missing too, and missing IDs can be sent again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import BinaryIO, Protocol

import aiofiles
import anyio
import numpy as np
import numpy.typing as npt
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from . import _mergekernels as K
from ._outputs import (
    BadLine,
    Block,
    CommonLines,
    OutputRecord,
    blocks,
    parse_block,
    parse_output_line,
)
from ._writers import (
    ResultFile,
    ResultFormat,
    ResultShape,
    flat_record,
    open_results,
)
from .errors import InputError, MergeError
from .records import InputKind
from .storage import ObjectReader, S3Uri

__all__ = [
    "BadLine",
    "MergeOptions",
    "MergeSinks",
    "MergeStats",
    "OutputRecord",
    "Reconciliation",
    "ReportSink",
    "ResultFile",
    "ResultFormat",
    "ResultShape",
    "ResultSink",
    "flat_record",
    "merge_shard",
    "open_results",
    "parse_output_line",
]

# What was done with an output line, spilled with its ID:
_RESULT = ord("r")  # written as a result
_ERROR = ord("e")  # written as an error line
_DROPPED = ord("d")  # a sent fingerprint already written: not written again
_UNSENT = ord("u")  # a fingerprint never sent: not written
_ROUTE_TAGS = np.array([_RESULT, _DROPPED, _UNSENT], np.uint8)  # for `_mergekernels.route`


class ResultSink(Protocol):
    """Where successful results go (`ResultFile` is one)."""

    async def write(self, records: Sequence[OutputRecord]) -> None: ...


class ReportSink(Protocol):
    """Where report lines go (errors, missing IDs, corrupt lines); `journal.FileSink` is one."""

    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class MergeSinks:
    """Where a merge writes. One set can be shared by the merges of every shard of a run.

    - `results`: one record per ID answered without error.
    - `errors`: JSON lines `{"id": …, "error": …, "shard": …}`.
    - `missing`: one ID per line (an ID with a control character is written JSON-quoted).
    - `corrupt`: JSON lines `{"shard": …, "object": "s3://…", "line": …, "reason": …}`.
    """

    results: ResultSink
    errors: ReportSink
    missing: ReportSink
    corrupt: ReportSink


MAX_LINE_BYTES = 256 * 1024 * 1024  # the longest output line read; a 5M-user segment's is ~60 MB


@dataclass(frozen=True, slots=True)
class MergeOptions:
    """Tuning; the defaults bound memory to ~9 bytes per sent ID, plus `chunk_bytes` and one
    line (≤ `max_line_bytes`) per object being read, plus 4 MiB of spill buffers and one group
    of spill partitions (~16 MiB of IDs) while reconciling.

    `chunk_bytes` is 2 MiB: with compiled kernels, 1 MiB spent ~10% more CPU on per-block
    overhead, and 4 MiB more system time on fresh pages (2M lines, `benchmarks/merge.py`)."""

    chunk_bytes: int = 2 * 1024 * 1024
    max_line_bytes: int = MAX_LINE_BYTES
    partitions: int = 64
    spill_dir: Path | None = None  # default: the system's temporary folder

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0 or self.max_line_bytes <= 0 or not 1 <= self.partitions <= 4096:
            raise ValueError("chunk_bytes, max_line_bytes > 0 and 1 ≤ partitions ≤ 4096")

    PARTITION_INPUT_BYTES = 8 * 1024 * 1024

    def for_input(self, nbytes: int) -> MergeOptions:
        """These options for a shard of `nbytes` of input lines: one spill partition per
        `PARTITION_INPUT_BYTES` of them (at most `partitions`), since a partition's IDs take
        fewer bytes than their input lines. A shard of a few MB then spills into one buffer,
        not 64 (each appended to for every block of lines)."""
        wanted = max(1, -(-nbytes // self.PARTITION_INPUT_BYTES))
        return dataclasses.replace(self, partitions=min(self.partitions, wanted))


@dataclass(frozen=True, slots=True)
class MergeStats:
    """What one shard's merge found. `sent == results + errors + missing` always holds."""

    shard: int
    sent: int  # distinct IDs in the shard's input
    duplicated_in_input: int  # input lines repeating an ID already sent in the shard
    objects: int  # *.out objects read
    ignored_objects: int  # other objects under the prefix (_CHECK, …)
    lines: int  # non-blank output lines
    results: int  # sent IDs answered with recommendations
    errors: int  # sent IDs answered with an error line
    missing: int  # sent IDs with no usable line (listed in the missing sink)
    corrupt: int  # lines that could not be used (listed in the corrupt sink)
    unexpected: int  # usable lines whose ID was not sent
    duplicated_in_output: int  # usable lines for an ID already answered
    collisions: int  # lines a fingerprint collision mishandled (see the module docstring)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The counts of a whole run's merge, and the check that every input line is accounted for."""

    sent: int = 0
    duplicated_in_input: int = 0
    results: int = 0
    errors: int = 0
    missing: int = 0
    corrupt: int = 0
    unexpected: int = 0
    duplicated_in_output: int = 0
    collisions: int = 0

    @classmethod
    def of(cls, stats: Iterable[MergeStats]) -> Reconciliation:
        names = [f.name for f in fields(cls)]
        totals = dict.fromkeys(names, 0)
        for one in stats:
            for name in names:
                totals[name] += getattr(one, name)
        return cls(**totals)

    def check(self, *, lines: int, blank: int, rejected: int, duplicates: int) -> None:
        """Raise MergeError unless every input line (prepare's counts) is accounted for:
        lines = blank + rejected + duplicates + results + errors + missing."""
        if self.results + self.errors + self.missing != self.sent:
            raise MergeError(
                f"merge counts disagree: {self.results} results + {self.errors} errors + "
                f"{self.missing} missing ≠ {self.sent} IDs sent (a bug in fanout: please report)"
            )
        accounted = blank + rejected + duplicates + self.duplicated_in_input + self.sent
        if accounted != lines:
            raise MergeError(
                f"{lines} input lines but {accounted} accounted for ({blank} blank + {rejected} "
                f"rejected + {duplicates} duplicates + {self.results} results + {self.errors} "
                f"errors + {self.missing} missing"
                + (f" + {self.duplicated_in_input} sent twice" if self.duplicated_in_input else "")
                + "): the shards merged are not the shards this input was prepared into"
            )


# ---------------------------------------------------------------------------------------------
# Reading lines


async def _local_chunks(path: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    try:
        async with aiofiles.open(path, "rb") as handle:
            while chunk := await handle.read(chunk_bytes):
                yield chunk
    except OSError as exc:
        raise MergeError(f"cannot read the shard input {path}: {exc.strerror}") from exc


def _chunks(reader: ObjectReader, location: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    if location.startswith("s3://"):
        uri = S3Uri.parse(location, what="shard input part")
        return reader.read_chunks(uri.bucket, uri.key, chunk_bytes)
    return _local_chunks(location, chunk_bytes)


U64 = npt.NDArray[np.uint64]


# The bits of an ID's fingerprint that are used: all of them, but tests keep two, so that
# fingerprints collide all the time.
_FINGERPRINT_BITS = np.uint64(2**64 - 1)


def _fingerprints(data: K.U8, lo: K.I64, hi: K.I64) -> U64:
    return K.fingerprints(data, lo, hi, _FINGERPRINT_BITS)


def fingerprints_of(keys: Sequence[bytes]) -> U64:
    """`_mergekernels.fingerprints` of each of `keys`."""
    return _fingerprints(*_packed(keys, 0))


def _packed(pieces: Sequence[bytes], trim: int) -> tuple[K.U8, K.I64, K.I64]:
    """`pieces` joined, and where each starts and ends, less `trim` bytes at either end."""
    sizes = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ends = np.cumsum(sizes)
    data = np.frombuffer(b"".join(pieces), np.uint8)
    return data, ends - sizes + trim, ends - trim


def _sent_block(
    before: int, block: Block, kind: InputKind, where: str, spill: _Spill
) -> tuple[U64, int]:
    """The fingerprints of the IDs on a block of input lines that follows line number
    `before` (blank lines skipped), each ID spilled, and the number of lines in the block; a
    damaged line is an error. Lines as prepare writes them (`{"userId":"…"}`, no escapes) are
    read by a kernel, others with orjson."""
    if block.overlong:
        raise _damaged(where, before + 1, "longer than the line limit")
    data = block.data()
    count, lo, hi = K.scan_sent(data, K.as_array('{"' + kind.id_field + '":"'))
    if count >= 0:
        fps = _fingerprints(data, lo, hi)
        spill.add(data, lo, hi, None, fps)
        return fps, count
    lines = data.tobytes().split(b"\n")
    if not lines[-1]:
        lines.pop()
    keys: list[bytes] = []
    quoted: list[bytes] = []
    for number, line in enumerate(lines, start=before + 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        value = obj.get(kind.id_field) if isinstance(obj, dict) else None
        if not isinstance(value, str) or not value:
            raise _damaged(where, number, f"not a JSON object with a string {kind.id_field!r}")
        keys.append(value.encode())
        quoted.append(orjson.dumps(value))
    fps = fingerprints_of(keys)
    spill.add(*_packed(quoted, 1), None, fps)
    return fps, len(lines)


def _damaged(where: str, number: int, problem: str) -> MergeError:
    return MergeError(
        f"{where}, line {number}: {problem}; the shard's input is damaged, so what was sent "
        "cannot be known: prepare the run again"
    )


# ---------------------------------------------------------------------------------------------
# Spilling IDs to partitions


class _Spill:
    """IDs appended to `partitions` files by fingerprint, buffered (up to 4 MiB in all, so a
    small shard never touches the disk); read back one partition at a time."""

    _FLUSH = 4 * 1024 * 1024

    def __init__(self, folder: Path, name: str, partitions: int) -> None:
        self._paths = [folder / f"{name}-{p:04d}" for p in range(partitions)]
        self._buffers = [bytearray() for _ in range(partitions)]
        self._handles: list[BinaryIO | None] = [None] * partitions
        self._pending = 0
        self._partitions = partitions
        self.sizes = [0] * partitions  # bytes per partition

    def add(self, data: K.U8, lo: K.I64, hi: K.I64, tags: K.U8 | None, fps: U64) -> None:
        """Add the IDs `data[lo:hi]` (JSON-escaped, without quotes), each with its tag byte
        (or none), to the buffers by fingerprint (call `flush` when `full`)."""
        if not len(lo):
            return
        parts = (fps % np.uint64(self._partitions)).astype(np.int64)
        if tags is None:
            tags = np.zeros(len(lo), np.uint8)
        self.append_grouped(*K.partitioned(data, lo, hi, tags, parts, self._partitions))

    def append_grouped(self, records: K.U8, bounds: K.I64) -> None:
        """Add whole records ordered by partition, partition p's at `bounds[p]:bounds[p + 1]`
        (as the kernels give them; call `flush` when `full`)."""
        view, at = records.data, bounds.tolist()
        for part in range(self._partitions):
            data = view[at[part] : at[part + 1]]
            if data:
                self._buffers[part] += data
                self.sizes[part] += len(data)
                self._pending += len(data)

    @property
    def full(self) -> bool:
        return self._pending >= self._FLUSH

    async def flush(self) -> None:
        await anyio.to_thread.run_sync(self.write_now)

    def _write(self, buffers: list[bytearray]) -> None:
        for part, data in enumerate(buffers):
            if not data:
                continue
            handle = self._handles[part]
            if handle is None:
                handle = self._handles[part] = open(self._paths[part], "ab")  # noqa: SIM115
            handle.write(data)

    def close(self) -> None:
        for handle in self._handles:
            if handle is not None:
                handle.close()
        self._handles = [None] * len(self._handles)

    def read(self, part: int) -> bytes:
        """Partition `part`'s records; call `close` first."""
        return b"".join(self._chunks(part))

    def split(self, part: int, into: _Spill, first: int, span: int) -> None:
        """Partition `part`'s held lines (`_mergekernels.held`) moved to `into` by position:
        `(position - first) // span`. Streams; call `close` first."""
        tail = b""
        for chunk in self._chunks(part):
            records = K.readonly(np.frombuffer(tail + chunk, np.uint8))
            positions, spans, whole = K.unheld(records)
            into.append_grouped(*K.held(records, spans, positions - first, span, into._partitions))
            tail = records[whole:].tobytes()
            if into.full:
                into.write_now()
        if tail:
            raise MergeError(f"the results held back in {self._paths[part]} were damaged")
        into.close()

    def _chunks(self, part: int) -> Iterator[bytes]:
        if self._paths[part].exists():
            with open(self._paths[part], "rb") as handle:
                while chunk := handle.read(8 * 1024 * 1024):
                    yield chunk
        yield bytes(self._buffers[part])

    def write_now(self) -> None:
        """`flush`, on this thread."""
        buffers, self._buffers = self._buffers, [bytearray() for _ in self._buffers]
        self._pending = 0
        self._write(buffers)

    def discard(self, part: int) -> None:
        """Forget partition `part` (after `read`), freeing its disk space."""
        self._paths[part].unlink(missing_ok=True)
        self._buffers[part] = bytearray()


# ---------------------------------------------------------------------------------------------
# Input order (`--order input`)


class OrderedLines:
    """One shard's result lines put back in input order (`--order input`), on disk meanwhile.

    The merge hands over each result line with its position among the shard's input lines
    and where its parts are; the lines are spilled, each behind a header of those
    (`_mergekernels.held`), to `FILES` files, each for one range of positions. `write_to` then
    reads the files in order, sorts each one by position and writes its lines from where they
    lie in it, not parsed again: memory is one file, and a file of more than `budget` bytes is
    first split again, by narrower ranges of positions, until it fits (or holds a single line).
    Disk use is about the bytes of the shard's results, in `folder`, removed by `close`.
    """

    FILES = 64

    def __init__(self, folder: Path, budget: int = 32 * 1024 * 1024) -> None:
        self.folder = folder
        self._budget = budget
        self._spill = _Spill(folder, "ordered", self.FILES)
        self._span = 1  # positions per file

    def begin(self, positions: int) -> None:
        """The shard has `positions` input lines: set the range of positions per file."""
        self._span = max(1, -(-positions // self.FILES))

    def add(self, positions: K.I64, data: K.U8, spans: K.I64) -> None:
        """The lines of `spans` (rows of `data` as `_mergekernels.scan` gives them; COUNT -1
        for a line to parse again when written), at these input positions (each at most once
        per shard)."""
        self._spill.append_grouped(*K.held(data, spans, positions, self._span, self.FILES))

    @property
    def full(self) -> bool:
        return self._spill.full

    async def flush(self) -> None:
        await self._spill.flush()

    async def write_to(self, results: ResultSink, kind: InputKind) -> None:
        """Write every line to `results`, in position order. Each file is sorted on a worker
        thread while the one before it is written."""
        self._spill.close()
        send, receive = anyio.create_memory_object_stream[_Sorted](1)
        async with anyio.create_task_group() as group:
            group.start_soon(self._sort_all, send, kind)
            async with receive:
                async for lines in receive:
                    await lines.write_to(results, kind)

    async def _sort_all(self, send: MemoryObjectSendStream[_Sorted], kind: InputKind) -> None:
        async with send:
            for part in range(self.FILES):
                await self._sort_range(self._spill, part, self._span, send, kind)

    async def _sort_range(
        self,
        spill: _Spill,
        part: int,
        span: int,
        send: MemoryObjectSendStream[_Sorted],
        kind: InputKind,
    ) -> None:
        if not spill.sizes[part]:
            return
        if spill.sizes[part] > self._budget and span > 1:  # too big to sort in memory: split
            narrower = -(-span // 16)
            finer = _Spill(self.folder, f"ordered-{part}-{span}", 16)
            try:
                await anyio.to_thread.run_sync(spill.split, part, finer, part * span, narrower)
                spill.discard(part)
                for sub in range(16):
                    await self._sort_range(finer, sub, narrower, send, kind)
            finally:
                finer.close()
            return
        await send.send(await anyio.to_thread.run_sync(self._sorted, spill, part, kind))

    def _sorted(self, spill: _Spill, part: int, kind: InputKind) -> _Sorted:
        """Partition `part`'s lines, sorted by position."""
        records = np.frombuffer(spill.read(part), np.uint8)
        spill.discard(part)
        positions, spans, whole = K.unheld(records)
        if whole != len(records):
            raise MergeError(f"the results held back in {self.folder} were damaged")
        return _Sorted(CommonLines(kind.id_field, records, spans[np.argsort(positions)]))

    def close(self) -> None:
        self._spill.close()


@dataclass(frozen=True, slots=True)
class _Sorted:
    """Held lines in order, as byte ranges; the ones not of the common shape (COUNT -1) are
    parsed again when written."""

    lines: CommonLines

    async def write_to(self, results: ResultSink, kind: InputKind) -> None:
        lines = self.lines
        other = lines.spans[:, K.COUNT] < 0
        if not other.any() and isinstance(results, ResultFile):
            await results.write_common(lines)
            return
        # Runs of one kind at a time, in order: common lines as byte ranges, others parsed.
        edges = np.flatnonzero(np.diff(other.astype(np.int8))) + 1
        for lo, hi in itertools.pairwise([0, *edges.tolist(), len(other)]):
            run = lines.take(np.arange(lo, hi))
            if other[lo]:
                await results.write(_parsed_again(run, kind))
            elif isinstance(results, ResultFile):
                await results.write_common(run)
            else:
                await results.write(run.records(kind))


def _parsed_again(lines: CommonLines, kind: InputKind) -> list[OutputRecord]:
    """Lines not of the common shape, as records (they were usable when first parsed)."""
    data = lines.data
    out: list[OutputRecord] = []
    for lo, hi in lines.spans[:, : K.LINE_HI + 1].tolist():
        record = parse_output_line(data[lo:hi].tobytes(), kind)
        if not isinstance(record, OutputRecord):
            raise MergeError(f"a result held back for input order was damaged: {record.reason}")
        out.append(record)
    return out


class InputOrder:
    """Writes the shards of a run to one result sink in shard order, each in input order
    (`OrderedLines`): shard k is written as soon as shards 0 to k are merged. Shards are cut
    from the input in order, so this is the input's order. Each shard waiting its turn is held
    on disk under `folder`."""

    def __init__(self, results: ResultSink, kind: InputKind, folder: Path) -> None:
        self._results = results
        self._kind = kind
        self.folder = folder
        self._next = 0
        self._ready: dict[int, OrderedLines] = {}
        self._lock = anyio.Lock()

    def lines_for(self, shard: int) -> OrderedLines:
        folder = self.folder / f"shard-{shard:05d}"
        folder.mkdir(mode=0o700)
        return OrderedLines(folder)

    async def merged(self, shard: int, lines: OrderedLines) -> None:
        """Shard `shard`'s merge is done: write it and any later shards it was holding back."""
        self._ready[shard] = lines
        async with self._lock:
            while self._next in self._ready:
                ready = self._ready.pop(self._next)
                try:
                    await ready.write_to(self._results, self._kind)
                finally:
                    ready.close()
                    shutil.rmtree(ready.folder, ignore_errors=True)
                self._next += 1

    def check_written(self) -> None:
        """Raise MergeError if a shard is still held back (a shard before it never merged)."""
        if self._ready:
            raise MergeError(
                f"shards {sorted(self._ready)} were merged but not written: shard {self._next} "
                "was never merged (a bug in fanout: please report)"
            )


# ---------------------------------------------------------------------------------------------
# merge_shard


@dataclass(slots=True)
class _Counts:
    objects: int = 0
    ignored_objects: int = 0
    lines: int = 0
    corrupt: int = 0
    input_lines: int = 0


async def merge_shard(
    reader: ObjectReader,
    output_prefix: str,
    kind: InputKind,
    input_parts: Sequence[str],
    sinks: MergeSinks,
    *,
    shard: int,
    options: MergeOptions | None = None,
    ordered: OrderedLines | None = None,
) -> MergeStats:
    """Merge one finished job: results and errors to `sinks`, and the reconciled counts.

    `output_prefix` is the job's output path (`s3://bucket/out/<run>/shard-00000/`);
    `input_parts` are the shard's input part files as the job read them (`s3://…` or local
    paths), read back to learn which IDs were sent. Raises MergeError if the outputs cannot be
    listed or read, or the input parts are unreadable or damaged; errors of the sinks (a
    `MergeError` for a result of another shape) pass through. With `ordered`, results go there
    (with their input positions) instead of to `sinks.results`, for the caller to write in input
    order (`OrderedLines.write_to`).
    """
    options = options or MergeOptions()
    prefix = S3Uri.parse(output_prefix, what="job output path").as_prefix()
    base = options.spill_dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="fanout-merge-", dir=base) as folder:
        sent_spill = _Spill(Path(folder), "sent", options.partitions)
        out_spill = _Spill(Path(folder), "out", options.partitions)
        try:
            return await _merge(
                reader,
                prefix,
                kind,
                input_parts,
                sinks,
                shard,
                options,
                _Shard(sent_spill, out_spill, ordered),
            )
        except InputError as exc:  # the object store could not list or read something
            raise MergeError(f"merging shard {shard}: {exc}") from exc
        finally:
            sent_spill.close()
            out_spill.close()


async def _merge(
    reader: ObjectReader,
    prefix: S3Uri,
    kind: InputKind,
    input_parts: Sequence[str],
    sinks: MergeSinks,
    shard: int,
    options: MergeOptions,
    spills: _Shard,
) -> MergeStats:
    counts = _Counts()
    sent_spill, out_spill, ordered = spills.sent, spills.out, spills.ordered
    # 1. What was sent: fingerprints in memory, IDs spilled.
    pieces: list[U64] = []
    for part in input_parts:
        source = _chunks(reader, part, options.chunk_bytes)
        number = 0  # lines read so far
        async with contextlib.aclosing(blocks(source, options.max_line_bytes)) as sent_blocks:
            async for block in sent_blocks:
                fps, lines = await anyio.to_thread.run_sync(
                    _sent_block, number, block, kind, part, sent_spill
                )
                number += lines
                pieces.append(fps)
                counts.input_lines += len(fps)
                if sent_spill.full:
                    await sent_spill.flush()
    sent, spills.positions = _sorted_unique(pieces, positions=ordered is not None)
    spills.written = np.zeros(len(sent), np.uint8)
    if ordered is not None:
        ordered.begin(counts.input_lines)

    # 2. The outputs, streamed: write each sent fingerprint's first usable line.
    async for info in reader.list_objects(prefix.bucket, prefix.key):
        if not info.key.endswith(".out"):
            counts.ignored_objects += 1
            continue
        counts.objects += 1
        uri = f"s3://{prefix.bucket}/{info.key}"
        chunks = reader.read_chunks(prefix.bucket, info.key, options.chunk_bytes)
        number = 0  # lines read so far
        async with contextlib.aclosing(blocks(chunks, options.max_line_bytes)) as out_blocks:
            async for block in out_blocks:
                routed = await anyio.to_thread.run_sync(
                    _route, number, block, kind, uri, shard, sent, spills, options
                )
                number += routed.count
                counts.lines += routed.lines
                counts.corrupt += routed.corrupt
                await _deliver(routed, sinks, kind)
                if out_spill.full:
                    await out_spill.flush()
                if ordered is not None and ordered.full:
                    await ordered.flush()
    sent_spill.close()
    out_spill.close()

    # 3. Exact reconciliation, a group of partitions at a time.
    totals = dict.fromkeys(
        ("results", "errors", "missing", "unexpected", "duplicated_in_output", "collisions"), 0
    )
    sent_ids = 0
    for group in _groups(sent_spill, out_spill, options.partitions):
        found = await anyio.to_thread.run_sync(_reconcile, sent_spill, out_spill, group)
        missing, part_counts, distinct = found
        sent_ids += distinct
        for name, value in part_counts.items():
            totals[name] += value
        if missing:
            await sinks.missing.write(b"".join(_missing_line(key) for key in missing))
    return MergeStats(
        shard=shard,
        sent=sent_ids,
        duplicated_in_input=counts.input_lines - sent_ids,
        objects=counts.objects,
        ignored_objects=counts.ignored_objects,
        lines=counts.lines,
        corrupt=counts.corrupt,
        **totals,
    )


def _sorted_unique(pieces: list[U64], *, positions: bool) -> tuple[U64, K.I64 | None]:
    """The distinct fingerprints, sorted, and (if `positions`) where each first appears among
    them all; `pieces` is emptied. Peak: ~17 bytes per fingerprint, ~33 with positions."""
    values = np.concatenate(pieces) if pieces else np.empty(0, np.uint64)
    pieces.clear()
    first: K.I64 | None = None
    if positions:
        first = np.argsort(values, kind="stable")
        values = values[first]
    else:
        values.sort()
    if len(values) < 2:
        return values, first
    keep = np.empty(len(values), np.bool_)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep], None if first is None else first[keep]


@dataclass(slots=True)
class _Shard:
    """What the merge of one shard keeps: its spills and, once the input is read, which
    fingerprints were written and (for `--order input`) where each was first sent."""

    sent: _Spill
    out: _Spill
    ordered: OrderedLines | None
    written: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    positions: K.I64 | None = None


@dataclass(slots=True)
class _Routed:
    """What a block of output lines comes to: what to write where, and counts."""

    count: int
    lines: int
    corrupt: int
    corrupt_report: bytes
    errors: bytes = b""
    records: list[OutputRecord] = field(default_factory=list)
    common: CommonLines | None = None


def _route(
    before: int,
    block: Block,
    kind: InputKind,
    uri: str,
    shard: int,
    sent: U64,
    shard_state: _Shard,
    options: MergeOptions,
) -> _Routed:
    """Parse a block of output lines, decide what is written (each sent fingerprint's first
    usable line) and spill every usable line's ID with what was done with it. On a worker
    thread; `shard_state` belongs to the one shard being merged."""
    written, spill = shard_state.written, shard_state.out
    parsed = parse_block(before, block, kind, options.max_line_bytes)
    report = b"".join(
        orjson.dumps({"shard": shard, "object": uri, "line": number, "reason": reason}) + b"\n"
        for number, reason in parsed.bad
    )
    routed = _Routed(parsed.count, parsed.lines, len(parsed.bad), report)
    common, records = parsed.common, parsed.records
    n_common = len(common)
    if not n_common and not records:
        return routed
    # Usable lines: the common ones, then the records ("source" order); `order` puts them in
    # line order, which decides which line of an ID is its first.
    record_keys = [record.key.encode() for record in records]
    id_lo, id_hi = common.id_spans()
    source_fps = np.concatenate(
        (_fingerprints(common.data, id_lo, id_hi), fingerprints_of(record_keys))
    )
    if records:
        order = np.argsort(np.concatenate((parsed.common_at, parsed.record_at)), kind="stable")
        fps = source_fps[order]
    else:  # common lines only: source order is line order
        order = np.arange(n_common)
        fps = source_fps
    tags, where = K.route(sent, written, fps, _ROUTE_TAGS)
    chosen = np.flatnonzero(tags == _RESULT)
    source_tags = np.empty_like(tags)
    source_tags[order] = tags
    failed = [i for i, record in enumerate(records) if record.error is not None]
    if failed:
        at = np.array(failed, np.int64) + n_common
        source_tags[at] = np.where(source_tags[at] == _RESULT, _ERROR, source_tags[at])
    spill.add(common.data, id_lo, id_hi, source_tags[:n_common], source_fps[:n_common])
    if records:
        quoted = [orjson.dumps(record.key) for record in records]
        spill.add(*_packed(quoted, 1), source_tags[n_common:], source_fps[n_common:])

    picked = np.sort(order[chosen])  # in line order
    common_picks = picked[picked < n_common]
    if len(common_picks):
        routed.common = common.take(common_picks)
    errors: list[bytes] = []
    for index in (picked[picked >= n_common] - n_common).tolist():
        record = records[index]
        if record.error is None:
            routed.records.append(record)
        else:
            errors.append(
                orjson.dumps({"id": record.key, "error": record.error, "shard": shard}) + b"\n"
            )
    routed.errors = b"".join(errors)
    if shard_state.ordered is not None:
        source_where = np.empty_like(where)
        source_where[order] = where
        _hold_in_order(routed, shard_state, source_where[source_tags == _RESULT])
    return routed


def _hold_in_order(routed: _Routed, shard_state: _Shard, where: npt.NDArray[np.intp]) -> None:
    """Hand the block's results to `OrderedLines` rather than to the result sink. `where`:
    each result's index in the sent fingerprints, results in `_route`'s source order (common
    lines first, then records, each in line order)."""
    assert shard_state.ordered is not None and shard_state.positions is not None
    ordered, positions = shard_state.ordered, shard_state.positions[where]
    common = routed.common
    taken = 0
    if common is not None:
        ordered.add(positions[: len(common)], common.data, common.spans)
        taken = len(common)
    if routed.records:  # kept as they are, parsed again when written (COUNT -1)
        data, lo, hi = _packed([record.raw for record in routed.records], 0)
        spans = np.full((len(lo), K.SPAN_COLUMNS), -1, np.int64)
        spans[:, K.LINE_LO], spans[:, K.LINE_HI] = lo, hi
        ordered.add(positions[taken:], data, spans)
    routed.common, routed.records = None, []


async def _deliver(routed: _Routed, sinks: MergeSinks, kind: InputKind) -> None:
    if routed.corrupt_report:
        await sinks.corrupt.write(routed.corrupt_report)
    if routed.errors:
        await sinks.errors.write(routed.errors)
    if routed.records:
        await sinks.results.write(routed.records)
    common = routed.common
    if common is not None:
        if isinstance(sinks.results, ResultFile):
            await sinks.results.write_common(common)
        else:  # a sink that takes records only
            await sinks.results.write(common.records(kind))


_GROUP_BYTES = 16 * 1024 * 1024


def _groups(sent: _Spill, out: _Spill, partitions: int) -> Iterator[list[int]]:
    """Partitions in groups of about `_GROUP_BYTES` of spilled IDs, reconciled together."""
    group: list[int] = []
    size = 0
    for part in range(partitions):
        group.append(part)
        size += sent.sizes[part] + out.sizes[part]
        if size >= _GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


_WRITTEN = np.array([_RESULT, _ERROR], np.uint8)


def _reconcile(
    sent_spill: _Spill, out_spill: _Spill, group: list[int]
) -> tuple[list[bytes], dict[str, int], int]:
    """Partitions `group`, exactly (`_mergekernels.reconcile`): (missing IDs as JSON strings,
    counts, distinct IDs sent)."""
    sent = b"".join([sent_spill.read(part) for part in group])
    out = b"".join([out_spill.read(part) for part in group])
    numbers, lo, hi = K.reconcile(
        np.frombuffer(sent, np.uint8), np.frombuffer(out, np.uint8), _WRITTEN, _FINGERPRINT_BITS
    )
    counts = dict(zip(K.RECONCILED, numbers.tolist(), strict=True))
    missing = [sent[a - 1 : b + 1] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    return missing, counts, counts.pop("sent")


def _missing_line(key: bytes) -> bytes:
    value = orjson.loads(key)
    if isinstance(value, str) and not any(ch < " " or ch == "\x7f" for ch in value):
        return value.encode() + b"\n"
    return key + b"\n"
