"""The source stage: one input (a file, stdin or S3 objects) as a stream of encoded input records.

`open_input` turns a spec (`path`, `-`, `s3://bucket/key`, `s3://bucket/prefix/`) into
`InputFile`s; `Source` reads them in order and yields `RecordBatch`es of JSON lines ready to be
uploaded as Personalize batch input. Every input line is accounted for in `Source.stats`:

    lines == blank + records + duplicates + rejected_total

Blank lines are counted and skipped, invalid lines go to the rejects sink (with file, line number,
reason and the raw line), later occurrences of an ID go to the duplicates sink. Nothing is dropped
silently and memory stays flat: input is cut into pieces of about `chunk_bytes` at line ends, and
at most three pieces are alive at once (one being read, one being encoded, one being deduplicated),
each stage in a worker thread so that uploads proceed meanwhile.

The hot path (one ID per line) is vectorised per piece: a piece whose lines are all clean (valid
UTF-8, no control characters, quotes or backslashes, no surrounding whitespace, none blank or too
long) is encoded with one `bytes.replace` and fingerprinted with numpy; only the lines that fail
those checks go through the per-line path, which gives byte-identical results for clean lines.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import itertools
import json
import os
import re
import stat
import sys
import tempfile
import threading
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import IO, Any, Literal, Protocol, TypeVar

import aiofiles
import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
import orjson

from .errors import ConfigError, InputError
from .records import InputKind, RecordBatch, RejectReason
from .storage import ObjectReader, S3Uri

__all__ = [
    "InputFile",
    "LineSink",
    "Source",
    "SourceOptions",
    "SourceStats",
    "open_input",
]

Format = Literal["auto", "text", "csv", "tsv", "jsonl", "parquet"]

_FORMATS: tuple[str, ...] = ("auto", "text", "csv", "tsv", "jsonl", "parquet")
_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
_DEFAULT_CHUNK = 8 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_RAW_CHARS = 1000  # the `raw` field of a reject is cut to this many characters
# A line longer than this is rejected without being held in memory (no ID is anywhere near it).
_MAX_LINE_BYTES = 16 * 1024 * 1024
# Text pieces at least this big are fingerprinted in a thread of their own, beside encoding.
_SPLIT_BYTES = 1 << 20

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
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
    else text (one ID per line). `filter_values` (from `--filter-values NAME=v1,v2`) is added to
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
    chunk_bytes: int = _DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.format not in _FORMATS:
            raise ConfigError(
                f"unknown input format {self.format!r}: use one of {', '.join(_FORMATS)}"
            )
        if self.max_id_length < 1:
            raise ConfigError(f"max_id_length must be at least 1, not {self.max_id_length}")
        if self.chunk_bytes < 1:
            raise ConfigError(f"chunk_bytes must be at least 1, not {self.chunk_bytes}")
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

    `spec` is a local path, `-` (stdin, read as binary in a worker thread), `s3://bucket/key` (one
    object) or `s3://bucket/prefix/` (every object under the prefix in key order, skipping folder
    markers; none at all is an `InputError`). Each file's bytes come in chunks of `chunk_bytes`.
    """
    if chunk_bytes < 1:
        raise ConfigError(f"chunk_bytes must be at least 1, not {chunk_bytes}")
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
        raise InputError(f"input {spec} is a directory: give one file, or - for stdin")
    yield InputFile(spec, _file_chunks(spec, chunk_bytes), info.st_size, path=spec)


async def _file_chunks(path: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    try:
        async with aiofiles.open(path, "rb") as handle:
            while chunk := await handle.read(chunk_bytes):
                yield chunk
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror or exc}") from exc


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
    uri = S3Uri.parse(spec, what="input")
    if store is None:
        raise ConfigError(f"input {spec} is on S3 but no object store was given to read it with")
    if not uri.key or uri.key.endswith("/"):
        found = 0
        async for info in store.list_objects(uri.bucket, uri.key):
            if info.key.endswith("/"):
                continue
            found += 1
            name = f"s3://{uri.bucket}/{info.key}"
            yield InputFile(name, store.read_chunks(uri.bucket, info.key, chunk_bytes), info.size)
        if not found:
            raise InputError(f"no objects under {spec}: check the bucket and prefix")
        return
    size: int | None = None
    under_folder = False
    async for info in store.list_objects(uri.bucket, uri.key):
        if info.key == uri.key:
            size = info.size
        elif info.key.startswith(uri.key + "/"):
            under_folder = True
    if size is None:
        hint = f"; to read the objects under it, use {spec}/" if under_folder else ""
        raise InputError(f"no object {spec}: check the bucket and key{hint}")
    yield InputFile(spec, store.read_chunks(uri.bucket, uri.key, chunk_bytes), size)


# ---------------------------------------------------------------------------------------------
# Fingerprints and the dedupe set

_P1 = np.uint64(0x9E3779B185EBCA87)
_P3 = np.uint64(0x165667B19E3779F9)
_P5 = np.uint64(0x27D4EB2F165667C5)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _fingerprints(buf: bytes, starts: I64, lens: I64, stride: int = 0) -> U64:
    """64-bit fingerprints of the IDs `buf[starts[i] : starts[i] + lens[i]]`, vectorised.

    A function of an ID's UTF-8 bytes only, the same in every process and on every platform:
    `h = len * P3 + P5`; for each little-endian 64-bit word `w` of the ID (the last one
    zero-padded) `h = (h ^ w) * P1; h ^= h >> 29`; then the murmur3 finaliser. `stride`, when not
    0, says that the IDs all start `stride` bytes apart, which saves gathering their words.
    """
    count = len(starts)
    if count == 0:
        return np.empty(0, np.uint64)
    longest = int(lens.max())
    if stride and int(lens.min()) == longest:
        return _fingerprints_fixed(buf, int(starts[0]), stride, longest, count)
    padded = np.zeros(len(buf) + 8, np.uint8)
    padded[: len(buf)] = np.frombuffer(buf, np.uint8)
    every = np.ndarray((len(buf) + 1,), "<u8", buffer=padded, strides=(1,))
    out = np.empty(count, np.uint64)
    for at in range(0, count, _HASH_BLOCK):  # in blocks, to bound the temporary arrays
        block = slice(at, at + _HASH_BLOCK)
        out[block] = _gathered_fingerprints(every, starts[block], lens[block], len(buf))
    return out


_HASH_BLOCK = 1 << 16


def _gathered_fingerprints(every: U64, starts: I64, lens: I64, ceiling: int) -> U64:
    """`_fingerprints` with each word gathered from `every` (the uint64 at each byte offset)."""
    words = (int(lens.max()) + 7) // 8
    h = lens.astype(np.uint64)
    h *= _P3
    h += _P5
    spare = np.empty(len(starts), np.uint64)
    for j in range(words):
        rem = lens - 8 * j
        word = every[np.minimum(starts + 8 * j, ceiling)]
        if int(rem.min()) < 8:
            word &= _WORD_MASKS[np.clip(rem, 0, 8)]
        if int(rem.min()) > 0:
            _mix(h, word, spare)
        else:  # some IDs have no word j
            mixed = h.copy()
            _mix(mixed, word, spare)
            np.copyto(h, mixed, where=rem > 0)
    return _finish_hash(h)


def _fingerprints_fixed(buf: bytes, start: int, stride: int, size: int, count: int) -> U64:
    """`_fingerprints` of `count` IDs of `size` bytes, `stride` bytes apart from `start`.

    The words are read in place (unaligned, strided); the last few IDs, whose last word would
    run past the end of `buf`, are done separately.
    """
    words = (size + 7) // 8
    inside = min(count, max(0, (len(buf) - start - 8 * words) // stride + 1))
    h = np.full(count, (size * int(_P3) + int(_P5)) & 0xFFFF_FFFF_FFFF_FFFF, np.uint64)
    spare = np.empty(count, np.uint64)
    head, scratch = h[:inside], spare[:inside]
    for j in range(words):
        word = np.ndarray((inside,), "<u8", buffer=buf, offset=start + 8 * j, strides=(stride,))
        if size - 8 * j < 8:
            np.bitwise_and(word, _WORD_MASKS[size - 8 * j], out=scratch)
            head ^= scratch
        else:
            head ^= word
        head *= _P1
        np.right_shift(head, np.uint64(29), out=scratch)
        head ^= scratch
    _finish_hash(head)
    if inside < count:
        at = start + inside * stride
        rest = [buf[at + k * stride : at + k * stride + size] for k in range(count - inside)]
        h[inside:] = _fingerprints_of(rest)
    return h


def _finish_hash(h: U64) -> U64:
    """The murmur3 64-bit finaliser, in place."""
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


def _voids(buf: bytes, start: int, stride: int, size: int, count: int) -> npt.NDArray[np.void]:
    """`count` values of `size` bytes at `start`, `start + stride`, ... in `buf`, without a copy."""
    return np.ndarray((count,), f"V{size}", buffer=buf, offset=start, strides=(stride,))


def _encode_fixed(
    buf: bytes, stride: int, count: int, tpl: _Template, scratch: _Scratch | None = None
) -> bytes:
    """`tpl.run(buf)` for clean lines that are all `stride - 1` bytes long, GIL-free but
    for the final copy."""
    size = stride - 1
    prefix, suffix = len(tpl.prefix), len(tpl.suffix)
    layout = np.dtype([("p", f"V{prefix}"), ("id", f"V{size}"), ("s", f"V{suffix}")])
    with (scratch or _Scratch()).lend(count * layout.itemsize) as space:
        out = space.view(layout)
        out["p"] = np.frombuffer(tpl.prefix, f"V{prefix}")[0]
        out["id"] = _voids(buf, 0, stride, size, count)
        out["s"] = np.frombuffer(tpl.suffix, f"V{suffix}")[0]
        return out.tobytes()


class _Scratch:
    """One reusable buffer, lent to one user at a time: building every piece's records in
    fresh memory costs page faults, and the allocator keeps freed blocks per thread anyway."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.uint8)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self, size: int) -> Iterator[npt.NDArray[np.uint8]]:
        with self._lock:
            if self._buffer.size < size:
                self._buffer = np.empty(0, np.uint8)  # let the old one go first
                self._buffer = np.empty(size, np.uint8)
            yield self._buffer[:size]


def _mix(h: U64, word: U64, spare: U64) -> None:
    """One word into the running hashes, in place."""
    h ^= word
    h *= _P1
    np.right_shift(h, np.uint64(29), out=spare)
    h ^= spare


def _fingerprints_of(ids: Sequence[bytes]) -> U64:
    """`_fingerprints` of separate byte strings."""
    if not ids:
        return np.empty(0, np.uint64)
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    starts = np.zeros(len(ids), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return _fingerprints(b"".join(ids), starts, lens)


class _FingerprintSet:
    """The fingerprints of every ID sent so far, in flat numpy memory.

    Exact membership lives in sorted runs of uint64 (an LSM: one new run per piece, neighbours of
    similar size merged up to `RUN_CAP` entries; the runs of 8 MiB pieces are not merged at all,
    since the filter leaves only ~200 lookups per piece to spread over them).
    In front of them is a filter: a word of 64 bits per ~2-4 IDs, picked by the top bits of the
    fingerprint, in which each ID sets 3 bits picked by its low bits (a blocked Bloom filter, 16
    to 32 bits per ID, false positives 0.1-0.8%). Keys are handled in sorted order, so the filter
    and the runs are read front to back (random access into large arrays is what costs here),
    and only the filter's few hits are searched in the runs, segment by segment.

    Memory: 8 bytes per ID in the runs + 2 to 4 bytes per ID in the filter = 10 to 12 bytes per
    distinct ID (10,000,000 IDs: 80 MB + 32 MB = 112 MB), plus up to 6 MB while merging runs and
    the old filter's size while growing it.
    """

    RUN_CAP = 1 << 18
    SEGMENT = 1 << 16  # run entries searched at once: 512 KiB, cache-sized
    MIN_WORDS = 1 << 16
    BITS_PER_ID = 16
    BLOCK = 1 << 20  # keys per step when rebuilding the filter

    def __init__(self) -> None:
        self._runs: list[U64] = []
        self._fences: list[U64] = []
        self._count = 0
        self._words = np.zeros(self.MIN_WORDS, np.uint64)
        self._shift = np.uint64(64 - (self.MIN_WORDS.bit_length() - 1))

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        held = self._runs + self._fences
        return int(self._words.nbytes) + sum(int(part.nbytes) for part in held)

    def add(self, fps: U64, ordered: U64 | None = None, masks: U64 | None = None) -> Bools:
        """Add `fps`; True for each one already present (earlier in `fps` or in the set).

        `ordered` (`np.sort(fps)`) and `masks` (`_filter_masks(ordered)`), if already made.
        """
        count = len(fps)
        if ordered is None or masks is None:
            ordered = np.sort(fps)
            masks = _filter_masks(ordered)
        repeated = ordered[1:] == ordered[:-1]
        inner = bool(repeated.any())
        unique = ordered
        if inner:
            first = np.concatenate(([True], ~repeated))
            unique, masks = ordered[first], masks[first]
        where = (unique >> self._shift).astype(np.intp)
        words = self._words[where]
        member = np.zeros(len(unique), np.bool_)
        if self._count:
            maybe = np.flatnonzero((words & masks) == masks)
            if len(maybe):
                member[maybe[self._contains(unique[maybe])]] = True
        known = unique[member]
        if len(known):
            keep = ~member
            unique, where, masks, words = unique[keep], where[keep], masks[keep], words[keep]
        if inner:
            _, first = np.unique(fps, return_index=True)
            dup = np.ones(count, np.bool_)
            dup[first[~member]] = False
        elif len(known):
            pos = np.searchsorted(known, fps)
            np.minimum(pos, len(known) - 1, out=pos)
            dup = known[pos] == fps
        else:
            dup = np.zeros(count, np.bool_)
        self._insert(unique, where, masks, words)
        return dup

    def reserve(self, count: int) -> None:
        """Size the filter for about `count` distinct IDs (saves growing it step by step)."""
        if count * self.BITS_PER_ID > self._words.size * 64:
            self._grow(min(count, 1 << 32))

    def _grow(self, count: int) -> None:
        """A filter with 16-32 bits per ID for `count` IDs, filled again from the runs."""
        words = 1 << (count * self.BITS_PER_ID // 64).bit_length()
        self._words = np.zeros(words, np.uint64)
        self._shift = np.uint64(64 - (words.bit_length() - 1))
        for run in self._runs:
            for at in range(0, len(run), self.BLOCK):
                block = run[at : at + self.BLOCK]
                where = (block >> self._shift).astype(np.intp)
                self._mark(where, _filter_masks(block), self._words[where])

    def _mark(self, where: npt.NDArray[np.intp], masks: U64, words: U64) -> None:
        """Set the filter bits of keys in sorted order (so `where` is non-decreasing); `words`
        is `self._words[where]`."""
        while len(where):
            words |= masks
            self._words[where] = words  # where keys share a word only the last one landed,
            shared = np.flatnonzero(where[1:] == where[:-1])  # so again for the others
            where, masks = where[shared], masks[shared]
            words = self._words[where]

    def _contains(self, values: U64) -> Bools:
        """Which of the sorted `values` are in the runs."""
        hit = np.zeros(len(values), np.bool_)
        for run, fences in zip(self._runs, self._fences, strict=True):
            if len(values) < 16 * len(fences):
                pos = np.searchsorted(run, values)
                np.minimum(pos, len(run) - 1, out=pos)
                hit |= run[pos] == values
                continue
            bounds = np.searchsorted(values, fences).tolist()
            bounds.append(len(values))
            for segment, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                if lo == hi:
                    continue
                part = run[segment * self.SEGMENT : (segment + 1) * self.SEGMENT]
                pos = np.searchsorted(part, values[lo:hi])
                np.minimum(pos, len(part) - 1, out=pos)
                hit[lo:hi] |= part[pos] == values[lo:hi]
        return hit

    def _insert(self, fresh: U64, where: npt.NDArray[np.intp], masks: U64, words: U64) -> None:
        if not len(fresh):
            return
        self._count += len(fresh)
        self._runs.append(fresh)
        self._fences.append(fresh[:: self.SEGMENT])
        if self._count * self.BITS_PER_ID <= self._words.size * 64:
            self._mark(where, masks, words)
        else:
            self._grow(self._count)
        runs = self._runs
        while (
            len(runs) >= 2
            and len(runs[-2]) < 2 * len(runs[-1])
            and len(runs[-2]) + len(runs[-1]) <= self.RUN_CAP
        ):
            last = runs.pop()
            merged = np.concatenate((runs.pop(), last))
            merged.sort(kind="stable")  # timsort: one linear merge of the two sorted halves
            runs.append(merged)
            self._fences.pop()
            self._fences[-1] = merged[:: self.SEGMENT]


def _filter_masks(keys: U64) -> U64:
    """The 3 bits each key sets in its filter word (from its low 18 bits)."""
    one = np.uint64(1)
    masks: U64 = np.left_shift(one, keys & np.uint64(63))
    masks |= np.left_shift(one, (keys >> np.uint64(6)) & np.uint64(63))
    masks |= np.left_shift(one, (keys >> np.uint64(12)) & np.uint64(63))
    return masks


# ---------------------------------------------------------------------------------------------
# Encoding one piece (stage 1: pure, runs in a worker thread)

_CONTROL = re.compile("[\x00-\x1f\x7f]")
# UTF-8 of every non-ASCII character that str.strip() removes (str.isspace() beyond ASCII).
_WIDE_SPACE = re.compile(
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)
_MAX_UTF8_ERRORS = 64


class _Blank:
    pass


_BLANK = _Blank()
_Bad = tuple[RejectReason, str]
_Reject = tuple[int, RejectReason, str, bytes | str]  # line in the piece, reason, detail, raw


def _check_id(text: str, limit: int) -> str | _Bad | _Blank:
    """The normalised ID, or why it cannot be sent."""
    value = text.strip()
    if not value:
        return _BLANK
    found = _CONTROL.search(value)
    if found:
        return (
            RejectReason.CONTROL_CHARACTER,
            f"control character U+{ord(found.group()):04X} at character {found.start() + 1}",
        )
    if len(value) > limit:
        return (
            RejectReason.TOO_LONG,
            f"ID is {len(value)} characters long; the limit is {limit}",
        )
    return value


def _check_line(raw: bytes, limit: int) -> str | _Bad | _Blank:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start + 1}: {exc.reason}")
    return _check_id(text, limit)


@dataclass(frozen=True, slots=True)
class _Template:
    """The constant parts of a record: `head + json_string(id) + tail`."""

    head: bytes  # b'{"userId":'
    tail: bytes  # b'}\n', or b',"filterValues":{...}}\n'
    prefix: bytes  # head + b'"': before an ID that needs no escaping
    suffix: bytes  # b'"' + tail
    sep: bytes  # suffix + prefix: what each inner line end becomes
    extra: int  # bytes a record has more than its input line (which ends in b"\n")

    @classmethod
    def make(cls, id_field: str, filter_values: bytes | None) -> _Template:
        head = b'{"' + id_field.encode() + b'":'
        tail = (b',"filterValues":' + filter_values if filter_values else b"") + b"}\n"
        prefix, suffix = head + b'"', b'"' + tail
        return cls(head, tail, prefix, suffix, suffix + prefix, len(prefix) + len(suffix) - 1)

    def record(self, value: str) -> bytes:
        return self.head + orjson.dumps(value) + self.tail

    def run(self, lines: bytes) -> bytes:
        """Encode clean lines (each ending in b"\\n") in one pass."""
        body = lines.replace(b"\n", self.sep)
        return b"".join((self.prefix, memoryview(body)[: len(body) - len(self.prefix)]))


@dataclass(slots=True)
class _Core:
    """Encoded candidates (lines of a text piece, or ID fields of CSV/Parquet rows)."""

    data: bytes
    ends: I64
    fps: U64
    rec: I64 | None  # candidate index of each record; None: record i is candidate i
    blank: list[int]
    rejects: list[_Reject]
    count: int
    fixed: int = 0  # the line stride, when fingerprints of fixed-width lines were left out


def _encode_lines(
    buf: bytes,
    tpl: _Template,
    limit: int,
    slow: bool = False,
    fingerprint: bool = True,
    defer_fixed: bool = False,
    scratch: _Scratch | None = None,
) -> _Core:
    """Encode `buf`, one candidate ID per line; clean lines vectorised, others one by one.

    Fingerprints are left empty unless `fingerprint`, and also if `defer_fixed` and the lines
    are clean and of one width (`_fixed_prints` makes them then, in parallel).
    """
    if not buf:
        return _Core(b"", np.empty(0, np.int64), np.empty(0, np.uint64), None, [], [], 0)
    if buf[-1:] != b"\n":
        buf += b"\n"
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    arr = np.frombuffer(buf, np.uint8)
    plain = buf.isascii()
    first = buf.find(b"\n")
    step = first + 1
    stride = 0
    if plain and first > 0 and len(buf) % step == 0:
        grid = arr.reshape(-1, step)
        if (
            bool((grid[:, first] == 10).all())
            and int(grid[:, :first].min()) >= 32
            and b"\x7f" not in buf
        ):
            stride = step  # fixed-width lines of printable ASCII
    if stride:
        count = len(buf) // step
        if not slow and first <= limit and not _fixed_bad(buf, arr, step):
            size = step + tpl.extra
            data = _encode_fixed(buf, stride, count, tpl, scratch)
            ends = np.arange(size, size * count + 1, size, dtype=np.int64)
            if fingerprint and not defer_fixed:
                fps = _fingerprints_fixed(buf, 0, step, first, count)
            else:
                fps = np.empty(0, np.uint64)
            return _Core(data, ends, fps, None, [], [], count, step if fingerprint else 0)
        ends_nl = np.arange(first, len(buf), step, dtype=np.int64)
    else:
        ends_nl = np.flatnonzero(arr == 10).astype(np.int64, copy=False)
    count = len(ends_nl)
    starts = np.empty(count, np.int64)
    starts[0] = 0
    starts[1:] = ends_nl[:-1] + 1
    lens = ends_nl - starts
    if slow:
        bad = np.ones(count, np.bool_)
    else:
        bad = _bad_lines(buf, arr, ends_nl, starts, lens, limit, plain, stride)
    if not bad.any():
        data = tpl.run(buf)
        ends = ends_nl + 1 + np.arange(1, count + 1, dtype=np.int64) * tpl.extra
        fps = _fingerprints(buf, starts, lens) if fingerprint else np.empty(0, np.uint64)
        return _Core(data, ends, fps, None, [], [], count)
    return _encode_mixed(buf, tpl, limit, starts, ends_nl, lens, bad, fingerprint)


@dataclass(slots=True)
class _Prints:
    """Fingerprints of a piece's lines made apart from its encoding, for dedupe."""

    fps: U64
    ordered: U64  # np.sort(fps)
    masks: U64  # _filter_masks(ordered)


def _fixed_prints(buf: bytes) -> _Prints | None:
    """The fingerprints of a piece of fixed-width lines, if it looks like one.

    Runs beside `_encode_lines(..., defer_fixed=True)`, which says (`_Core.fixed`) whether these
    are the ones it needs.
    """
    first = buf.find(b"\n")
    step = first + 1
    if first <= 0 or len(buf) % step or b"\r" in buf:
        return None
    grid = np.frombuffer(buf, np.uint8).reshape(-1, step)
    if not bool((grid[:, first] == 10).all()):
        return None
    fps = _fingerprints_fixed(buf, 0, step, first, len(grid))
    ordered = np.sort(fps)
    return _Prints(fps, ordered, _filter_masks(ordered))


def _fixed_bad(buf: bytes, arr: npt.NDArray[np.uint8], stride: int) -> bool:
    """Whether any of the fixed-width lines of printable ASCII needs the per-line path."""
    if b'"' in buf or b"\\" in buf:
        return True
    return bool((arr[0::stride] == 32).any() or (arr[stride - 2 :: stride] == 32).any())


def _bad_lines(
    buf: bytes,
    arr: npt.NDArray[np.uint8],
    ends_nl: I64,
    starts: I64,
    lens: I64,
    limit: int,
    plain: bool,
    stride: int,
) -> Bools:
    """Lines that might not encode as `prefix + line + suffix`: they take the per-line path."""
    count = len(ends_nl)
    bad = lens > limit
    if stride:
        first = stride - 1
        bad |= arr[0::stride] == 32
        bad |= arr[first - 1 :: stride] == 32
    else:
        bad |= lens == 0
        bad |= arr[starts] == 32
        bad |= arr[ends_nl - 1] == 32
        if int(np.count_nonzero(arr < 32)) != count or b"\x7f" in buf:
            odd = np.flatnonzero(((arr < 32) & (arr != 10)) | (arr == 127))
            bad[np.searchsorted(ends_nl, odd)] = True
    for char in (b'"', b"\\"):
        if char in buf:
            bad[np.searchsorted(ends_nl, np.flatnonzero(arr == char[0]))] = True
    if not plain:
        for found in _WIDE_SPACE.finditer(buf):
            bad[np.searchsorted(ends_nl, found.start())] = True
        invalid = _invalid_utf8_lines(buf, ends_nl)
        if invalid is None:
            bad[:] = True
        else:
            bad[invalid] = True
    return bad


def _invalid_utf8_lines(buf: bytes, ends_nl: I64) -> list[int] | None:
    """Indices of lines with invalid UTF-8, or None if there are too many to look for."""
    view = memoryview(buf)
    at = 0
    found: list[int] = []
    for _ in range(_MAX_UTF8_ERRORS):
        try:
            codecs.utf_8_decode(view[at:], "strict", True)
        except UnicodeDecodeError as exc:
            line = int(np.searchsorted(ends_nl, at + exc.start))
            found.append(line)
            at = int(ends_nl[line]) + 1
            if at >= len(buf):
                return found
        else:
            return found
    return None


def _encode_mixed(
    buf: bytes,
    tpl: _Template,
    limit: int,
    starts: I64,
    ends_nl: I64,
    lens: I64,
    bad: Bools,
    fingerprint: bool,
) -> _Core:
    """Clean runs of lines vectorised, the `bad` lines one by one, in line order."""
    bad_idx = np.flatnonzero(bad)
    blank: list[int] = []
    rejects: list[_Reject] = []
    kept_bad: list[int] = []
    kept_records: list[bytes] = []
    kept_ids: list[bytes] = []
    for index, lo, hi in zip(
        bad_idx.tolist(), starts[bad_idx].tolist(), ends_nl[bad_idx].tolist(), strict=True
    ):
        raw = buf[lo:hi]
        outcome = _check_line(raw, limit)
        if isinstance(outcome, str):
            kept_bad.append(index)
            kept_records.append(tpl.record(outcome))
            kept_ids.append(outcome.encode())
        elif isinstance(outcome, tuple):
            rejects.append((index, outcome[0], outcome[1], raw))
        else:
            blank.append(index)
    good = ~bad
    edges = np.diff(good.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    run_first = np.flatnonzero(edges == 1)
    run_last = np.flatnonzero(edges == -1) - 1
    segments: list[tuple[int, bytes]] = [
        (a, tpl.run(buf[lo : hi + 1]))
        for a, lo, hi in zip(
            run_first.tolist(),
            starts[run_first].tolist(),
            ends_nl[run_last].tolist(),
            strict=True,
        )
    ]
    segments.extend(zip(kept_bad, kept_records, strict=True))
    segments.sort(key=lambda item: item[0])
    data = b"".join(part for _, part in segments)
    keep = good.copy()
    keep[kept_bad] = True
    rec = np.flatnonzero(keep).astype(np.int64)
    from_good = good[rec]
    sizes = np.empty(len(rec), np.int64)
    sizes[from_good] = lens[good] + 1 + tpl.extra
    sizes[~from_good] = np.fromiter(map(len, kept_records), np.int64, len(kept_records))
    fps = np.empty(len(rec) if fingerprint else 0, np.uint64)
    if fingerprint:
        fps[from_good] = _fingerprints(buf, starts[good], lens[good])
        fps[~from_good] = _fingerprints_of(kept_ids)
    return _Core(data, np.cumsum(sizes), fps, rec, blank, rejects, len(starts))


# ---------------------------------------------------------------------------------------------
# Pieces: what stage 1 gets


@dataclass(slots=True)
class _Piece:
    """About `chunk_bytes` of one file, cut at a line end (a record end for CSV)."""

    file_no: int
    name: str
    fmt: str  # text, csv, tsv, jsonl, parquet, or "long" (one over-long line)
    data: bytes = b""
    values: list[Any] | None = None  # parquet: the ID column's values
    skip: int = 0  # header lines just before this piece
    column: int = 0  # csv/tsv/parquet: the ID column
    column_name: str = ""
    scale: float = 0.0  # first piece of the first file: about how many such pieces the file has


@dataclass(slots=True)
class _Encoded:
    """Stage 1's result for one piece, before dedupe."""

    piece: _Piece
    lines: int  # physical lines (rows for Parquet): advances the file's line numbers
    rows: int  # counted in stats.lines
    blank: int
    data: bytes
    ends: I64
    fps: U64
    rec_lines: I64 | None  # 0-based line in the piece of each record; None: record i is line i
    rejects: list[_Reject]
    id_span: tuple[int, int] | None  # record[head:-tail] is the ID as a JSON string
    fixed: int = 0  # see _Core.fixed: fps still to be made (or taken from a _Prints)
    ordered: U64 | None = None
    masks: U64 | None = None

    def take(self, prints: _Prints | None) -> None:
        """Complete deferred fingerprints with `prints`, or make them."""
        if not self.fixed:
            return
        if prints is not None and len(prints.fps) == len(self.ends):
            self.fps, self.ordered, self.masks = prints.fps, prints.ordered, prints.masks
        elif prints is None:
            buf = self.piece.data
            self.fps = _fingerprints_fixed(buf, 0, self.fixed, self.fixed - 1, len(self.ends))
        else:
            return  # not these lines' fingerprints: stage 2 makes them, from the piece
        self.fixed = 0


class _Encoder:
    """Stage 1: pieces to encoded records, fingerprints and rejects. Pure; thread-safe."""

    def __init__(self, options: SourceOptions, *, slow: bool = False) -> None:
        self.dedupe = options.dedupe
        self.scratch = _Scratch()
        self.kind = options.kind
        self.limit = options.max_id_length
        self.slow = slow
        self.field = options.kind.id_field
        self.filter_values = {
            name: ",".join(json.dumps(value) for value in values)
            for name, values in options.filter_values.items()
        }
        encoded = orjson.dumps(self.filter_values, option=orjson.OPT_SORT_KEYS)
        self.tpl = _Template.make(self.field, encoded if self.filter_values else None)
        self.allowed = [self.field]
        if self.kind is InputKind.RANKING:
            self.allowed.append("itemList")
        self.allowed.append("filterValues")

    def encode(self, piece: _Piece, defer: bool = False) -> _Encoded:
        """Stage 1 for `piece`; with `defer`, fixed-width text leaves its fingerprints to
        `_fixed_prints`, run beside."""
        if piece.fmt == "text":
            return self._text(piece, defer)
        if piece.fmt == "jsonl":
            return self._jsonl(piece)
        if piece.fmt in ("csv", "tsv"):
            return self._csv(piece)
        if piece.fmt == "parquet":
            return self._parquet(piece)
        if piece.fmt == "long":
            detail = f"line is longer than {_MAX_LINE_BYTES} bytes"
            rejects: list[_Reject] = [(0, RejectReason.TOO_LONG, detail, piece.data)]
            return _Encoded(piece, 1, 1, 0, *_no_records(), rejects, None)
        raise AssertionError(f"unknown piece format {piece.fmt}")

    def _text(self, piece: _Piece, defer: bool = False) -> _Encoded:
        core = _encode_lines(
            piece.data, self.tpl, self.limit, self.slow, self.dedupe, defer, self.scratch
        )
        encoded = _Encoded(
            piece,
            core.count,
            core.count,
            len(core.blank),
            core.data,
            core.ends,
            core.fps,
            core.rec,
            core.rejects,
            (len(self.tpl.head), len(self.tpl.tail)),
            fixed=core.fixed,
        )
        return encoded

    def _candidates(
        self,
        piece: _Piece,
        lines: int,
        rows: int,
        blank: int,
        cands: list[bytes],
        cand_line: list[int],
        cand_raw: list[bytes | str],
        rejects: list[_Reject],
    ) -> _Encoded:
        """Encode the ID fields of rows (CSV, Parquet) with the text path."""
        joined = b"\n".join(cands) + b"\n"  # every candidate a line, even an empty last one
        core = (
            _encode_lines(joined, self.tpl, self.limit, self.slow, self.dedupe) if cands else None
        )
        if core is None:
            return _Encoded(piece, lines, rows, blank, *_no_records(), rejects, None)
        where = np.array(cand_line, np.int64)
        for index in core.blank:
            detail = f"column {piece.column_name!r} is empty"
            rejects.append((cand_line[index], RejectReason.MISSING_COLUMN, detail, cand_raw[index]))
        for index, reason, detail, _ in core.rejects:
            rejects.append((cand_line[index], reason, detail, cand_raw[index]))
        rejects.sort(key=lambda item: item[0])
        rec_lines = where if core.rec is None else where[core.rec]
        span = (len(self.tpl.head), len(self.tpl.tail))
        return _Encoded(
            piece, lines, rows, blank, core.data, core.ends, core.fps, rec_lines, rejects, span
        )

    def _csv(self, piece: _Piece) -> _Encoded:
        delim = "\t" if piece.fmt == "tsv" else ","
        sep = delim.encode()
        col = piece.column
        lines = piece.data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        cands: list[bytes] = []
        cand_line: list[int] = []
        cand_raw: list[bytes | str] = []
        rejects: list[_Reject] = []
        blank = 0
        rows = 0
        pending: list[int] = []  # lines of a record with an open quote
        pending_quotes = 0

        def missing(index: int, fields: int, raw: bytes | str) -> None:
            detail = (
                f"row has {fields} column(s); the ID column {piece.column_name!r} "
                f"is column {col + 1}"
            )
            rejects.append((index, RejectReason.MISSING_COLUMN, detail, raw))

        def flush() -> None:
            nonlocal blank, rows
            first = pending[0]
            raws = [lines[i].removesuffix(b"\r") for i in pending]
            pending.clear()
            try:
                texts = [raw.decode("utf-8") + "\n" for raw in raws]
            except UnicodeDecodeError as exc:
                rows += 1
                detail = f"invalid UTF-8 in a quoted CSV record: {exc.reason}"
                rejects.append((first, RejectReason.INVALID_UTF8, detail, b"\n".join(raws)))
                return
            reader = csv.reader(texts, delimiter=delim, strict=False)
            done = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    rows += 1
                    raw = "".join(texts[done : reader.line_num])
                    rejects.append((first + done, RejectReason.WRONG_SHAPE, f"bad CSV: {exc}", raw))
                    done = reader.line_num
                    continue
                rows += 1
                raw = "".join(texts[done : reader.line_num]).removesuffix("\n")
                at = first + done
                done = reader.line_num
                if not any(field.strip() for field in row):
                    blank += 1
                elif len(row) <= col:
                    missing(at, len(row), raw)
                else:
                    value = row[col]
                    if "\n" in value:
                        value = value.strip()
                    if "\n" in value:
                        detail = f"control character U+000A in column {piece.column_name!r}"
                        rejects.append((at, RejectReason.CONTROL_CHARACTER, detail, raw))
                        continue
                    cands.append(value.encode())
                    cand_line.append(at)
                    cand_raw.append(raw)

        quoted = b'"' in piece.data
        for index, line in enumerate(lines):
            if pending or (quoted and b'"' in line):
                pending.append(index)
                pending_quotes += line.count(b'"')
                if pending_quotes % 2 == 0:
                    flush()
                    pending_quotes = 0
                continue
            rows += 1
            line = line.removesuffix(b"\r")
            fields = line.split(sep)
            if not line.replace(sep, b"").strip():  # nothing but separators and whitespace
                blank += 1
            elif len(fields) <= col:
                missing(index, len(fields), line)
            else:
                cands.append(fields[col])
                cand_line.append(index)
                cand_raw.append(line)
        if pending:
            flush()
        return self._candidates(piece, len(lines), rows, blank, cands, cand_line, cand_raw, rejects)

    def _parquet(self, piece: _Piece) -> _Encoded:
        values = piece.values or []
        cands: list[bytes] = []
        cand_line: list[int] = []
        cand_raw: list[bytes | str] = []
        rejects: list[_Reject] = []
        for index, value in enumerate(values):
            if value is None:
                detail = f"column {piece.column_name!r} is null"
                rejects.append((index, RejectReason.MISSING_COLUMN, detail, "null"))
                continue
            raw = value if isinstance(value, bytes) else str(value).encode()
            if b"\n" in raw:
                text = raw.decode("utf-8", "replace").strip()
                if "\n" in text:
                    detail = f"control character U+000A in column {piece.column_name!r}"
                    rejects.append((index, RejectReason.CONTROL_CHARACTER, detail, raw))
                    continue
                raw = raw.strip()
            cands.append(raw)
            cand_line.append(index)
            cand_raw.append(raw)
        return self._candidates(
            piece, len(values), len(values), 0, cands, cand_line, cand_raw, rejects
        )

    def _jsonl(self, piece: _Piece) -> _Encoded:
        lines = piece.data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        records: list[bytes] = []
        rec_lines: list[int] = []
        ids: list[bytes] = []
        rejects: list[_Reject] = []
        blank = 0
        for index, line in enumerate(lines):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    detail = f"invalid UTF-8 at byte {bad.start + 1}: {bad.reason}"
                    rejects.append((index, RejectReason.INVALID_UTF8, detail, line))
                    continue
                if not text.strip():
                    blank += 1
                else:
                    detail = f"not valid JSON: {exc}"
                    rejects.append((index, RejectReason.MALFORMED_JSON, detail, line))
                continue
            outcome = self._json_record(obj)
            if isinstance(outcome, tuple) and isinstance(outcome[0], RejectReason):
                rejects.append((index, outcome[0], str(outcome[1]), line))
            else:
                record, value = outcome
                assert isinstance(record, bytes) and isinstance(value, bytes)
                records.append(record)
                ids.append(value)
                rec_lines.append(index)
        data = b"".join(records)
        ends = np.cumsum(np.fromiter(map(len, records), np.int64, len(records)))
        fps = _fingerprints_of(ids) if self.dedupe else np.empty(0, np.uint64)
        where = np.array(rec_lines, np.int64)
        return _Encoded(piece, len(lines), len(lines), blank, data, ends, fps, where, rejects, None)

    def _json_record(self, obj: object) -> tuple[bytes, bytes] | _Bad:
        """One JSON-lines object as a canonical record and its ID's UTF-8, or why not."""
        wrong = RejectReason.WRONG_SHAPE
        if not isinstance(obj, dict):
            return (RejectReason.MALFORMED_JSON, f"expected a JSON object, got {_json_type(obj)}")
        for key in obj:
            if key not in self.allowed:
                if key == "itemList":
                    return (wrong, "itemList is only allowed for personalized ranking input")
                return (wrong, f"unexpected key {key!r}; allowed keys: {', '.join(self.allowed)}")
        if self.field not in obj:
            return (wrong, f"missing key {self.field!r}")
        value = obj[self.field]
        if not isinstance(value, str):
            return (wrong, f"{self.field} must be a string, not {_json_type(value)}")
        checked = _check_id(value, self.limit)
        if isinstance(checked, _Blank):
            return (wrong, f"{self.field} is empty")
        if isinstance(checked, tuple):
            return checked
        parts = [self.tpl.head, orjson.dumps(checked)]
        if self.kind is InputKind.RANKING:
            items = obj.get("itemList")
            if items is None:
                return (wrong, "missing key 'itemList' (required for personalized ranking)")
            if not isinstance(items, list) or not items:
                return (wrong, "itemList must be a list of one or more item IDs")
            clean: list[str] = []
            for position, item in enumerate(items):
                if not isinstance(item, str) or not item.strip():
                    return (wrong, f"itemList[{position}] must be a non-empty string")
                clean.append(item.strip())
            parts += [b',"itemList":', orjson.dumps(clean)]
        merged = self.filter_values
        if "filterValues" in obj:
            given = obj["filterValues"]
            if not isinstance(given, dict):
                return (wrong, "filterValues must be an object of name to values")
            for name, spec in given.items():
                if not _filter_value_ok(spec):
                    return (
                        wrong,
                        f"filterValues[{name!r}] must be a string of double-quoted values "
                        'separated by commas, e.g. "\\"a\\",\\"b\\""',
                    )
            merged = {**merged, **given}
        if merged:
            parts += [b',"filterValues":', orjson.dumps(merged, option=orjson.OPT_SORT_KEYS)]
        parts.append(b"}\n")
        return b"".join(parts), checked.encode()


def _no_records() -> tuple[bytes, I64, U64, I64 | None]:
    return b"", np.empty(0, np.int64), np.empty(0, np.uint64), None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _filter_value_ok(spec: object) -> bool:
    """The service's filter value format: one or more double-quoted values, comma separated."""
    if not isinstance(spec, str):
        return False
    try:
        values = orjson.loads("[" + spec + "]")
    except orjson.JSONDecodeError:
        return False
    return bool(values) and all(isinstance(value, str) for value in values)


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


def _select(data: bytes, ends: I64, keep: Bools) -> tuple[bytes, I64]:
    """The records of `data` where `keep` is True."""
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    edges = np.diff(keep.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    first = np.flatnonzero(edges == 1)
    last = np.flatnonzero(edges == -1) - 1
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
        if enc.piece.scale:  # size the filter for the whole input at once
            seen.reserve(int(enc.rows * enc.piece.scale * 1.1))
        enc.take(None)
        dup = seen.add(enc.fps, enc.ordered, enc.masks)
        dup_idx = np.flatnonzero(dup)
        if len(dup_idx):
            duplicates = len(dup_idx)
            starts = np.concatenate((np.zeros(1, np.int64), ends[:-1]))
            lines = dup_idx if enc.rec_lines is None else enc.rec_lines[dup_idx]
            origin = name.encode()
            out: list[bytes] = []
            for lo, hi, line in zip(
                starts[dup_idx].tolist(), ends[dup_idx].tolist(), lines.tolist(), strict=True
            ):
                record = data[lo:hi]
                if enc.id_span is not None:
                    value = record[enc.id_span[0] : len(record) - enc.id_span[1]]
                else:
                    value = orjson.dumps(orjson.loads(record)[id_field])
                out.append(b"%s\t%s:%d\n" % (value, origin, base + line + 1))
            dup_lines = b"".join(out)
            data, ends = _select(data, ends, ~dup)
    rejected: dict[RejectReason, int] = {}
    reject_out: list[bytes] = []
    for line, reason, detail, raw in enc.rejects:
        rejected[reason] = rejected.get(reason, 0) + 1
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
        entry = {
            "source": name,
            "line": base + line + 1,
            "reason": reason.value,
            "detail": detail,
            "raw": text[:_RAW_CHARS],
        }
        reject_out.append(orjson.dumps(entry) + b"\n")
    batch = RecordBatch(data, ends) if len(ends) else None
    return _Outcome(
        batch, enc.rows, enc.blank, duplicates, rejected, b"".join(reject_out), dup_lines
    )


# ---------------------------------------------------------------------------------------------
# Reading: gzip, cutting into pieces


class _Gunzip:
    """Streaming gzip (multi-member) with bounded output per step."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._member_started = False
        self.consumed = 0
        self.produced = 0

    def feed(self, raw: bytes) -> None:
        self._input = self._input + raw if self._input else raw

    def step(self, limit: int) -> bytes:
        """Up to `limit` decompressed bytes; b"" once all input so far is used."""
        while self._input:
            if self._z.eof:
                if not self._input.strip(b"\0"):
                    self.consumed += len(self._input)
                    self._input = b""  # zero padding after the last member
                    return b""
                if len(self._input) < 2 and _GZIP_MAGIC.startswith(self._input):
                    return b""  # the start of a next member: wait for more
                if not self._input.startswith(_GZIP_MAGIC):
                    raise InputError(
                        f"{self._name}: unexpected data after a gzip member at compressed byte "
                        f"{self.consumed} ({self.produced} bytes decompressed so far): the file "
                        "is corrupt; compress it again"
                    )
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_started = False
            before = len(self._input)
            try:
                out = self._z.decompress(self._input, limit)
            except zlib.error as exc:
                raise InputError(
                    f"{self._name}: gzip data is corrupt at about compressed byte {self.consumed} "
                    f"({self.produced} bytes decompressed so far): {exc}; check or download the "
                    "file again"
                ) from None
            self._member_started = True
            rest = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            self.consumed += before - len(rest)
            self._input = rest
            self.produced += len(out)
            if out:
                return out
            if len(rest) == before and not self._z.eof:
                break  # zlib wants more input
        return b""

    def finish(self) -> None:
        if (self._member_started and not self._z.eof) or self._input:
            raise InputError(
                f"{self._name}: gzip data is truncated after {self.consumed} compressed bytes "
                f"({self.produced} bytes decompressed): the file is incomplete; download or "
                "compress it again"
            )


@dataclass(frozen=True, slots=True)
class _LongLine:
    head: bytes


class _Cutter:
    """Cuts decoded bytes into pieces of at least `size` bytes at line ends.

    For CSV (`quotes`), only where the number of double quotes since the piece start is even, so
    that a quoted field spanning lines stays in one piece. Strips a UTF-8 BOM at the start. A
    line longer than `_MAX_LINE_BYTES` becomes a `_LongLine` and the rest of it is skipped.
    """

    def __init__(self, size: int, quotes: bool) -> None:
        self._size = size
        self._quotes = quotes
        self._parts: list[bytes] = []  # bytes after the last cut
        self._held = 0
        self._held_quotes = 0
        self._bom = True
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | _LongLine]:
        if self._bom:
            if self._held + len(data) < len(_BOM):
                self._keep(data)
                return []
            data = b"".join((*self._parts, data))
            self._parts, self._held, self._held_quotes = [], 0, 0
            self._bom = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
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
                while quotes % 2 and end >= 0:
                    following = data.find(b"\n", end + 1)
                    if following >= 0:
                        quotes += data.count(b'"', end, following)
                    end = following
            if end < 0:
                break
            if self._parts:
                out.append(b"".join((*self._parts, memoryview(data)[at : end + 1])))
                self._parts, self._held, self._held_quotes = [], 0, 0
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
        rest = b"".join(self._parts)
        self._parts = []
        if self._bom and rest.startswith(_BOM):
            rest = rest[len(_BOM) :]
        if not rest:
            return []
        return [rest if len(rest) <= _MAX_LINE_BYTES else _LongLine(rest[:4096])]

    def _keep(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)
        if self._quotes:
            self._held_quotes += data.count(b'"')

    def _overflow(self) -> list[bytes | _LongLine]:
        """Too much held without a cut: cut at the last line end anyway (an unbalanced quote in
        CSV), and give up on a line longer than `_MAX_LINE_BYTES`."""
        rest = b"".join(self._parts)
        self._parts, self._held, self._held_quotes = [], 0, 0
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


# ---------------------------------------------------------------------------------------------
# The source


class Source:
    """Reads input files in order and yields `RecordBatch`es; see the module docstring.

    Dedupe (on by default) keeps the first occurrence of each ID (for personalized ranking, of
    each userId: the output is keyed by it) and lists later ones in the duplicates sink as
    `<ID as a JSON string>\\t<file>:<line>`. IDs are compared by 64-bit fingerprint, see
    `_FingerprintSet` for memory (about 11 bytes per distinct ID). Two distinct IDs with the same
    fingerprint would make the later one count as a duplicate; it is then listed in the
    duplicates file, never dropped unlisted. The chance of any such collision among n distinct
    IDs is about n**2 / 2**65 (3e-6 for 10 million IDs).

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

    def batches(self) -> AsyncIterator[RecordBatch]:
        """The records, in input order, in batches of about `chunk_bytes` of input (never empty).

        May be iterated once; a second call raises `RuntimeError`.
        """
        if self._started:
            raise RuntimeError("Source.batches() can be iterated only once; make a new Source")
        self._started = True
        return self._run()

    async def _run(self) -> AsyncIterator[RecordBatch]:
        # A lockstep pipeline: while piece k is deduplicated (thread) piece k+1 is encoded
        # (thread; fixed-width text is fingerprinted in another) and piece k+2 is read, so both
        # cores work and memory holds three pieces.
        pieces = self._pieces()
        try:
            piece = await _next(pieces)
            ready: tuple[_Encoded, int] | None = None
            while piece is not None or ready is not None:
                encoded: list[_Encoded] = []
                prints: list[_Prints | None] = []
                outcome: list[_Outcome] = []
                fetched: list[_Piece | None] = []
                failures: list[BaseException] = []
                async with anyio.create_task_group() as group:
                    if piece is not None:
                        split = (
                            self._seen is not None
                            and piece.fmt == "text"
                            and len(piece.data) >= _SPLIT_BYTES
                        )
                        encode = partial(self._encoder.encode, defer=split)
                        group.start_soon(_guarded, failures, encode, piece, encoded)
                        if split:
                            group.start_soon(_guarded, failures, _fixed_prints, piece.data, prints)
                    if ready is not None:
                        group.start_soon(_guarded, failures, self._dedupe, ready, outcome)
                    if piece is not None:
                        try:
                            fetched.append(await _next(pieces))
                        except Exception as exc:
                            failures.append(exc)
                if failures:
                    raise failures[0]
                if outcome:
                    result = outcome[0]
                    if result.reject_lines:
                        await self._rejects.write(result.reject_lines)
                    if result.duplicate_lines:
                        await self._duplicates.write(result.duplicate_lines)
                    self._count(result)
                    if result.batch is not None:
                        yield result.batch
                ready = None
                if encoded:
                    enc = encoded[0]
                    if prints and prints[0] is not None:
                        enc.take(prints[0])
                    if not enc.fixed:  # the input is no longer needed: free it early
                        enc.piece.data, enc.piece.values = b"", None
                    file_no = enc.piece.file_no
                    base = self._line_base.get(file_no, 0) + enc.piece.skip
                    self._line_base[file_no] = base + enc.lines
                    ready = (enc, base)
                piece = fetched[0] if fetched else None
        finally:
            await pieces.aclose()
            closer = getattr(self._files, "aclose", None)
            if closer is not None:
                await closer()

    def _dedupe(self, ready: tuple[_Encoded, int]) -> _Outcome:
        enc, base = ready
        return _finish(enc, base, self._seen, self._encoder.field)

    def _count(self, result: _Outcome) -> None:
        self._lines += result.rows
        self._blank += result.blank
        self._dups += result.duplicates
        self._records += result.batch.records if result.batch is not None else 0
        for reason, count in result.rejected.items():
            self._rejected[reason] += count

    # -- reading ---------------------------------------------------------------------------

    async def _pieces(self) -> AsyncGenerator[_Piece, None]:
        file_no = 0
        hinted = False
        async for one in self._files:
            self._n_files += 1
            try:
                async for piece in self._file_pieces(file_no, one):
                    if not hinted and one.size and piece.data and piece.fmt != "long":
                        piece.scale = one.size * self._expansion / len(piece.data)
                        hinted = True
                    yield piece
            finally:
                closer = getattr(one.chunks, "aclose", None)
                if closer is not None:
                    await closer()
            file_no += 1

    def _declared_format(self, name: str) -> str | None:
        if self._options.format != "auto":
            return self._options.format
        stem = name.lower().removesuffix(".gz")
        for ext, fmt in _EXTENSIONS.items():
            if stem.endswith(ext):
                return fmt
        return None

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
        gunzip.finish()

    async def _file_pieces(self, file_no: int, one: InputFile) -> AsyncIterator[_Piece]:
        fmt = self._declared_format(one.name)
        decoded = self._decoded(one)
        try:
            first = b""
            async for data in decoded:
                first += data
                if len(first) >= 4:
                    break
            if fmt == "parquet" or (fmt is None and first.startswith(b"PAR1")):
                async for piece in self._parquet_pieces(file_no, one, first, decoded):
                    yield piece
                return
            if self._options.kind is InputKind.RANKING and fmt not in (None, "jsonl"):
                raise _ranking_needs_jsonl(one.name, fmt)
            cutter = _Cutter(self._options.chunk_bytes, quotes=fmt in ("csv", "tsv"))
            state = _FileState(fmt)
            for cut in await anyio.to_thread.run_sync(cutter.feed, first):
                for piece in self._classify(file_no, one.name, cut, state):
                    yield piece
            async for data in decoded:
                for cut in await anyio.to_thread.run_sync(cutter.feed, data):
                    for piece in self._classify(file_no, one.name, cut, state):
                        yield piece
            for cut in cutter.finish():
                for piece in self._classify(file_no, one.name, cut, state):
                    yield piece
        finally:
            await decoded.aclose()

    def _classify(
        self, file_no: int, name: str, cut: bytes | _LongLine, state: _FileState
    ) -> Iterator[_Piece]:
        """Sniff the format and read the CSV header where needed; pieces ready for stage 1."""
        if isinstance(cut, _LongLine):
            yield _Piece(file_no, name, "long", cut.head)
            return
        if state.fmt is None:
            line = _first_nonblank(cut)
            if line is None:
                yield _Piece(file_no, name, "text", cut)
                return
            state.fmt = "jsonl" if cut[line[0] : line[1]].lstrip().startswith(b"{") else "text"
            if self._options.kind is InputKind.RANKING and state.fmt != "jsonl":
                raise _ranking_needs_jsonl(name, state.fmt)
        if state.fmt in ("csv", "tsv") and state.column is None:
            line = _first_nonblank(cut)
            if line is None:
                yield _Piece(file_no, name, "text", cut)
                return
            lo, hi = line
            if lo:
                yield _Piece(file_no, name, "text", cut[:lo])
            state.column, state.column_name = self._header(name, state.fmt, cut[lo:hi])
            rest = cut[hi + 1 :]
            yield _Piece(
                file_no,
                name,
                state.fmt,
                rest,
                skip=1,
                column=state.column,
                column_name=state.column_name,
            )
            return
        yield _Piece(
            file_no,
            name,
            state.fmt,
            cut,
            column=state.column or 0,
            column_name=state.column_name,
        )

    def _header(self, name: str, fmt: str, line: bytes) -> tuple[int, str]:
        text = line.decode("utf-8", "replace").removesuffix("\r")
        try:
            header = next(csv.reader([text], delimiter="\t" if fmt == "tsv" else ","), [])
        except csv.Error as exc:
            raise ConfigError(
                f"{name}: cannot read the header row ({exc}): its first line must name the columns"
            ) from None
        return self._pick_column(name, [cell.strip() for cell in header])

    def _pick_column(self, name: str, columns: Sequence[str]) -> tuple[int, str]:
        wanted = self._options.id_column
        shown = ", ".join(repr(column) for column in columns)
        if wanted is not None:
            if wanted in columns:
                return columns.index(wanted), wanted
            raise ConfigError(
                f"{name}: no column {wanted!r} in the header; the columns are {shown}: "
                "give one of them as the ID column"
            )
        field_name = self._options.kind.id_field
        snake = {"userId": "user_id", "itemId": "item_id", "itemAttributes": "item_attributes"}
        for candidate in (field_name, snake[field_name], "id"):
            for index, column in enumerate(columns):
                if column.lower() == candidate.lower():
                    return index, column
        if len(columns) == 1:
            return 0, columns[0]
        raise ConfigError(
            f"{name}: cannot tell which column holds the {field_name}; the columns are {shown}: "
            "give the ID column (id_column / --id-column)"
        )

    async def _parquet_pieces(
        self, file_no: int, one: InputFile, first: bytes, decoded: AsyncIterator[bytes]
    ) -> AsyncIterator[_Piece]:
        """Parquet needs random access: a local file is read in place; stdin, S3 and gzip are
        spooled to a temporary file first."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "Parquet input needs pyarrow: pip install 'fanout[parquet]'"
            ) from None
        if self._options.kind is InputKind.RANKING:
            raise _ranking_needs_jsonl(one.name, "parquet")
        with contextlib.ExitStack() as cleanup:
            if one.path is not None and one.size is not None and not first.startswith(_GZIP_MAGIC):
                source: Any = one.path  # in place; `first` is all that was read of it
                self._bytes_in += one.size - len(first)
            else:
                spool: IO[bytes] = cleanup.enter_context(tempfile.TemporaryFile())
                await anyio.to_thread.run_sync(spool.write, first)
                async for data in decoded:
                    await anyio.to_thread.run_sync(spool.write, data)
                spool.seek(0)
                source = spool
            try:
                parquet = await anyio.to_thread.run_sync(pq.ParquetFile, source)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{one.name}: not a readable Parquet file: {exc}") from exc
            schema = parquet.schema_arrow
            index, column = self._pick_column(one.name, list(schema.names))
            kind = schema.field(index).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (
                pa.types.is_string(kind)
                or pa.types.is_large_string(kind)
                or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind)
                or pa.types.is_integer(kind)
            ):
                raise ConfigError(
                    f"{one.name}: column {column!r} has type {kind}; IDs must be strings or "
                    "integers: pick another column or convert this one"
                )
            rows = max(1, self._options.chunk_bytes // 48)
            batches = parquet.iter_batches(batch_size=rows, columns=[column])
            while True:
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    break
                values = await anyio.to_thread.run_sync(batch.column(0).to_pylist)
                yield _Piece(
                    file_no,
                    one.name,
                    "parquet",
                    values=values,
                    column=index,
                    column_name=column,
                )


@dataclass(slots=True)
class _FileState:
    fmt: str | None
    column: int | None = None
    column_name: str = ""


def _ranking_needs_jsonl(name: str, fmt: str) -> ConfigError:
    return ConfigError(
        f"{name}: personalized ranking input needs an itemList per user, which only JSON lines "
        f"carry; this file reads as {fmt}: give a .jsonl file or --format jsonl"
    )


def _first_nonblank(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the first line with non-whitespace content (end at its b"\\n")."""
    at = 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            end = len(data)
        if data[at:end].strip():
            return at, end
        at = end + 1
    return None


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
