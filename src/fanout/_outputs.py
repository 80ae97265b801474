"""Parsing the service's output lines, defensively, and splitting streamed objects into lines.

One output line is a JSON object `{"input": {...}, "output": {...}, "error": null | "..."}`
(reference §2.1, §2.2, §2.5). The parser is strict about what the merge relies on (a string key,
lists of strings, numbers where scores are) and lenient about everything else: any whitespace,
Java-style exponents (`3.773E-4`), a missing `error` (≡ null), unknown keys anywhere. A line it
cannot use becomes a `BadLine` with a short reason; it never raises, whatever the bytes.

`LineBlocks` cuts a streamed object into blocks of whole lines and `parse_block` parses a
block. Lines of the common shape, exactly as the service writes them
(`{"input":{"userId":"…"},"output":{"recommendedItems":["…",…],"scores":[…]},"error":null}`,
compact, no escapes, scores optional, `error` null or absent) are checked by a compiled kernel
(`_mergekernels.scan`) and kept as byte ranges of the block (`CommonLines`), never as Python
objects: that is what makes the merge fast. Anything else goes through `parse_output_line`.
Both ways accept and reject the same lines and give the same values (the tests hold them to
it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from . import _mergekernels as K
from .records import InputKind

_REASON_CHARS = 120
_ID_FIELD = {kind: kind.id_field for kind in InputKind}


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One usable output line: the ID it answers and either its recommendations or its error.

    `items`/`scores` for recommendations (scores None when the recipe gives none), `theme` and
    `theme_scores` for THEME_GENERATION, `users` for batch segment jobs; `error` is the service's
    message for a failed input record (then the other fields are empty). `raw` is the line as the
    service wrote it, without its line end.
    """

    key: str
    raw: bytes
    items: tuple[str, ...] = ()
    scores: tuple[float, ...] | None = None
    theme: str | None = None
    theme_scores: tuple[float, ...] | None = None
    users: tuple[str, ...] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line the merge cannot use, and why (short, for a report)."""

    reason: str


def parse_output_line(line: bytes, kind: InputKind) -> OutputRecord | BadLine:
    """The record on `line` (without its line end), or why it is unusable. Never raises."""
    try:
        return _parse(line, kind)
    except Exception as exc:  # the contract is "never raises": a bug here must not stop a merge
        return BadLine(_short(f"unparseable line ({type(exc).__name__})"))


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _parse(line: bytes, kind: InputKind) -> OutputRecord | BadLine:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if line.rstrip()[-1:] not in (b"}", b""):
            return BadLine(_short(f"truncated or malformed JSON: {exc}"))
        return BadLine(_short(f"malformed JSON: {exc}"))
    if not isinstance(obj, dict):
        return BadLine("not a JSON object")
    field = _ID_FIELD[kind]
    key = _key(obj, kind)
    if isinstance(key, BadLine):
        return key
    error = obj.get("error")
    if error is not None:
        message = error if isinstance(error, str) else orjson.dumps(error).decode()
        return OutputRecord(key, line, error=message or "(empty error message)")
    output = obj.get("output")
    if not isinstance(output, dict):
        return BadLine(f"{field} {_short(key)!r}: no 'output' object and no error")
    for users_key in ("usersList", "recommendedUsers"):
        if users_key in output:
            users = _strings(output[users_key])
            if users is None:
                return BadLine(f"{field} {_short(key)!r}: {users_key} is not a list of strings")
            return OutputRecord(key, line, users=users)
    items = _strings(output.get("recommendedItems"))
    if items is None:
        return BadLine(f"{field} {_short(key)!r}: recommendedItems is not a list of strings")
    scores = _numbers(output, "scores", len(items))
    if isinstance(scores, BadLine):
        return BadLine(f"{field} {_short(key)!r}: {scores.reason}")
    theme = output.get("theme")
    if theme is not None and not isinstance(theme, str):
        return BadLine(f"{field} {_short(key)!r}: theme is not a string")
    theme_scores = _numbers(output, "itemsThemeRelevanceScores", len(items))
    if isinstance(theme_scores, BadLine):
        return BadLine(f"{field} {_short(key)!r}: {theme_scores.reason}")
    return OutputRecord(key, line, items, scores, theme, theme_scores)


def _key(obj: dict[str, Any], kind: InputKind) -> str | BadLine:
    """The ID the line answers: `input.<id field>` (for item attributes also a top-level one)."""
    field = _ID_FIELD[kind]
    echo = obj.get("input")
    if isinstance(echo, str):  # a malformed input record is echoed as its text
        try:
            echo = orjson.loads(echo)
        except orjson.JSONDecodeError:
            echo = None
    value = echo.get(field) if isinstance(echo, dict) else None
    if value is None and kind is InputKind.ITEM_ATTRIBUTES:
        value = obj.get(field)
    if value is None:
        error = obj.get("error")
        hint = f" (error: {error})" if isinstance(error, str) else ""
        return BadLine(_short(f"no input.{field}{hint}"))
    if not isinstance(value, str) or not value:
        return BadLine(f"input.{field} is not a non-empty string")
    return value


_STR = {str}
_NUMBER = {float, int}  # exact types: JSON booleans (bool) are not numbers here


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not set(map(type, value)) <= _STR:
        return None
    return tuple(value)


def _numbers(output: dict[str, Any], name: str, count: int) -> tuple[float, ...] | BadLine | None:
    value = output.get(name)
    if value is None:
        return None
    types = set(map(type, value)) if isinstance(value, list) else None
    if types is None or not types <= _NUMBER:
        return BadLine(f"{name} is not a list of numbers")
    if len(value) != count:
        return BadLine(f"{name} has {len(value)} values for {count} items")
    return tuple(value) if int not in types else tuple(map(float, value))


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of a stream: `head + body[start:end]` (`\n`-separated; only the stream's
    last line may lack its `\n`), where `head` is the start of a line carried over from earlier
    chunks (then `start` is 0 and the block is that one line). `overlong` says a line just
    before them was skipped for being longer than the line limit. A block does not number its
    lines: the kernels count them."""

    body: bytes
    end: int = -1  # -1: all of body
    head: bytes = b""
    overlong: bool = False
    start: int = 0

    def data(self) -> K.U8:
        """The block's bytes, contiguous: a view of `body`, or for a carried-over line, joined
        without the GIL (call it on a worker thread)."""
        body = np.frombuffer(self.body, np.uint8)
        end = len(body) if self.end < 0 else self.end
        if not self.head:
            return body[self.start : end]
        return K.readonly(K.joined(np.frombuffer(self.head, np.uint8), body, end))


class LineBlocks:
    """Cuts a stream of chunks into blocks of whole lines, holding at most one chunk and one
    partial line (≤ `max_line` bytes); a line that grows past the limit is skipped and reported
    as `Block.overlong` once its end is seen. Chunks are not copied: the line carried over into
    a chunk is a block of its own (joined on a worker thread), and the chunk's other whole lines
    a view of it."""

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._tail = b""
        self._skipping = False

    def feed(self, chunk: bytes) -> list[Block]:
        """The blocks of whole lines that `chunk` completes (none, one or two)."""
        overlong = False
        start = 0
        if self._skipping:
            start = chunk.find(b"\n") + 1
            if not start:
                return []
            self._skipping = False
            overlong = True
        cut = chunk.rfind(b"\n", start) + 1
        head = self._tail  # (empty after a skipped line: then start may be > 0)
        if cut:
            self._tail = chunk[cut:]
        else:
            self._tail += chunk[start:]
        if len(self._tail) > self._max:
            self._skipping = True
            self._tail = b""
        if not cut:
            return [Block(b"", overlong=True)] if overlong else []
        if not head:
            return [Block(chunk, cut, overlong=overlong, start=start)]
        first = chunk.find(b"\n") + 1  # the end of the carried-over line
        joined = Block(chunk, first, head, overlong)
        return [joined, Block(chunk, cut, start=first)] if first < cut else [joined]

    def finish(self) -> Block | None:
        """The last line, if the stream does not end in a line end."""
        if self._skipping:
            self._skipping = False
            return Block(b"", overlong=True)
        if self._tail:
            data, self._tail = self._tail, b""
            return Block(data)
        return None


async def blocks(chunks: AsyncIterator[bytes], max_line: int) -> AsyncGenerator[Block, None]:
    """The lines of a stream of chunks, in blocks of whole lines (`LineBlocks`). `chunks` (an
    async generator: an S3 body, a file) is closed when this one is: iterate it inside
    `contextlib.aclosing`, so that a failure does not leave them to the garbage collector."""
    splitter = LineBlocks(max_line)
    try:
        async for chunk in chunks:
            for block in splitter.feed(chunk):
                yield block
        last = splitter.finish()
        if last is not None:
            yield last
    finally:
        if (close := getattr(chunks, "aclose", None)) is not None:
            await close()


# ---------------------------------------------------------------------------------------------
# Whole blocks, the common shape kept as byte ranges


@dataclass(frozen=True, slots=True)
class CommonLines:
    """Result lines of the common shape (`_mergekernels`), checked, as byte ranges of their
    block: one `spans` row per line (columns `_mergekernels.LINE_LO` …)."""

    id_field: str
    data: K.U8
    spans: K.I64

    def __len__(self) -> int:
        return len(self.spans)

    def take(self, index: K.I64 | list[int]) -> CommonLines:
        """The lines at `index` (in that order)."""
        return CommonLines(self.id_field, self.data, self.spans[index])

    def keys(self) -> list[bytes]:
        """Each line's ID, UTF-8."""
        data, (los, his) = self.data, self.id_spans()
        return [data[lo:hi].tobytes() for lo, hi in zip(los.tolist(), his.tolist(), strict=True)]

    def id_spans(self) -> tuple[K.I64, K.I64]:
        """Where each line's ID starts and ends in `data`."""
        spans = self.spans
        return np.ascontiguousarray(spans[:, K.ID_LO]), np.ascontiguousarray(spans[:, K.ID_HI])

    def flat(self) -> memoryview:
        """The lines as flat JSON lines, `{"<id>":"…","recommendedItems":[…],"scores":[…]}\n`,
        the scores as the service wrote them."""
        head = K.as_array('{"' + self.id_field + '":"')
        return K.flat_lines(self.data, self.spans, head, _FLAT_MIDDLE).data

    def lines(self) -> memoryview:
        """The lines as the service wrote them, each followed by `\n`."""
        return K.joined_lines(self.data, self.spans).data

    def records(self, kind: InputKind) -> list[OutputRecord]:
        """The same lines as `OutputRecord`s (for a result sink that takes only those)."""
        data = self.data
        out: list[OutputRecord] = []
        for lo, hi in self.spans[:, : K.LINE_HI + 1].tolist():
            record = parse_output_line(data[lo:hi].tobytes(), kind)
            assert isinstance(record, OutputRecord)
            out.append(record)
        return out


_FLAT_MIDDLE = K.as_array('","recommendedItems":["')


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    """A block of output lines, parsed: the common-shape lines (`common`, at line indexes
    `common_at`), the others as records (at `record_at`), and the unusable ones as (line number,
    reason). `lines` counts the non-blank lines, overlong ones included; `count` all of them."""

    count: int
    lines: int
    common: CommonLines
    common_at: K.I64
    records: list[OutputRecord]
    record_at: K.I64
    bad: list[tuple[int, str]]


def parse_block(before: int, block: Block, kind: InputKind, max_line: int) -> ParsedBlock:
    """Parse a block of output lines (`LineBlocks`) that follows line number `before`; a line
    over `max_line` bytes is unusable. Blank lines are skipped. Never raises."""
    data = block.data()
    head = K.head_of(_ID_FIELD[kind]) if kind is not InputKind.ITEM_ATTRIBUTES else K.NOTHING
    kinds, spans = K.scan(data, head, max_line)
    bad: list[tuple[int, str]] = []
    if block.overlong:
        bad.append((before + 1, _OVERLONG))
    first = before + 1 + block.overlong
    common_at = np.flatnonzero(kinds == K.COMMON)
    records: list[OutputRecord] = []
    record_at: list[int] = []
    others = np.flatnonzero(kinds >= K.OTHER)
    for i, line_kind, (lo, hi) in zip(
        others.tolist(),
        kinds[others].tolist(),
        spans[others, : K.LINE_HI + 1].tolist(),
        strict=True,
    ):
        if line_kind == K.OVERLONG:
            bad.append((first + i, _OVERLONG))
            continue
        result = parse_output_line(data[lo:hi].tobytes(), kind)
        if isinstance(result, BadLine):
            bad.append((first + i, result.reason))
        else:
            records.append(result)
            record_at.append(i)
    blank = int(np.count_nonzero(kinds == K.BLANK))
    return ParsedBlock(
        count=len(kinds) + block.overlong,
        lines=len(kinds) - blank + block.overlong,
        common=CommonLines(_ID_FIELD[kind], data, spans[common_at]),
        common_at=common_at,
        records=records,
        record_at=np.array(record_at, np.int64),
        bad=bad,
    )


_OVERLONG = "line longer than the line limit"
