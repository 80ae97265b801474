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
