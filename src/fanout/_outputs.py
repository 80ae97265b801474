"""Parsing the service's output lines, defensively, and splitting streamed objects into lines.

One output line is a JSON object `{"input": {...}, "output": {...}, "error": null | "..."}`
(reference §2.1, §2.2, §2.5). The parser is strict about what the merge relies on (a string key,
lists of strings, numbers where scores are) and lenient about everything else: any whitespace,
Java-style exponents (`3.773E-4`), a missing `error` (≡ null), unknown keys anywhere. A line it
cannot use becomes a `BadLine` with a short reason; it never raises, whatever the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .records import InputKind

_REASON_CHARS = 120


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
    field = kind.id_field
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
    field = kind.id_field
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


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return tuple(value)


def _numbers(output: dict[str, Any], name: str, count: int) -> tuple[float, ...] | BadLine | None:
    value = output.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return BadLine(f"{name} is not a list of numbers")
    if len(value) != count:
        return BadLine(f"{name} has {len(value)} values for {count} items")
    return tuple(float(x) for x in value)


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a streamed object: its 1-based number and bytes (without `\\n` or `\\r\\n`);
    `overlong` when it was longer than the limit (then `data` is empty)."""

    number: int
    data: bytes
    overlong: bool = False


class LineSplitter:
    """Cuts a stream of chunks into lines, holding at most one line (≤ `max_line` bytes) and one
    chunk at a time; a longer line is skipped and reported as `overlong`."""

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._tail = bytearray()
        self._skipping = False
        self._number = 0

    def feed(self, chunk: bytes) -> list[Line]:
        out: list[Line] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            self._emit(out, chunk[start:end])
            start = end + 1
        rest = chunk[start:]
        if not self._skipping:
            self._tail += rest
            if len(self._tail) > self._max:
                self._skipping = True
                self._tail = bytearray()
        return out

    def finish(self) -> list[Line]:
        """The last line, if the object does not end in a line end."""
        out: list[Line] = []
        if self._tail or self._skipping:
            self._emit(out, b"")
        return out

    def _emit(self, out: list[Line], piece: bytes) -> None:
        self._number += 1
        if self._skipping:
            self._skipping = False
            out.append(Line(self._number, b"", overlong=True))
            return
        if self._tail:
            self._tail += piece
            data = bytes(self._tail)
            self._tail = bytearray()
        else:
            data = piece
        if len(data) > self._max:
            out.append(Line(self._number, b"", overlong=True))
            return
        if data.endswith(b"\r"):
            data = data[:-1]
        out.append(Line(self._number, data))
