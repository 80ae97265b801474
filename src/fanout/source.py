"""The source stage: one input (a file, stdin or S3 objects) as a stream of encoded input records.

`open_input` turns a spec (`path`, `-`, `s3://bucket/key`, `s3://bucket/prefix/`) into
`InputFile`s; `Source` reads them in order and yields `RecordBatch`es of JSON lines ready to be
uploaded as Personalize batch input. Every input line is accounted for in `Source.stats`:

    lines == blank + records + duplicates + rejected_total

Blank lines are counted and skipped, invalid lines go to the rejects sink (with file, line number,
reason and the raw line), later occurrences of an ID go to the duplicates sink. Nothing is dropped
silently and memory stays flat: input is cut into pieces of about `chunk_bytes` at line ends, and
a few pieces are alive at once, each stage in a thread so that uploads proceed meanwhile. A local
file of text, CSV or JSON lines (or a folder of nothing else) is read, encoded and deduplicated on
three long-lived threads joined by queues of one piece (`Source._threads`: three pieces read, two
encoded); any other input (stdin, a pipe, S3, gzip, Parquet, a folder holding any of those) goes
in lockstep, one worker-thread hop per stage and piece (three pieces alive).

This module reads, cuts and orchestrates; the work on a piece is elsewhere: `_formats` (detecting
the format, parsing each one: stage 1), `_encode` (validating IDs, encoding records, one C pass
per piece) and `_dedupe` (fingerprints and the set of IDs sent: stage 2).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import stat
import sys
import tempfile
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, TypeVar, get_args

import anyio
import anyio.to_thread
import orjson

from . import _native
from ._dedupe import _FingerprintSet
from ._encode import _true_runs
from ._formats import (
    _GZIP_MAGIC,
    _PARQUET_MAGIC,
    _check_parquet,
    _declared_format,
    _Encoded,
    _Encoder,
    _FileFormat,
    _Gunzip,
    _ParquetColumn,
    _Piece,
)
from ._relay import END, Relay
from .errors import ConfigError, InputError
from .records import MAX_ITEM_LIST, InputKind, RecordBatch, RejectReason
from .storage import ObjectInfo, ObjectReader, S3Uri

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._dedupe import I64, Bools

__all__ = [
    "InputFile",
    "LineSink",
    "S3Objects",
    "Source",
    "SourceOptions",
    "SourceStats",
    "directory_files",
    "hidden",
    "open_input",
    "s3_objects",
]

Format = Literal["auto", "text", "csv", "tsv", "jsonl", "parquet"]

_FORMATS: tuple[str, ...] = get_args(Format)
_DEFAULT_CHUNK = 4 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# Byte-order marks of text that is not UTF-8 (UTF-32's first: its little-endian mark starts with
# UTF-16's). Such a file, say a spreadsheet's "Unicode text" export, would be all rejects.
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
# Compressions other than gzip (which is read): their magic bytes, and the command that
# decompresses such a file to stdout. Read as text, every line would be a reject.
_OTHER_COMPRESSIONS = (
    (re.compile(rb"BZh[1-9]1AY&SY"), "bzip2", "bzip2 -dc"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz", "xz -dc"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "zstd -dc"),
    (re.compile(rb"PK\x03\x04"), "zip", "unzip -p"),
)
# A file's first bytes are held until they hold an LF or this many are in (or the file ends), to
# see its byte-order mark and how its lines end.
_START_BYTES = 64 * 1024
_RAW_CHARS = 1000  # the `raw` field of a reject is cut to this many characters
# A line longer than this is rejected without being held in memory (no ID is anywhere near it).
_MAX_LINE_BYTES = 16 * 1024 * 1024
_QUOTED_SPAN = 1024 * 1024  # how far past its size a CSV piece may run to close a quote
# How far past `chunk_bytes` a local file's chunk may run to end at a line end.
_PROBE_BYTES = 64 * 1024

_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Public values


class LineSink(Protocol):
    """Where rejected or duplicate lines go (a file, S3 object, list in a test)."""

    async def write(self, data: bytes) -> None:
        """Append `data`: whole lines, each ending in `\\n`."""
        ...


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to read the input and what to make of it.

    `format="auto"` picks the format by file name (after removing `.gz`): `.csv`, `.tsv`/`.tab`,
    `.jsonl`/`.ndjson`/`.json`, `.parquet`/`.pq`, `.txt`/`.text`; any other name, and stdin, is
    sniffed: Parquet magic bytes, else a first non-blank line starting with `{` means JSON lines,
    else text (one ID per line; a first line naming the ID column is a header, for `.txt` too).
    `filter_values` (from `--filter-values NAME=v1,v2`) is added to
    every record. `chunk_bytes` is the size of the pieces the input is cut into: each
    `RecordBatch` holds the records of about that much input, and the source holds about three
    pieces in memory.
    """

    format: Format = "auto"
    id_column: str | None = None
    kind: InputKind = InputKind.USER
    dedupe: bool = True
    filter_values: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_id_length: int = 256
    max_item_list: int = MAX_ITEM_LIST
    chunk_bytes: int = _DEFAULT_CHUNK
    # The run's filter's placeholder names, `()` for a run without a filter, None if not known
    # (plan, prepare): a JSON line's own filterValues name one of them, or it is rejected.
    placeholders: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.format not in _FORMATS:
            raise ConfigError(
                f"unknown input format {self.format!r}: use one of {', '.join(_FORMATS)}"
            )
        if self.max_id_length < 1:
            raise ConfigError(f"max_id_length must be at least 1, not {self.max_id_length}")
        if self.max_item_list < 1:
            raise ConfigError(
                f"--max-item-list must be at least 1, not {self.max_item_list}: it is the "
                "longest itemList a personalized-ranking line may have"
            )
        _check_chunk_bytes(self.chunk_bytes)
        for name, values in self.filter_values.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(
                    f"filter value name {name!r} must be a non-empty string: "
                    "use --filter-values NAME=v1,v2"
                )
            if (
                isinstance(values, str | bytes)
                or not values
                or not all(isinstance(value, str) for value in values)
            ):
                raise ConfigError(
                    f"filter value {name!r} needs a list of one or more strings, not {values!r}: "
                    f"use --filter-values {name}=v1,v2"
                )
        if self.kind is InputKind.RANKING and not self.dedupe:
            raise ConfigError(
                "personalized ranking with --keep-duplicates: results are matched to their "
                "lines by userId, so of two lines of one user only one ranking could be kept; "
                "a run ranks one itemList per user (later lines of a user are listed in "
                "duplicates.txt): leave out --keep-duplicates, and rank other lists in another run"
            )
        if self.kind is InputKind.RANKING and self.format not in ("auto", "jsonl"):
            raise ConfigError(
                f"personalized ranking input needs an itemList per user, which only JSON lines "
                f"carry; format {self.format!r} cannot: give a .jsonl file or --format jsonl"
            )


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file as stored: `chunks` are its raw bytes (maybe gzip).

    `path` is set for local files only, so that Parquet is read in place instead of spooled.
    """

    name: str  # path, "<stdin>" or "s3://bucket/key": used in rejects and errors
    chunks: AsyncIterator[bytes]
    size: int | None  # stored size, if known
    path: str | None = None
    input_size: int | None = None  # a folder's files: all of their stored sizes together
    sample: bool = False  # cut short on purpose (a plan's sample): a gzip may end mid-member


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What the source has read so far; the invariant below holds in every snapshot.

    `lines` counts input lines, except CSV/TSV header rows; a CSV row whose quoted field spans
    several lines counts once, and for Parquet it counts rows.
    """

    files: int
    lines: int
    blank: int
    records: int
    duplicates: int
    rejected: Mapping[RejectReason, int]
    bytes_in: int  # bytes as stored (compressed)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


# ---------------------------------------------------------------------------------------------
# open_input


async def open_input(
    spec: str, store: ObjectReader | None = None, *, chunk_bytes: int = _DEFAULT_CHUNK
) -> AsyncIterator[InputFile]:
    """The input files of `spec`, in order.

    `spec` is a local file, a local directory (every file under it, as `directory_files` says),
    `-` (stdin, read as binary in a worker thread), `s3://bucket/key` (one object) or
    `s3://bucket/prefix/` (every object under the prefix in key order, skipping folder markers
    and `hidden` ones; none at all is an `InputError`). Each file's bytes come in chunks of
    `chunk_bytes`.
    """
    _check_chunk_bytes(chunk_bytes)
    if spec == "-":
        yield InputFile("<stdin>", _stdin_chunks(chunk_bytes), None)
        return
    if spec.startswith("s3://"):
        async for one in _s3_inputs(spec, store, chunk_bytes):
            yield one
        return
    try:
        info = await anyio.to_thread.run_sync(os.stat, spec)
    except FileNotFoundError:
        raise InputError(f"input file {spec} does not exist: check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read input file {spec}: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        found, _ = await anyio.to_thread.run_sync(directory_files, spec)
        total = sum(size for _, size in found)
        for path, size in found:
            yield InputFile(path, _file_chunks(path, chunk_bytes), size, path, total)
        return
    if not stat.S_ISREG(info.st_mode):  # a named pipe, `<(zcat ids.gz)`: read once, in order
        yield InputFile(spec, _pipe_chunks(spec, chunk_bytes), None)
        return
    yield InputFile(spec, _file_chunks(spec, chunk_bytes), info.st_size, path=spec)


def _check_chunk_bytes(chunk_bytes: int) -> None:
    if chunk_bytes < 1:
        raise ConfigError(f"chunk_bytes must be at least 1, not {chunk_bytes}")


async def _file_chunks(path: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    """`_line_chunks`, each read in a worker thread."""
    chunks = _line_chunks(path, chunk_bytes)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()


def _line_chunks(path: str, chunk_bytes: int) -> Generator[bytes, None, None]:
    """The file's bytes, each chunk ending at a line end where one is near (`_line_chunk`);
    InputError at the end if the file changed while it was read (`_check_unchanged`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            before = os.fstat(fd)
            at = 0
            while chunk := _line_chunk(fd, at, chunk_bytes):
                at += len(chunk)
                yield chunk
            _check_unchanged(path, before, os.fstat(fd), at)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror or exc}") from exc


def _check_unchanged(path: str, before: os.stat_result, after: os.stat_result, read: int) -> None:
    """Raise InputError if the regular file at `path` was cut short, grown or rewritten while
    it was read (`read` bytes): its IDs would be lost, or a half line sent as one, without a
    word (helper-34: an export rewritten mid-run, exit 0 with 1.4M users missing)."""
    if not stat.S_ISREG(before.st_mode):
        return
    written = after.st_mtime_ns != before.st_mtime_ns
    if read == before.st_size == after.st_size and not written:
        return
    raise InputError(
        f"input file {path} changed while it was read ({before.st_size:,} bytes when it was "
        f"opened, {read:,} read, {after.st_size:,} now"
        + (", written meanwhile" if written else "")
        + "): a run reads its input whole, once; let whatever writes it finish, then prepare "
        "it as a new run (another --run-id), or, once the file is back as it was, resume this one"
    )


def _is_parquet(fmt: str | None, head: bytes) -> bool:
    """Whether a file declared `fmt` (None: undeclared) that starts with `head` is Parquet."""
    return fmt == "parquet" or (fmt is None and head.startswith(_PARQUET_MAGIC))


def _gzipped(path: str) -> bool:
    try:
        return _head(path).startswith(_GZIP_MAGIC)
    except OSError:
        return False


def _head(path: str) -> bytes:
    """The first 4 bytes of the file at `path` (enough for the gzip and Parquet magic)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 4, 0)
    finally:
        os.close(fd)


def _line_chunk(fd: int, at: int, size: int) -> bytes:
    """The bytes of `fd` from `at` up to the first line end at or after `size` of them.

    A chunk that ends that way is a whole piece to the cutter, which passes it on as it is; any
    other (no line end in the next `_PROBE_BYTES`, gzip, end of file) is cut there as usual.
    Peeking ahead costs a small read; copying the piece would cost a large one.
    """
    ahead = os.pread(fd, _PROBE_BYTES, at + size - 1)
    end = ahead.find(b"\n")
    want = size + end if end >= 0 else size
    data = os.pread(fd, want, at)
    while 0 < len(data) < want:  # a short read: the rest, unless at the end of the file
        more = os.pread(fd, want - len(data), at + len(data))
        if not more:
            break
        data += more
    return data


async def _pipe_chunks(path: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    """A pipe's bytes as they come, up to `chunk_bytes` at a time (it cannot be read at an
    offset, as `_file_chunks` does a file)."""
    try:
        pipe = _Pipe(await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY))
        try:
            while chunk := await anyio.to_thread.run_sync(
                pipe.read, chunk_bytes, abandon_on_cancel=True
            ):
                yield chunk
        finally:
            pipe.close()
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror or exc}") from exc


class _Pipe:
    """A pipe's file descriptor, read on worker threads that a cancelled caller abandons: it is
    closed by whichever comes last, `close` or the read in flight, so that an abandoned read
    never reads from another file that was given the same number meanwhile."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()  # guards both flags
        self._reading = False
        self._closed = threading.Event()  # (set by another thread while a read is in flight)

    def read(self, size: int) -> bytes:
        with self._lock:
            if self._closed.is_set():
                return b""
            self._reading = True
        try:
            return os.read(self._fd, size)
        finally:
            with self._lock:
                self._reading = False
                if self._closed.is_set():
                    os.close(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            if not self._reading:
                os.close(self._fd)


async def _stdin_chunks(chunk_bytes: int) -> AsyncIterator[bytes]:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise InputError("stdin is not available as a byte stream: give a file path instead of -")
    while True:
        chunk: bytes = await anyio.to_thread.run_sync(
            stream.read, chunk_bytes, abandon_on_cancel=True
        )
        if not chunk:
            return
        yield chunk


async def _s3_inputs(
    spec: str, store: ObjectReader | None, chunk_bytes: int
) -> AsyncIterator[InputFile]:
    if store is None:
        raise ConfigError(f"input {spec} is on S3 but no object store was given to read it with")
    found = await s3_objects(spec, store)
    total = sum(info.size for info in found.objects)
    for info in found.objects:
        name = f"s3://{found.uri.bucket}/{info.key}" if found.folder else spec
        chunks = store.read_chunks(found.uri.bucket, info.key, chunk_bytes)
        yield InputFile(name, chunks, info.size, input_size=total)


@dataclass(frozen=True, slots=True)
class S3Objects:
    """The objects an S3 input is: one object, or those under a prefix (`folder`) in key order,
    without folder markers and without the `hidden` ones, which `left` names."""

    uri: S3Uri
    objects: list[ObjectInfo]
    folder: bool
    left: tuple[str, ...] = ()


async def s3_objects(spec: str, store: ObjectReader) -> S3Objects:
    """The objects of the S3 input `spec` (`s3://bucket/key`, or `s3://bucket/prefix/`). None at
    all is an `InputError` saying what to check."""
    uri = S3Uri.parse(spec, what="input")
    listed = [info async for info in store.list_objects(uri.bucket, uri.key)]
    if not uri.key or uri.key.endswith("/"):
        kept: list[ObjectInfo] = []
        left: list[str] = []
        for info in listed:
            if info.key.endswith("/"):  # a folder marker: not an object to read or to name
                continue
            if hidden(info.key[len(uri.key) :]):
                left.append(f"s3://{uri.bucket}/{info.key}")
            else:
                kept.append(info)
        if not kept:
            also = f" but {len(left)} left out (names starting with _ or .)" if left else ""
            raise InputError(f"no objects under {spec}{also}: check the bucket and prefix")
        return S3Objects(uri, kept, True, tuple(left))
    one = [info for info in listed if info.key == uri.key]
    if not one:
        under_folder = any(info.key.startswith(uri.key + "/") for info in listed)
        hint = f"; to read the objects under it, use {spec}/" if under_folder else ""
        raise InputError(f"no object {spec}: check the bucket and key{hint}")
    return S3Objects(uri, one, False)


def directory_files(root: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The files under the local directory `root` that are input, as (path, size) in the order
    of their paths below it (as S3 lists a prefix's keys); and the `hidden` ones left out (a
    hidden folder once, not walked). Symbolic links to files count; to folders, they are not
    followed. No file at all is an `InputError`."""
    found: list[tuple[str, str, int]] = []
    left: list[str] = []
    try:
        for folder, folders, names in os.walk(root, onerror=_raise):
            below = os.path.relpath(folder, root)
            prefix = "" if below == "." else below.replace(os.sep, "/") + "/"
            for name in sorted(folders):
                if hidden(name):
                    left.append(os.path.join(folder, name) + os.sep)
                    folders.remove(name)
            for name in names:
                path = os.path.join(folder, name)
                if hidden(name):
                    left.append(path)
                elif stat.S_ISREG((info := _stat_input(path)).st_mode):
                    found.append((prefix + name, path, info.st_size))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read the input directory {root}: {exc}") from exc
    if not found:
        raise InputError(
            f"no files under the input directory {root}"
            + (f" but {len(left)} left out (names starting with _ or .)" if left else "")
        )
    return [(path, size) for _, path, size in sorted(found)], sorted(left)


def _stat_input(path: str) -> os.stat_result:
    """`os.stat(path)`, a symbolic link to nothing named as one (not a bare `[Errno 2]`)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        raise InputError(
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: fix or "
            "remove the link, or rename it to start with _ or . to leave it out"
        ) from None


def _raise(exc: OSError) -> None:
    raise exc


def hidden(key: str) -> bool:
    """Whether an object under an input prefix, at `key` below it, is left out: a folder or name
    in its path starts with `_` or `.`, as Spark, Hadoop and Arrow datasets have it (`_SUCCESS`,
    `_committed_…`, `_temporary/`, `.crc` files): markers and leftovers, not data."""
    return any(part.startswith(("_", ".")) for part in key.split("/"))


# ---------------------------------------------------------------------------------------------
# Stage 2: dedupe, and the lines for the sinks (sequential, in a worker thread)


@dataclass(slots=True)
class _Outcome:
    batch: RecordBatch | None
    rows: int
    blank: int
    duplicates: int
    rejected: dict[RejectReason, int]
    reject_lines: bytes
    duplicate_lines: bytes


def _starts(ends: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each record starts, from where each ends (the first at 0)."""
    import numpy as np

    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    return starts


def _select(
    data: bytes | memoryview, ends: npt.NDArray[np.int64], keep: Bools
) -> tuple[bytes, I64]:
    """The records of `data` where `keep` is True."""
    import numpy as np

    starts = _starts(ends)
    first, last = _true_runs(keep)
    view = memoryview(data)
    kept = b"".join(
        view[lo:hi] for lo, hi in zip(starts[first].tolist(), ends[last].tolist(), strict=True)
    )
    return kept, np.cumsum((ends - starts)[keep])


def _finish(enc: _Encoded, base: int, seen: _FingerprintSet | None, id_field: str) -> _Outcome:
    """Drop the records seen before, and render the rejects and duplicates lines."""
    name = enc.piece.name
    data, ends = enc.data, enc.ends
    dup_lines = b""
    duplicates = 0
    if seen is not None and len(ends):
        if enc.piece.scale:  # size the set for the whole input at once
            seen.reserve(int(enc.rows * enc.piece.scale))
        found = seen.add(enc.fps)
        if found is not None:  # numpy only now: most pieces have no duplicate
            import numpy as np

            dup = np.frombuffer(found, np.bool_)
            dup_idx = np.flatnonzero(dup)
            duplicates = len(dup_idx)
            all_ends = np.asarray(ends, np.int64)
            starts = _starts(all_ends)
            lines = dup_idx if enc.rec_lines is None else np.asarray(enc.rec_lines)[dup_idx]
            origin = name.encode()
            if enc.id_span is not None:  # the ID is the record's middle: one C pass lists them
                dup_lines = _native.listed(
                    data,
                    np.ascontiguousarray(starts[dup_idx]),
                    np.ascontiguousarray(all_ends[dup_idx]),
                    *enc.id_span,
                    np.ascontiguousarray(lines + (base + 1), np.int64),
                    b"\t" + origin + b":",
                )
            else:
                out: list[bytes] = []
                for lo, hi, line in zip(
                    starts[dup_idx].tolist(), all_ends[dup_idx].tolist(), lines.tolist(),
                    strict=True,
                ):  # fmt: skip
                    value = orjson.dumps(orjson.loads(data[lo:hi])[id_field])
                    out.append(b"%s\t%s:%d\n" % (value, origin, base + line + 1))
                dup_lines = b"".join(out)
            data, ends = _select(data, all_ends, ~dup)
    rejected: dict[RejectReason, int] = {}
    reject_out: list[bytes] = []
    for line, reason, detail, raw in enc.rejects:
        rejected[reason] = rejected.get(reason, 0) + 1
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
        text = text.removesuffix("\r")  # a CRLF line's end, not its content
        entry = {
            "source": name,
            "line": base + line + 1,
            "reason": reason.value,
            "detail": detail,
            "raw": text[:_RAW_CHARS],
        }
        if len(text) > _RAW_CHARS:  # cut: how long it was
            entry["raw_chars"] = len(text)
        reject_out.append(orjson.dumps(entry) + b"\n")
    batch = RecordBatch(data, ends) if len(ends) else None
    return _Outcome(
        batch, enc.rows, enc.blank, duplicates, rejected, b"".join(reject_out), dup_lines
    )


# ---------------------------------------------------------------------------------------------
# Cutting into pieces


@dataclass(frozen=True, slots=True)
class _LongLine:
    head: bytes


class _Cutter:
    """Cuts decoded bytes into pieces of at least `size` bytes at line ends.

    For CSV (`quotes`), only where the number of double quotes since the piece start is even, so
    that a quoted field spanning lines stays in one piece, unless that would make the piece more
    than `_QUOTED_SPAN` longer: a quote left open that long is a stray one (the csv module takes
    no field over 128 KiB), and `_Encoder._csv` rejects its line and reads on from the next.
    Strips a UTF-8 BOM at the start, and refuses the file `name` if it starts with a UTF-16 or
    UTF-32 one. Lines end in LF or CRLF; in
    a file whose first `_START_BYTES` hold a CR but no LF (classic Mac line ends, as Excel for
    Mac's "CSV (Macintosh)" writes) every CR ends a line. A line longer than `_MAX_LINE_BYTES`
    becomes a `_LongLine` and the rest of it is skipped.
    """

    def __init__(self, size: int, quotes: bool, name: str) -> None:
        self._name = name
        self._size = size
        self._quotes = quotes
        self._parts: list[bytes] = []  # bytes after the last cut
        self._held = 0
        self._held_quotes = 0
        self._starting = True  # the file's first bytes are not cut yet (`_start`)
        self._cr = False  # lines end in a lone CR
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | _LongLine]:
        if self._starting:
            if b"\n" not in data and self._held + len(data) < _START_BYTES:
                self._keep(data)
                return []
            data = self._start(self._take(data))
        elif self._cr:
            data = data.replace(b"\r", b"\n")
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return []
            data = data[end + 1 :]
            self._skipping = False
        out: list[bytes | _LongLine] = []
        at = 0
        while True:
            start = at + max(self._size - self._held, 1) - 1
            end = data.find(b"\n", start) if start < len(data) else -1
            if end >= 0 and self._quotes:
                quotes = self._held_quotes + data.count(b'"', at, end)
                # An odd quote this far back is a stray one: cut anyway (see the docstring).
                most = at + self._size + _QUOTED_SPAN - self._held
                while quotes % 2 and 0 <= end < most:
                    following = data.find(b"\n", end + 1)
                    if following >= 0:
                        quotes += data.count(b'"', end, following)
                    end = following
            if end < 0:
                break
            if self._parts:
                out.append(self._take(memoryview(data)[at : end + 1]))
            else:
                out.append(data if at == 0 and end + 1 == len(data) else data[at : end + 1])
            at = end + 1
        if at < len(data):
            self._keep(data[at:] if at else data)
        if self._held > _MAX_LINE_BYTES:
            out.extend(self._overflow())
        return out

    def finish(self) -> list[bytes | _LongLine]:
        if not self._parts:
            return []
        rest = self._take()
        if self._starting:
            rest = self._start(rest)
        if not rest:
            return []
        return [rest if len(rest) <= _MAX_LINE_BYTES else _LongLine(rest[:4096])]

    def _start(self, data: bytes) -> bytes:
        """The file's first bytes, to be cut: without a UTF-8 BOM, and with LF for each CR if
        lines end in CR alone. An error if they start with another BOM."""
        self._starting = False
        for bom, encoding in _OTHER_BOMS:
            if data.startswith(bom):
                convert = f"iconv -f {encoding} -t UTF-8"
                example = (
                    f"zcat FILE | {convert} | gzip > FILE.utf8.gz"
                    if self._name.endswith(".gz")
                    else f"{convert} FILE > FILE.utf8"
                )
                raise InputError(
                    f"{self._name} is {encoding} text (it starts with the byte-order mark "
                    f"{bom.hex(' ').upper()}); fanout reads UTF-8: convert it first, e.g. "
                    f"{example}"
                )
        for magic, name, command in _OTHER_COMPRESSIONS:
            if magic.match(data):
                raise InputError(
                    f"{self._name} is compressed with {name}, which fanout does not read (it "
                    f"reads gzip): decompress it into fanout's standard input (`{command} FILE | "
                    "fanout …` with `-` as the input: `--ids -`, `--items -`), or compress it "
                    "with gzip"
                )
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        head = data[:_START_BYTES]
        sample = head[:4096]
        if len(sample) >= 8 and sample.count(0) * 4 > len(sample):
            raise InputError(
                f"{self._name} is not UTF-8 text: {sample.count(0):,} of its first "
                f"{len(sample):,} bytes are NUL (UTF-16 text without a byte-order mark, or a "
                "binary file?); fanout reads UTF-8: convert it first, e.g. "
                "iconv -f UTF-16LE -t UTF-8 FILE > FILE.utf8"
            )
        self._cr = b"\n" not in head and 0 <= head.find(b"\r") < len(data) - 1
        return data.replace(b"\r", b"\n") if self._cr else data

    def _keep(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)
        if self._quotes:
            self._held_quotes += data.count(b'"')

    def _take(self, tail: bytes | memoryview = b"") -> bytes:
        """All that is held since the last cut, then `tail`; nothing is held after."""
        taken = b"".join((*self._parts, tail))
        self._parts, self._held, self._held_quotes = [], 0, 0
        return taken

    def _overflow(self) -> list[bytes | _LongLine]:
        """Too much held without a cut: cut at the last line end anyway (an unbalanced quote in
        CSV), and give up on a line longer than `_MAX_LINE_BYTES`."""
        rest = self._take()
        out: list[bytes | _LongLine] = []
        end = rest.rfind(b"\n")
        if end >= 0:
            out.append(rest[: end + 1])
            rest = rest[end + 1 :]
        if len(rest) > _MAX_LINE_BYTES:
            out.append(_LongLine(rest[:4096]))
            self._skipping = True
        elif rest:
            self._keep(rest)
        return out


def _pieces_of(cuts: Iterable[bytes | _LongLine], layout: _FileFormat) -> Iterator[_Piece]:
    """The pieces for stage 1 of one file's `cuts`."""
    for cut in cuts:
        if isinstance(cut, _LongLine):
            yield _Piece(layout.file_no, layout.name, "long", cut.head)
        else:
            yield from layout.pieces(cut)


def _long_line(piece: _Piece) -> _Encoded:
    """Stage 1 for a line the cutter gave up on: one TOO_LONG reject, no record."""
    detail = f"line is longer than {_MAX_LINE_BYTES} bytes"
    return _Encoded.empty(piece, 1, 1, 0, [(0, RejectReason.TOO_LONG, detail, piece.data)])


# ---------------------------------------------------------------------------------------------
# The source


class Source:
    """Reads input files in order and yields `RecordBatch`es; see the module docstring.

    Dedupe (on by default) keeps the first occurrence of each ID (for personalized ranking, of
    each userId: the output is keyed by it) and lists later ones in the duplicates sink as
    `<ID as a JSON string>\\t<file>:<line>`. IDs are compared by 64-bit fingerprint, in about
    10 bytes of memory per distinct ID: an ID whose fingerprint collides with an earlier one's
    counts as a duplicate, so it is listed in the duplicates file, never dropped unlisted. Memory
    and the odds of a collision (3e-6 for 10 million IDs) are in `fanout._dedupe._FingerprintSet`.

    A gzip member that is corrupt or cut short raises `InputError` when reached; the batches
    before it were already yielded.
    """

    def __init__(
        self,
        files: AsyncIterator[InputFile],
        options: SourceOptions,
        *,
        rejects: LineSink,
        duplicates: LineSink,
    ) -> None:
        self._files = files
        self._options = options
        self._rejects = rejects
        self._duplicates = duplicates
        self._encoder = _Encoder(options)
        self._seen = _FingerprintSet() if options.dedupe else None
        self._started = False
        self._n_files = 0
        self._lines = 0
        self._blank = 0
        self._records = 0
        self._dups = 0
        self._rejected: dict[RejectReason, int] = dict.fromkeys(RejectReason, 0)
        self._bytes_in = 0
        self._line_base: dict[int, int] = {}
        self._expansion = 1.0  # decompressed / compressed bytes, so far

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counts so far (consistent at every point: read it any time)."""
        return SourceStats(
            files=self._n_files,
            lines=self._lines,
            blank=self._blank,
            records=self._records,
            duplicates=self._dups,
            rejected=MappingProxyType(dict(self._rejected)),
            bytes_in=self._bytes_in,
        )

    def batches(self) -> AsyncGenerator[RecordBatch, None]:
        """The records, in input order, in batches of about `chunk_bytes` of input (never empty).

        May be iterated once; a second call raises `RuntimeError`.
        """
        if self._started:
            raise RuntimeError("Source.batches() can be iterated only once; make a new Source")
        self._started = True
        return self._run()

    async def _run(self) -> AsyncGenerator[RecordBatch, None]:
        # Both pipelines are loops of this generator itself, not generators of their own: when
        # the command is interrupted, asyncio closes every generator still open at once, and a
        # generator closing one it iterates could find it already being closed.
        try:
            first = await _next(self._files)
            local = await self._plain_locals(first) if first is not None else None
            if local is not None:
                for one in local:
                    await _aclose(one.chunks)  # read by the threads instead
                relay, room, outcomes = self._threads(local)
                try:
                    while (
                        result := await anyio.to_thread.run_sync(relay.take, outcomes)
                    ) is not END:
                        room.release()  # handed on: bounded downstream
                        if (batch := await self._handle(result)) is not None:
                            yield batch
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(relay.stop)
                return
            # Any other input, in lockstep: while piece k is deduplicated (thread) piece k+1 is
            # encoded (thread) and piece k+2 is read, so both cores work and memory holds three
            # pieces.
            pieces = self._pieces(first, self._files)
            try:
                piece = await _next(pieces)
                ready: _Encoded | None = None
                while piece is not None or ready is not None:
                    encoded: list[_Encoded] = []
                    outcome: list[_Outcome] = []
                    fetched: list[_Piece | None] = []
                    failures: list[BaseException] = []
                    async with anyio.create_task_group() as group:
                        if piece is not None:
                            group.start_soon(_guarded, failures, self._encode, piece, encoded)
                        if ready is not None:
                            group.start_soon(_guarded, failures, self._dedupe, ready, outcome)
                        if piece is not None:
                            try:
                                fetched.append(await _next(pieces))
                            except Exception as exc:
                                failures.append(exc)
                    if failures:
                        raise failures[0]
                    if outcome and (batch := await self._handle(outcome[0])) is not None:
                        yield batch
                    ready = encoded[0] if encoded else None
                    piece = fetched[0] if fetched else None
            finally:
                await pieces.aclose()
        finally:
            await _aclose(self._files)

    async def _handle(self, result: _Outcome) -> RecordBatch | None:
        """Write a piece's rejects and duplicates to their sinks and count it; its batch."""
        if result.reject_lines:
            await self._rejects.write(result.reject_lines)
        if result.duplicate_lines:
            await self._duplicates.write(result.duplicate_lines)
        self._count(result)
        return result.batch

    async def _plain_locals(self, first: InputFile) -> list[InputFile] | None:
        """Every input file, `first` and the rest, if each is a plain local file (read on the
        threads); else None, with `_files` again yielding every file after `first`."""
        local = [first]
        while await self._plain_local(local[-1]):
            one = await _next(self._files)
            if one is None:
                return local
            local.append(one)
        if len(local) > 1:
            self._files = _chained(local[1:], self._files)
        return None

    async def _plain_local(self, one: InputFile) -> bool:
        """Whether `one` is a local file of text, CSV or JSON lines (not gzip, not Parquet)."""
        if one.path is None:
            return False
        try:
            head = await anyio.to_thread.run_sync(_head, one.path)
        except OSError:
            return False  # the usual path reports it
        fmt = _declared_format(one.name, self._options.format)
        return not head.startswith(_GZIP_MAGIC) and not _is_parquet(fmt, head)

    def _threads(
        self, files: list[InputFile]
    ) -> tuple[Relay, threading.Semaphore, queue.Queue[Any]]:
        """Local files: read and cut, encode and dedupe on three long-lived threads joined by
        queues of one piece each, in order; the event loop only takes their outcomes (from the
        queue returned, giving back `room` for each). (The lockstep's thread hops and barrier at
        every piece kept the two cores only 70-80% busy: a 10M-ID pipeline took 1.15-1.2 s,
        where the same work on plain threads took 0.75-0.85.)"""
        relay = Relay()
        room = threading.Semaphore(_ENCODED_AHEAD)

        def encode(piece: _Piece) -> _Encoded:
            relay.acquire(room)  # an encoded piece more in flight
            return self._encode(piece)

        pieces = relay.stage(lambda: self._local_pieces(files))
        encoded = relay.stage(relay.each(pieces, encode))
        return relay, room, relay.stage(relay.each(encoded, self._dedupe))

    def _encode(self, piece: _Piece) -> _Encoded:
        """Stage 1 for `piece` (see `_Encoder.encode`); its input bytes are let go."""
        enc = _long_line(piece) if piece.fmt == "long" else self._encoder.encode(piece)
        enc.piece.data, enc.piece.values, enc.piece.joined = b"", None, None
        return enc

    def _dedupe(self, enc: _Encoded) -> _Outcome:
        """Stage 2 for the pieces in order: line numbers, then `_finish`."""
        file_no = enc.piece.file_no
        base = self._line_base.get(file_no, 0) + enc.piece.skip
        self._line_base[file_no] = base + enc.lines
        return _finish(enc, base, self._seen, self._encoder.field)

    def _count(self, result: _Outcome) -> None:
        self._lines += result.rows
        self._blank += result.blank
        self._dups += result.duplicates
        self._records += result.batch.records if result.batch is not None else 0
        for reason, count in result.rejected.items():
            self._rejected[reason] += count

    # -- reading ---------------------------------------------------------------------------

    async def _pieces(
        self, first: InputFile | None, files: AsyncIterator[InputFile]
    ) -> AsyncGenerator[_Piece, None]:
        """The pieces of `first`, then of each of `files`."""
        file_no = 0
        hinted = False
        one = first
        while one is not None:
            self._n_files += 1
            try:
                async for piece in self._file_pieces(file_no, one):
                    hinted = hinted or self._hint(piece, one)
                    yield piece
            finally:
                await _aclose(one.chunks)
            file_no += 1
            one = await _next(files)

    def _hint(self, piece: _Piece, one: InputFile) -> bool:
        """Tell the first piece of text about how many such pieces the file holds (the dedupe
        set is sized from it); whether it was told."""
        size = one.input_size or one.size
        if not size or not piece.data or piece.fmt == "long":
            return False
        piece.scale = size * self._expansion / len(piece.data)
        return True

    def _local_pieces(self, files: list[InputFile]) -> Iterator[_Piece]:
        """The pieces of the local `files` (text, CSV or JSON lines) in order, read in this
        thread as `_file_chunks` and `_pieces` read them."""
        hinted = False
        for file_no, one in enumerate(files):
            assert one.path is not None
            self._n_files += 1
            fmt = _declared_format(one.name, self._options.format)
            layout, cutter = self._text_cutting(file_no, one.name, fmt)
            for chunk in _line_chunks(one.path, self._options.chunk_bytes):
                self._bytes_in += len(chunk)
                for piece in _pieces_of(cutter.feed(chunk), layout):
                    hinted = hinted or self._hint(piece, one)
                    yield piece
            for piece in _pieces_of(cutter.finish(), layout):
                hinted = hinted or self._hint(piece, one)
                yield piece

    def _text_cutting(
        self, file_no: int, name: str, fmt: str | None
    ) -> tuple[_FileFormat, _Cutter]:
        """How the file `name`, declared `fmt` (not Parquet), is parsed, and the cutter of its
        bytes into pieces at line (or CSV record) ends."""
        cutter = _Cutter(self._options.chunk_bytes, quotes=fmt in ("csv", "tsv"), name=name)
        return _FileFormat(file_no, name, fmt, self._options), cutter

    async def _decoded(self, one: InputFile) -> AsyncGenerator[bytes, None]:
        """The file's bytes, gunzipped if they start with the gzip magic."""
        chunks = one.chunks
        head = b""
        async for raw in chunks:
            self._bytes_in += len(raw)
            head += raw
            if len(head) >= 2:
                break
        if not head.startswith(_GZIP_MAGIC):
            if head:
                yield head
            async for raw in chunks:
                self._bytes_in += len(raw)
                yield raw
            return
        gunzip = _Gunzip(one.name)
        gunzip.feed(head)
        limit = self._options.chunk_bytes
        while True:
            while out := await anyio.to_thread.run_sync(gunzip.step, limit):
                self._expansion = gunzip.produced / max(1, gunzip.consumed)
                yield out
            more = await _next(chunks)
            if more is None:
                break
            self._bytes_in += len(more)
            gunzip.feed(more)
        if not one.sample:
            gunzip.finish()

    async def _file_pieces(self, file_no: int, one: InputFile) -> AsyncIterator[_Piece]:
        fmt = _declared_format(one.name, self._options.format)
        decoded = self._decoded(one)
        try:
            first = b""
            async for data in decoded:
                first += data
                if len(first) >= 4:
                    break
            if _is_parquet(fmt, first):
                async for piece in self._parquet_pieces(file_no, one, first, decoded):
                    yield piece
                return
            layout, cutter = self._text_cutting(file_no, one.name, fmt)
            more: bytes | None = first
            while more is not None:
                for piece in _pieces_of(await anyio.to_thread.run_sync(cutter.feed, more), layout):
                    yield piece
                more = await _next(decoded)
            for piece in _pieces_of(cutter.finish(), layout):
                yield piece
        finally:
            await decoded.aclose()

    async def _parquet_pieces(
        self, file_no: int, one: InputFile, first: bytes, decoded: AsyncIterator[bytes]
    ) -> AsyncIterator[_Piece]:
        """Parquet needs random access: a local file is read in place; stdin, S3 and gzip are
        spooled to a temporary file first."""
        _check_parquet(one.name, self._options.kind)
        with contextlib.ExitStack() as cleanup:
            # (`first` is gunzipped already: whether the file is gzip, its own bytes say)
            if one.path is not None and one.size is not None and not _gzipped(one.path):
                source: str | IO[bytes] = one.path  # in place; `first` is all that was read of it
                self._bytes_in += one.size - len(first)
            else:
                spool: IO[bytes] = cleanup.enter_context(tempfile.TemporaryFile())
                await anyio.to_thread.run_sync(spool.write, first)
                async for data in decoded:
                    await anyio.to_thread.run_sync(spool.write, data)
                spool.seek(0)
                source = spool
            column = await anyio.to_thread.run_sync(_ParquetColumn, one.name, source, self._options)
            while (values := await anyio.to_thread.run_sync(column.next_values)) is not None:
                joined = None if isinstance(values, list) else values
                yield _Piece(
                    file_no,
                    one.name,
                    "parquet",
                    values=values if isinstance(values, list) else None,
                    joined=joined,
                    column=column.index,
                    column_name=column.name,
                )


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()


# Encoded pieces in a threaded source at once: one being encoded, one being deduplicated (10M
# IDs, dedupe off: peak RSS 106 MiB at 2, 115 at 3, 123 unbounded; no faster with more).
_ENCODED_AHEAD = 2


async def _chained(first: list[_T], rest: AsyncIterator[_T]) -> AsyncIterator[_T]:
    """The items of `first`, then those of `rest` (closed with this)."""
    try:
        for item in first:
            yield item
        async for item in rest:
            yield item
    finally:
        await _aclose(rest)


async def _next(iterator: AsyncIterator[_T]) -> _T | None:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


async def _guarded(
    failures: list[BaseException], work: Callable[[_T], Any], arg: _T, out: list[Any]
) -> None:
    """Run `work(arg)` in a worker thread; keep its result or its error (re-raised unwrapped)."""
    try:
        out.append(await anyio.to_thread.run_sync(work, arg))
    except Exception as exc:
        failures.append(exc)
