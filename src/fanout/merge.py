"""The merge stage: read a finished job's outputs, write results and errors, reconcile.

`merge_shard` streams every `*.out` object under a shard's output prefix (anything else, such as
`_CHECK`, is ignored), parses each line (`parse_output_line`), writes successes to a result file
(`open_results`: JSON lines, CSV or Parquet) and error lines to an errors sink, and reports lines
it cannot use (object, line number, reason) to a corrupt-lines sink. Output order is not input
order (reference §2.4), so lines are matched to what was sent by key, never by position.

Reconciliation is exact. The shard's input parts are read back to learn which IDs were sent:

1. Each sent ID gets a 64-bit fingerprint (the dedupe's hash), kept in a sorted array with a
   one-byte "written" flag: 9 bytes per sent ID (~270 MB for 30M IDs; ~17 bytes per ID for a
   moment while the array is sorted). That array decides, while
   the outputs stream, whether a line is written (first line for a sent fingerprint) or not
   (a fingerprint never sent, or one already written).
2. The IDs themselves are spilled, hash-partitioned, to `partitions` local files: the sent IDs,
   and every output line's ID with what was done with it (a small shard's spill stays in
   memory). After the outputs are read, the partitions are reconciled with exact string
   comparisons (sorted numpy byte strings), a group of ~16 MB of spilled IDs at a time. Disk use
   is about twice the bytes of the shard's IDs, in a private temporary folder removed
   afterwards.

Lines of the common shape are never turned into Python objects: `_outputs.parse_lines` keeps
them as byte ranges (`CommonLines`), which `ResultFile.write_common` writes; a result sink that
is not a `ResultFile` gets them as `OutputRecord`s.

So a fingerprint collision can never hide a missing ID: an ID counts as answered only if a line
with exactly that ID was written. A collision can at worst (probability ~n²/2⁶⁵ per shard) make
one ID's line go unwritten, and that ID is then listed as missing; or write one row whose ID was
never sent (counted in `collisions` and `unexpected`). A corrupt line's ID is unknown, so it is
counted as missing too, and missing IDs can be sent again.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO, Protocol

import aiofiles
import anyio
import numpy as np
import orjson

from ._dedupe import U64, _fingerprints_of
from ._outputs import (
    BadLine,
    CommonLines,
    LineSplitter,
    OutputRecord,
    _utf8,
    parse_lines,
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

_TAG_RESULT = b"r"  # written as a result
_TAG_ERROR = b"e"  # written as an error line
_TAG_DROPPED = b"d"  # a sent fingerprint already written: not written again
_TAG_UNSENT = b"u"  # a fingerprint never sent: not written


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


@dataclass(frozen=True, slots=True)
class MergeOptions:
    """Tuning; the defaults bound memory to ~9 bytes per sent ID, plus `chunk_bytes` and one
    line (≤ `max_line_bytes`) per object being read, plus 4 MiB of spill buffers and one group
    of spill partitions (~16 MiB of IDs) while reconciling.

    `chunk_bytes` is 1 MiB: larger reads are not faster, since each batch's temporary copies
    (lines, joined texts) then outgrow the CPU caches and glibc's mmap threshold (measured on
    2M lines: 8 MiB took 12% more CPU and twice the peak memory)."""

    chunk_bytes: int = 1024 * 1024
    max_line_bytes: int = 256 * 1024 * 1024  # a 5M-user segment line is ~60 MB
    partitions: int = 64
    spill_dir: Path | None = None  # default: the system's temporary folder

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0 or self.max_line_bytes <= 0 or not 1 <= self.partitions <= 4096:
            raise ValueError("chunk_bytes, max_line_bytes > 0 and 1 ≤ partitions ≤ 4096")


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


async def _lines(
    chunks: AsyncIterator[bytes], max_line: int
) -> AsyncIterator[tuple[int, list[bytes | None]]]:
    """The lines of a stream, a chunk's worth at a time, with the number of the first one; an
    overlong line is None."""
    splitter = LineSplitter(max_line)
    async for chunk in chunks:
        lines = splitter.feed(chunk)
        if lines:
            yield splitter.count - len(lines) + 1, lines
    last = splitter.finish()
    if last:
        yield splitter.count, last


def _sent_ids(
    first: int, lines: list[bytes | None], kind: InputKind, where: str
) -> tuple[list[bytes], list[bytes]]:
    """The IDs on a batch of input lines (blank lines skipped), UTF-8, and each as a JSON
    string; a damaged line is an error. Lines as prepare writes them (`{"userId":"…"}`, no
    escapes) are read with a slice, others with orjson."""
    field = kind.id_field
    head = b'{"' + field.encode() + b'":"'
    whole = _sent_ids_at_once(lines, head)
    if whole is not None:
        return whole
    start = len(head)
    keys: list[bytes] = []
    quoted: list[bytes] = []
    for number, line in enumerate(lines, start=first):
        if line is not None and line.startswith(head) and line.endswith(b'"}'):
            key = line[start:-2]
            if key and b'"' not in key and b"\\" not in key:
                keys.append(key)
                quoted.append(b'"' + key + b'"')
                continue
        problem = "longer than the line limit" if line is None else ""
        if line is not None:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            value = obj.get(field) if isinstance(obj, dict) else None
            if isinstance(value, str) and value:
                keys.append(value.encode())
                quoted.append(orjson.dumps(value))
                continue
            problem = f"not a JSON object with a string {field!r}"
        raise MergeError(
            f"{where}, line {number}: {problem}; the shard's input is damaged, so what "
            "was sent cannot be known: prepare the run again"
        )
    if keys and not _plain_keys(keys):  # control characters or invalid UTF-8: the slow way
        return _sent_ids_slowly(first, lines, kind, where)
    return keys, quoted


def _sent_ids_at_once(
    lines: list[bytes | None], head: bytes
) -> tuple[list[bytes], list[bytes]] | None:
    """`_sent_ids` for a batch whose every line is `{"<id field>":"…"}` without escapes,
    checked and cut with a few whole-batch calls; None for any other batch."""
    n = len(lines)
    if not n or None in lines or min(map(len, lines)) < len(head) + 3:  # type: ignore[arg-type]
        return None  # (so that a line's head and its `"}` cannot overlap)
    text = b"\n".join(lines) + b"\n"  # type: ignore[arg-type]
    if not (
        text.startswith(head)
        and text.count(b"\n" + head) == n - 1  # every line starts with the head,
        and text.count(b'"}\n') == n  # ends with `"}`,
        and text.count(b'"') == 4 * n  # and has no other quote
        and b"\\" not in text
        and len(text.translate(None, _CONTROL_BUT_LF)) == len(text)
        and _utf8(text)
    ):
        return None
    inner = text.replace(b'"}\n' + head, b"\n")[len(head) : -3]
    return inner.split(b"\n"), (b'"' + inner.replace(b"\n", b'"\n"') + b'"').split(b"\n")


def _plain_keys(keys: list[bytes]) -> bool:
    text = b"".join(keys)
    if len(text.translate(None, _CONTROL)) != len(text):
        return False
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _sent_ids_slowly(
    first: int, lines: list[bytes | None], kind: InputKind, where: str
) -> tuple[list[bytes], list[bytes]]:
    keys: list[bytes] = []
    quoted: list[bytes] = []
    for number, line in enumerate(lines, start=first):
        if line is not None and not line.strip():
            continue
        try:
            obj = orjson.loads(line) if line is not None else None
        except orjson.JSONDecodeError:
            obj = None
        value = obj.get(kind.id_field) if isinstance(obj, dict) else None
        if not isinstance(value, str) or not value:
            return _sent_ids(number, [line], kind, where)  # raises, naming the line
        keys.append(value.encode())
        quoted.append(orjson.dumps(value))
    return keys, quoted


_CONTROL = bytes(range(32))
_CONTROL_BUT_LF = _CONTROL.replace(b"\n", b"")


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

    def group(self, fps: U64, lines: list[bytes]) -> None:
        """Add `lines` (without line ends) to the buffers, by partition (call `flush` when
        `full`)."""
        if not lines:
            return
        parts = (fps % np.uint64(self._partitions)).astype(np.intp)
        order = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[order], np.arange(self._partitions + 1)).tolist()
        ordered = [lines[i] for i in order.tolist()]
        for part in range(self._partitions):
            lo, hi = bounds[part], bounds[part + 1]
            if lo < hi:
                data = b"\n".join(ordered[lo:hi]) + b"\n"
                self._buffers[part] += data
                self._pending += len(data)
                self.sizes[part] += len(data)

    @property
    def full(self) -> bool:
        return self._pending >= self._FLUSH

    async def flush(self) -> None:
        buffers = [bytes(b) for b in self._buffers]
        for b in self._buffers:
            b.clear()
        self._pending = 0
        await anyio.to_thread.run_sync(self._write, buffers)

    def _write(self, buffers: list[bytes]) -> None:
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

    def read(self, part: int) -> list[bytes]:
        """Partition `part`'s lines (without line ends); call `close` first."""
        data = b""
        if self._paths[part].exists():
            data = self._paths[part].read_bytes()
        data += self._buffers[part]
        lines = data.split(b"\n")
        lines.pop()
        return lines


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
) -> MergeStats:
    """Merge one finished job: results and errors to `sinks`, and the reconciled counts.

    `output_prefix` is the job's output path (`s3://bucket/out/<run>/shard-00000/`);
    `input_parts` are the shard's input part files as the job read them (`s3://…` or local
    paths), read back to learn which IDs were sent. Raises MergeError if the outputs cannot be
    listed or read, or the input parts are unreadable or damaged; errors of the sinks (a
    `MergeError` for a result of another shape) pass through.
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
                reader, prefix, kind, input_parts, sinks, shard, options, sent_spill, out_spill
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
    sent_spill: _Spill,
    out_spill: _Spill,
) -> MergeStats:
    counts = _Counts()
    # 1. What was sent: fingerprints in memory, IDs spilled.
    pieces: list[U64] = []
    for part in input_parts:
        source = _chunks(reader, part, options.chunk_bytes)
        async for start, batch in _lines(source, options.max_line_bytes):
            keys, quoted = await anyio.to_thread.run_sync(_sent_ids, start, batch, kind, part)
            fps = _fingerprints_of(keys)
            pieces.append(fps)
            counts.input_lines += len(keys)
            sent_spill.group(fps, quoted)
            if sent_spill.full:
                await sent_spill.flush()
    sent = _sorted_unique(pieces)
    written = np.zeros(len(sent), np.uint8)

    # 2. The outputs, streamed: write each sent fingerprint's first usable line.
    async for info in reader.list_objects(prefix.bucket, prefix.key):
        if not info.key.endswith(".out"):
            counts.ignored_objects += 1
            continue
        counts.objects += 1
        uri = f"s3://{prefix.bucket}/{info.key}"
        chunks = reader.read_chunks(prefix.bucket, info.key, options.chunk_bytes)
        async for first, lines in _lines(chunks, options.max_line_bytes):
            routed = await anyio.to_thread.run_sync(
                _route, first, lines, kind, uri, shard, sent, written, out_spill
            )
            counts.lines += routed.lines
            counts.corrupt += routed.corrupt
            await _deliver(routed, sinks, kind)
            if out_spill.full:
                await out_spill.flush()
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


def _sorted_unique(pieces: list[U64]) -> U64:
    """The distinct fingerprints, sorted; `pieces` is emptied (peak: ~17 bytes per fingerprint)."""
    if not pieces:
        return np.empty(0, np.uint64)
    values = np.concatenate(pieces)
    pieces.clear()
    values.sort()
    if len(values) < 2:
        return values
    keep = np.empty(len(values), np.bool_)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


_TAGS = {ord(tag): tag for tag in (_TAG_RESULT, _TAG_ERROR, _TAG_DROPPED, _TAG_UNSENT)}


@dataclass(slots=True)
class _Routed:
    """What a batch of output lines comes to: what to write where, and counts."""

    lines: int
    corrupt: int
    corrupt_report: bytes
    errors: bytes
    records: list[OutputRecord]
    common: list[CommonLines]


def _route(
    first: int,
    lines: list[bytes | None],
    kind: InputKind,
    uri: str,
    shard: int,
    sent: U64,
    written: np.ndarray[tuple[int], np.dtype[np.uint8]],
    spill: _Spill,
) -> _Routed:
    """Parse a batch of output lines, decide what is written (each sent fingerprint's first
    usable line) and spill every usable line's ID with what was done with it. On a worker
    thread; `written` and `spill` belong to the one shard being merged."""
    parsed = parse_lines(first, lines, kind)
    report = b"".join(
        orjson.dumps({"shard": shard, "object": uri, "line": number, "reason": reason}) + b"\n"
        for number, reason in parsed.bad
    )
    routed = _Routed(parsed.lines, len(parsed.bad), report, b"", [], [])
    keys = parsed.keys
    if not keys:
        return routed
    fps = _fingerprints_of(keys)
    where = np.searchsorted(sent, fps)
    inside = where < len(sent)
    hit = np.zeros(len(fps), np.bool_)
    hit[inside] = sent[where[inside]] == fps[inside]
    fresh = hit.copy()
    fresh[hit] = written[where[hit]] == 0
    candidates = np.flatnonzero(fresh)
    _, first_seen = np.unique(where[candidates], return_index=True)
    chosen = np.sort(candidates[first_seen])  # in line order
    written[where[chosen]] = 1
    tags = np.full(len(keys), ord(_TAG_DROPPED), np.uint8)
    tags[~hit] = ord(_TAG_UNSENT)
    tags[chosen] = ord(_TAG_RESULT)
    failed = [
        at
        for at, index in zip(parsed.record_at, parsed.index[parsed.record_at].tolist(), strict=True)
        if parsed.records[index].error is not None
    ]
    if failed:
        is_error = np.zeros(len(keys), np.bool_)
        is_error[failed] = True
        tags[chosen[is_error[chosen]]] = ord(_TAG_ERROR)
    tag_list = tags.tolist()
    spilled = [_TAGS[tag] + b'"' + key + b'"' for tag, key in zip(tag_list, keys, strict=True)]
    for at, index in zip(parsed.record_at, parsed.index[parsed.record_at].tolist(), strict=True):
        key = parsed.records[index].key
        spilled[at] = _TAGS[tag_list[at]] + orjson.dumps(key)
    spill.group(fps, spilled)

    group = parsed.group[chosen]
    picks = [parsed.index[chosen[group == g]].tolist() for g in (0, 1)]
    errors: list[bytes] = []
    for index in parsed.index[chosen[group == 2]].tolist():
        record = parsed.records[index]
        if record.error is None:
            routed.records.append(record)
        else:
            errors.append(
                orjson.dumps({"id": record.key, "error": record.error, "shard": shard}) + b"\n"
            )
    routed.errors = b"".join(errors)
    routed.common = [
        common.take(pick) for common, pick in zip(parsed.common, picks, strict=True) if pick
    ]
    return routed


async def _deliver(routed: _Routed, sinks: MergeSinks, kind: InputKind) -> None:
    if routed.corrupt_report:
        await sinks.corrupt.write(routed.corrupt_report)
    if routed.errors:
        await sinks.errors.write(routed.errors)
    if routed.records:
        await sinks.results.write(routed.records)
    for common in routed.common:
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


_COUNT_NAMES = ("results", "errors", "missing", "unexpected", "duplicated_in_output", "collisions")


def _reconcile(
    sent_spill: _Spill, out_spill: _Spill, group: list[int]
) -> tuple[list[bytes], dict[str, int], int]:
    """Partitions `group`, exactly: (missing IDs as JSON strings, counts, distinct IDs sent).

    IDs are compared as strings (numpy byte strings, sorted): an output line counts for a sent
    ID only if its ID is exactly that one."""
    sent_lines = [line for part in group for line in sent_spill.read(part)]
    out_lines = [line for part in group for line in out_spill.read(part)]
    if not _fits_fixed_width(sent_lines) or not _fits_fixed_width(out_lines):
        return _reconcile_by_dict(sent_lines, out_lines)
    counts = dict.fromkeys(_COUNT_NAMES, 0)
    sent = np.unique(np.array(sent_lines, np.bytes_)) if sent_lines else np.empty(0, "S1")
    if out_lines:
        tags = np.frombuffer(b"".join([line[:1] for line in out_lines]), np.uint8)
        keys = np.array([line[1:] for line in out_lines], np.bytes_)
    else:
        tags, keys = np.empty(0, np.uint8), np.empty(0, "S1")
    if len(sent):
        pos = np.minimum(np.searchsorted(sent, keys), len(sent) - 1)
        found = sent[pos] == keys
    else:
        pos, found = np.zeros(len(keys), np.intp), np.zeros(len(keys), np.bool_)
    is_written = (tags == ord(_TAG_RESULT)) | (tags == ord(_TAG_ERROR))
    counts["unexpected"] = int(np.count_nonzero(~found))
    collisions = int(np.count_nonzero(~found & is_written))
    at = pos[found]
    lines_per_id = np.bincount(at, minlength=len(sent))
    has_result = np.zeros(len(sent), np.bool_)
    has_result[pos[found & (tags == ord(_TAG_RESULT))]] = True
    has_error = np.zeros(len(sent), np.bool_)
    has_error[pos[found & (tags == ord(_TAG_ERROR))]] = True
    has_error &= ~has_result
    missing = ~(has_result | has_error)
    counts["results"] = int(np.count_nonzero(has_result))
    counts["errors"] = int(np.count_nonzero(has_error))
    counts["missing"] = int(np.count_nonzero(missing))
    # lines with a missing ID were left unwritten because of a collision
    counts["collisions"] = collisions + int(np.count_nonzero(missing & (lines_per_id > 0)))
    counts["duplicated_in_output"] = int(np.maximum(lines_per_id - 1, 0).sum())
    return sent[missing].tolist(), counts, len(sent)


def _fits_fixed_width(lines: list[bytes]) -> bool:
    """Whether `lines` as a fixed-width numpy array (every entry as long as the longest) takes
    at most 4 times their bytes: not so when a few IDs are much longer than the rest."""
    if not lines:
        return True
    return max(map(len, lines)) * len(lines) <= 4 * sum(map(len, lines)) + 4096


def _reconcile_by_dict(
    sent_lines: list[bytes], out_lines: list[bytes]
) -> tuple[list[bytes], dict[str, int], int]:
    """`_reconcile` with Python dicts: slower, for IDs of very unequal lengths."""
    sent: dict[bytes, int] = {}
    for key in sent_lines:
        sent[key] = sent.get(key, 0) + 1
    seen: dict[bytes, bytes] = {}  # key -> the tags of its output lines
    counts = dict.fromkeys(_COUNT_NAMES, 0)
    for line in out_lines:
        tag, key = line[:1], line[1:]
        if key not in sent:
            counts["unexpected"] += 1
            if tag in (_TAG_RESULT, _TAG_ERROR):
                counts["collisions"] += 1
            continue
        seen[key] = seen.get(key, b"") + tag
    missing: list[bytes] = []
    for key in sent:
        tags = seen.get(key, b"")
        if _TAG_RESULT in tags:
            counts["results"] += 1
        elif _TAG_ERROR in tags:
            counts["errors"] += 1
        else:
            counts["missing"] += 1
            missing.append(key)
            if tags:  # lines with this ID were left unwritten because of a collision
                counts["collisions"] += 1
        counts["duplicated_in_output"] += max(len(tags) - 1, 0)
    return missing, counts, len(sent)


def _missing_line(key: bytes) -> bytes:
    value = orjson.loads(key)
    if isinstance(value, str) and not any(ch < " " or ch == "\x7f" for ch in value):
        return value.encode() + b"\n"
    return key + b"\n"
