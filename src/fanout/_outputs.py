"""Parsing the service's output lines, defensively, and splitting streamed objects into lines.

One output line is a JSON object `{"input": {...}, "output": {...}, "error": null | "..."}`
(reference §2.1, §2.2, §2.5). The parser is strict about what the merge relies on (a string key,
lists of strings, numbers where scores are) and lenient about everything else: any whitespace,
Java-style exponents (`3.773E-4`), a missing `error` (≡ null), unknown keys anywhere. A line it
cannot use becomes a `BadLine` with a short reason; it never raises, whatever the bytes.

`parse_lines` parses a whole batch. Lines of the common shape, exactly as the service writes
them (`{"input":{"userId":"…"},"output":{"recommendedItems":["…",…],"scores":[…]},"error":null}`,
compact, no escapes, scores optional, `error` null or absent) are checked and kept as byte
ranges of the line (`CommonLines`) instead of Python objects: a few `find`s per line and one
`orjson` call for all the batch's scores, which is what makes the merge fast. Anything else goes
through `parse_output_line`. Both ways accept and reject the same lines and give the same
values (the tests hold them to it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

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


class LineSplitter:
    """Cuts a stream of chunks into lines (without `\n` or `\r\n`), holding at most one line
    (≤ `max_line` bytes) and one chunk at a time. A longer line is skipped and comes out as None.
    `count` is the number of lines given out so far, so the first line of a batch of `n` is line
    `count - n + 1`."""

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._tail = bytearray()
        self._skipping = False
        self.count = 0

    def feed(self, chunk: bytes) -> list[bytes | None]:
        parts: list[bytes | None] = list(chunk.split(b"\n"))
        rest = parts.pop()
        if parts:
            parts[0] = self._join(parts[0])
        if not self._skipping:
            self._tail += rest  # type: ignore[arg-type]
            if len(self._tail) > self._max:
                self._skipping = True
                self._tail = bytearray()
        first = parts[0] if parts else None
        if (
            first is not None
            and len(first) <= self._max
            and not first.endswith(b"\r")
            and len(chunk) <= self._max
            and b"\r" not in chunk
        ):  # the usual case: nothing to drop or trim
            self.count += len(parts)
            return parts
        return self._clean(parts)

    def finish(self) -> list[bytes | None]:
        """The last line, if the object does not end in a line end."""
        if self._tail or self._skipping:
            return self._clean([self._join(b"")])
        return []

    def _join(self, head: bytes | None) -> bytes | None:
        """The line that ends with `head`: the tail carried over plus `head`."""
        if self._skipping:
            self._skipping = False
            return None
        if self._tail:
            assert head is not None
            line = bytes(self._tail) + head
            self._tail = bytearray()
            return line
        return head

    def _clean(self, lines: list[bytes | None]) -> list[bytes | None]:
        self.count += len(lines)
        limit = self._max
        return [
            None
            if line is None or len(line) > limit
            else (line[:-1] if line.endswith(b"\r") else line)
            for line in lines
        ]


# ---------------------------------------------------------------------------------------------
# Whole batches, the common shape kept as byte ranges

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_SCORE_BYTES = b"0123456789.eE+-,"
_CONTROL = bytes(range(32))


@dataclass(slots=True)
class CommonLines:
    """Result lines of the common shape, checked: per line the ID's UTF-8 bytes, the inside of
    `recommendedItems` (`a","b","c`: the items joined by `","`, none empty of quotes), the
    inside of `scores` as the service wrote it (or nothing, for recipes without scores), and the
    line itself. `counts` holds the number of items per line, `values` every score, flat."""

    id_field: str
    scored: bool
    keys: list[bytes] = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)
    scores: list[bytes] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    counts: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    values: F64 = field(default_factory=lambda: np.empty(0, np.float64))

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: list[int]) -> CommonLines:
        """The lines at `index` (in that order)."""
        if len(index) == len(self.keys) and index == list(range(len(index))):
            return self
        at = np.asarray(index, np.int64)
        values = self.values
        if self.scored and len(values):
            sizes = self.counts[at]
            starts = (np.cumsum(self.counts) - self.counts)[at]
            shift = starts - (np.cumsum(sizes) - sizes)
            values = values[np.arange(int(sizes.sum())) + np.repeat(shift, sizes)]
        return CommonLines(
            self.id_field,
            self.scored,
            [self.keys[i] for i in index],
            [self.items[i] for i in index],
            [self.scores[i] for i in index] if self.scored else [],
            [self.raw[i] for i in index],
            self.counts[at],
            values,
        )

    def records(self, kind: InputKind) -> list[OutputRecord]:
        """The same lines as `OutputRecord`s (for a result sink that takes only those)."""
        out: list[OutputRecord] = []
        for line in self.raw:
            record = parse_output_line(line, kind)
            assert isinstance(record, OutputRecord)
            out.append(record)
        return out


@dataclass(slots=True)
class ParsedLines:
    """A batch of lines, parsed. Usable lines are numbered 0… in line order; `common[g]` (g = 0
    with scores, 1 without) holds the common-shape ones, `records` the others; usable line `u`
    is `common[group[u]]` line `index[u]`, or `records[index[u]]` if `group[u]` is 2."""

    lines: int  # non-blank lines
    keys: list[bytes]  # each usable line's ID, UTF-8
    group: npt.NDArray[np.int8]
    index: I64
    common: tuple[CommonLines, CommonLines]
    records: list[OutputRecord]
    bad: list[tuple[int, str]]  # (line number, reason)
    record_at: list[int]  # the usable line of each record


def parse_lines(first: int, lines: list[bytes | None], kind: InputKind) -> ParsedLines:
    """Parse a batch of lines (None: longer than the line limit), the first numbered `first`;
    blank lines are skipped. Never raises."""
    field_name = _ID_FIELD[kind]
    common = (CommonLines(field_name, True), CommonLines(field_name, False))
    found: list[_Candidate] = []
    if kind is not InputKind.ITEM_ATTRIBUTES:
        found, common[0].values = _checked(_candidates(lines, field_name))
    at_common = np.fromiter((entry[0] for entry in found), np.int64, len(found))
    scored = np.fromiter((entry[3] is not None for entry in found), np.bool_, len(found))
    for g, group in enumerate(common):
        mine = (
            found
            if g == 0 and scored.all()
            else [e for e in found if (e[3] is not None) == (g == 0)]
        )
        if not mine:
            continue
        _, group.keys, group.items, scores, group.raw, counts = map(list, zip(*mine, strict=True))
        group.scores = scores if g == 0 else []
        group.counts = np.array(counts, np.int64)

    rest = np.ones(len(lines), np.bool_)
    rest[at_common] = False
    records: list[OutputRecord] = []
    at_record: list[int] = []
    bad: list[tuple[int, str]] = []
    blank = 0
    for i in np.flatnonzero(rest).tolist():
        line = lines[i]
        if line is None:
            bad.append((first + i, "line longer than the line limit"))
        elif not line.strip():
            blank += 1
        else:
            result = parse_output_line(line, kind)
            if isinstance(result, BadLine):
                bad.append((first + i, result.reason))
            else:
                records.append(result)
                at_record.append(i)
    count = len(found) + len(records)
    group_of = np.where(scored, 0, 1).astype(np.int8)
    index = np.empty(len(found), np.int64)
    index[scored] = np.arange(int(scored.sum()))
    index[~scored] = np.arange(int((~scored).sum()))
    keys = [entry[1] for entry in found]
    record_at: list[int] = []
    if records:  # merge the records in by line number
        at = np.concatenate((at_common, np.array(at_record, np.int64)))
        order = np.argsort(at, kind="stable")
        group_of = np.concatenate((group_of, np.full(len(records), 2, np.int8)))[order]
        index = np.concatenate((index, np.arange(len(records))))[order]
        everything = keys + [record.key.encode() for record in records]
        keys = [everything[i] for i in order.tolist()]
        record_at = np.flatnonzero(group_of == 2).tolist()
    assert len(keys) == count
    return ParsedLines(len(lines) - blank, keys, group_of, index, common, records, bad, record_at)


# (index in the batch, key, inside of recommendedItems, inside of scores or None, line, items)
_Candidate = tuple[int, bytes, bytes, bytes | None, bytes, int]


def _candidates(lines: list[bytes | None], field_name: str) -> list[_Candidate]:
    """The lines that look like the common shape; their scores are checked by `_checked`."""
    head = b'{"input":{"' + field_name.encode() + b'":"'
    start = len(head)
    mid = b'"},"output":{"recommendedItems":["'
    after = len(mid)
    scores_at = b'"],"scores":['
    found: list[_Candidate] = []
    for index, line in enumerate(lines):
        if line is None or not line.startswith(head):
            continue
        i = line.find(mid, start)
        if i <= start:
            continue
        if line.endswith(b'},"error":null}'):
            end = len(line) - 15
        elif line.endswith(b"}}"):
            end = len(line) - 2
        else:
            continue
        key = line[start:i]
        if b'"' in key:
            continue
        j = line.find(scores_at, i + after)
        scores: bytes | None
        if j >= 0:  # the scores are all that is left: checked for quotes here, numbers later
            if line[end - 1 : end] != b"]":
                continue
            items, scores = line[i + after : j], line[j + 13 : end - 1]
            if not scores or b'"' in scores:
                continue
        elif line[end - 2 : end] == b'"]':
            items, scores = line[i + after : end - 2], None
        else:
            continue
        # Without escapes, a quote inside the items can only be part of a `","` between two.
        separators = items.count(b'","')
        if items.count(b'"') != 2 * separators:
            continue
        found.append((index, key, items, scores, line, separators + 1))
    if not found:
        return found
    # What the finds cannot see: escapes, control characters, invalid UTF-8. Checked on the
    # whole batch; a batch that has any keeps the lines without.
    text = b"".join([entry[4] for entry in found])
    if b"\\" in text or len(text.translate(None, _CONTROL)) != len(text) or not _utf8(text):
        found = [entry for entry in found if _plain(entry[4])]
    return found


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _plain(line: bytes) -> bool:
    return b"\\" not in line and len(line.translate(None, _CONTROL)) == len(line) and _utf8(line)


def _checked(found: list[_Candidate]) -> tuple[list[_Candidate], F64]:
    """The candidates whose scores are JSON numbers, as many as items, and those scores, flat.
    One orjson call checks the whole batch; if it fails, the lines are checked one by one."""
    scored = [entry for entry in found if entry[3] is not None]
    if not scored:
        return found, np.empty(0, np.float64)
    text = b",".join([entry[3] for entry in scored])  # type: ignore[misc]
    values = _score_list(text)
    same = all(entry[3].count(b",") + 1 == entry[5] for entry in scored)  # type: ignore[union-attr]
    if values is not None and same:
        return found, np.array(values, np.float64)
    kept: list[_Candidate] = []
    pieces: list[list[int | float]] = []
    for entry in found:
        scores = entry[3]
        if scores is not None:
            numbers = _score_list(scores)
            if numbers is None or len(numbers) != entry[5]:
                continue
            pieces.append(numbers)
        kept.append(entry)
    flat = list(itertools.chain.from_iterable(pieces))
    return kept, np.array(flat, np.float64)


def _score_list(text: bytes) -> list[int | float] | None:
    """The numbers of `text` (JSON numbers and commas only), or None."""
    if text.translate(None, _SCORE_BYTES):
        return None
    try:
        values: list[int | float] = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError:
        return None
    return values


def join_flat(lines: CommonLines) -> bytes:
    """The lines as flat JSON lines, `{"<id>":"…","recommendedItems":[…],"scores":[…]}`, built
    from their byte ranges (scores as the service wrote them)."""
    head = b'{"' + lines.id_field.encode() + b'":"'
    middle = b'","recommendedItems":["'
    if lines.scored:
        pieces = zip(
            itertools.repeat(head),
            lines.keys,
            itertools.repeat(middle),
            lines.items,
            itertools.repeat(b'"],"scores":['),
            lines.scores,
            itertools.repeat(b"]}\n"),
        )
    else:
        pieces = zip(
            itertools.repeat(head),
            lines.keys,
            itertools.repeat(middle),
            lines.items,
            itertools.repeat(b'"]}\n'),
        )
    return b"".join(itertools.chain.from_iterable(pieces))
