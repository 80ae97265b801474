"""Validating IDs and encoding them as Personalize input records (JSON lines).

An ID is normalised (stripped) and rejected if it is blank, too long, has a control character or
is not valid UTF-8; a valid one becomes `{"userId":"<ID>"...}\\n` (`_Template`). JSON-lines input
is checked key by key against what the batch job accepts (each item ID of an `itemList` as an
ID is; a line that repeats a key is rejected) and written again canonically (`_JsonRecords`).

The hot path (one ID per line) is one C pass per piece (`_native.encode_lines`, without the
GIL): each line is stripped, checked, JSON-escaped and fingerprinted as it is copied. The few
lines it cannot settle on its own (invalid UTF-8, control characters, too long, non-ASCII
whitespace around the ID) go through the per-line path (`_check_line`), which says exactly why a
line is rejected; the kernel's records are byte-identical to that path's.
"""

from __future__ import annotations

import json
import mmap
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import _ahead, _native
from ._dedupe import _fingerprints_of
from .records import MAX_ITEM_LIST, InputKind, RejectReason

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._dedupe import I64, U64, Bools

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (Unicode's Cc)
# Stripped around an ID: space, tab, CR, LF, the other Unicode spaces (U+00A0, U+1680,
# U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000) and U+FEFF (a byte order mark where
# files were joined). Not the control characters Python also counts as whitespace (U+000B,
# U+000C, U+001C-U+001F, U+0085): an ID with one is rejected, as one with any control
# character, not sent without it.
STRIP = (
    " \t\n\r\u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000\ufeff")
)


class _Blank:
    pass


_BLANK = _Blank()
_Bad = tuple[RejectReason, str]
Check = Callable[[str], str | None]  # why an ID is not acceptable, or None
_Reject = tuple[int, RejectReason, str, bytes | str]  # line in the piece, reason, detail, raw


# ---------------------------------------------------------------------------------------------
# One ID


def _check_id(text: str, limit: int, check: Check | None = None) -> str | _Bad | _Blank:
    """The normalised ID, or why it cannot be sent (`check`: a kind's own rule, e.g. queries)."""
    value = text.strip(STRIP)
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
    if check is not None:
        problem = check(value)
        if problem is not None:
            return (RejectReason.INVALID_QUERY, problem)
    return value


def _decode(raw: bytes) -> str | _Bad:
    """`raw` as text, or why it is not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start + 1}: {exc.reason}")


def _check_line(raw: bytes, limit: int, check: Check | None = None) -> str | _Bad | _Blank:
    """`_check_id` of one line of input."""
    text = _decode(raw)
    return text if isinstance(text, tuple) else _check_id(text, limit, check)


@dataclass(frozen=True, slots=True)
class _Template:
    """The constant parts of a record: `head + json_string(id) + tail`."""

    head: bytes  # b'{"userId":'
    tail: bytes  # b'}\n', or b',"filterValues":{...}}\n'
    prefix: bytes  # head + b'"': before the ID's JSON-escaped UTF-8
    suffix: bytes  # b'"' + tail
    check: Check | None = None  # the kind's own rule for an ID (every line then goes slow)

    @classmethod
    def make(
        cls, id_field: str, filter_values: bytes | None, check: Check | None = None
    ) -> _Template:
        head = b'{"' + id_field.encode() + b'":'
        tail = (b',"filterValues":' + filter_values if filter_values else b"") + b"}\n"
        return cls(head, tail, head + b'"', b'"' + tail, check)

    @property
    def id_span(self) -> tuple[int, int]:
        """(head, tail): `record[head : len(record) - tail]` is the ID as a JSON string."""
        return len(self.head), len(self.tail)

    def record(self, value: str) -> bytes:
        return self.head + orjson.dumps(value) + self.tail


# ---------------------------------------------------------------------------------------------
# A piece of lines, one ID each


@dataclass(slots=True)
class _Core:
    """Encoded candidates (lines of a text piece, or ID fields of CSV/Parquet rows)."""

    data: bytes | memoryview
    ends: I64
    fps: U64
    rec: I64 | None  # candidate index of each record; None: record i is candidate i
    blank: list[int]
    rejects: list[_Reject]
    count: int


class _OutputPool:
    """Output buffers for `_encode_lines` (private anonymous memory, `_ahead.anonymous`), used
    again once nothing refers to them any more.

    Fresh memory costs a page fault (and the kernel zeroing the page) per 4 KiB the first time
    it is written: measured on one thread, encoding 8 MiB of UUIDs took ~20 ms into
    fresh memory and 12-16 ms into memory written before. A batch's records are a view of its
    buffer (as are its ends and fingerprints), handed on to the shard cutter and the part
    writers; when the last view is gone, only the pool refers to the buffer (CPython's
    reference count says so), and the next piece writes into it.

    Memory: the pool keeps at most `KEEP` buffers, each as big as the largest piece needed
    (~7 MB written per 4 MiB piece of UUIDs), resident between pieces. They were all in use at
    once at some point, so this raises the peak only where that moment would otherwise have
    passed unnoticed (measured: 12 kept cost ~15 MiB of peak RSS at 8 MiB pieces, 4 kept
    nothing measurable). A piece that finds none free when the pool is full gets fresh memory.
    The first buffers may come faulted in ahead, while the command imported (`_ahead`).
    """

    KEEP = 8

    def __init__(self) -> None:
        self._buffers: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> mmap.mmap:
        """A buffer of at least `nbytes` that nothing else refers to."""
        with self._lock:
            for index in range(len(self._buffers)):
                buffer = self._buffers[index]
                # References: the list's, `buffer`'s and getrefcount's argument.
                if sys.getrefcount(buffer) == 3:
                    if len(buffer) >= nbytes:
                        return buffer
                    del self._buffers[index]  # too small for pieces like this one: replace it
                    break
            fresh = _ahead.output_buffer(nbytes)
            if fresh is None:
                fresh = _fresh(nbytes)
            if len(self._buffers) < self.KEEP:
                self._buffers.append(fresh)
            return fresh


class _LineGuess:
    """How many lines the next piece of a file holds, at most, from the pieces before it: the
    last one's lines per byte, with `MARGIN` to spare.

    A guess saves `_encode_lines` a pass over the piece to count its lines (`perf` of a 10M-ID
    prepare: 3.7% of its CPU in that pass, most of it loading the piece from memory that the
    encoding pass then loaded again). A guess short of the lines costs more: the encoding stops
    at the first line it has no room for, and starts again after counting. So the guess has
    room for a quarter more lines than the last piece had, and is only made from a piece at
    least `MIN_BYTES` long."""

    MARGIN = _ahead.GUESS_MARGIN
    MIN_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._per_byte = 0.0  # 0: no guess yet

    def lines(self, nbytes: int) -> int | None:
        """The lines a piece of `nbytes` bytes may hold; None if there is no guess yet."""
        if not self._per_byte:
            return None
        return int(nbytes * self._per_byte * self.MARGIN) + 64

    def saw(self, nbytes: int, lines: int) -> None:
        """A piece of `nbytes` held `lines` lines."""
        if nbytes >= self.MIN_BYTES:
            self._per_byte = lines / nbytes


def _encode_lines(
    buf: bytes,
    tpl: _Template,
    limit: int,
    slow: bool = False,
    fingerprint: bool = True,
    pool: _OutputPool | None = None,
    guess: _LineGuess | None = None,
    header: str = "",
) -> _Core:
    """Encode `buf`, one candidate ID per line (`\\r\\n` or `\\n`; the last may have none).

    `_native.encode_lines` does every line in one pass without the GIL: it strips ASCII
    whitespace, and a clean line (valid UTF-8 without control characters, at most `limit`
    characters, no other whitespace around it) becomes `tpl.prefix + ID + tpl.suffix` (`"` and
    `\\` escaped as JSON does) with its fingerprint. The few lines it cannot settle go through
    `_check_line` one by one (`_settle`), which says why a line is rejected; a record made there
    is put in its place. With `slow` every line goes that way (the reference the kernel is
    tested against, and the path for a kind with a rule of its own). Fingerprints are left
    empty unless `fingerprint`. The records and their ends are written into a buffer of `pool`
    if given. The arrays are sized for the lines `guess` says `buf` may hold, if it has a
    guess; else (or if the guess was short) for the lines counted first. A line that is
    `header` (the file's header line, skipped at its start) is rejected: the header again,
    where files were joined with `cat`.
    """
    if not buf:
        return _Core(b"", _NO_INTS, _NO_INTS, None, [], [], 0)
    guessed = guess.lines(len(buf)) if guess is not None else None
    core = _encode_counted(buf, tpl, limit, slow, fingerprint, pool, guessed, header)
    if core is None:  # more lines than guessed
        core = _encode_counted(buf, tpl, limit, slow, fingerprint, pool, None, header)
        assert core is not None  # counted: the arrays have room for every line
    if guess is not None:
        guess.saw(len(buf), core.count)
    return core


def _encode_counted(
    buf: bytes,
    tpl: _Template,
    limit: int,
    slow: bool,
    fingerprint: bool,
    pool: _OutputPool | None,
    count: int | None,
    header: str,
) -> _Core | None:
    """`_encode_lines` with arrays for `count` lines (None: the lines of `buf`, counted
    first); None if `buf` has more."""
    if count is None:
        count = _native.count_lines(buf)
    # The batch's buffer: each record's end and fingerprint, then the records (at most every
    # byte escaped, plus the template around every line and 16 bytes the C code may overrun),
    # then what the kernel writes only for a blank or slow line (8 bytes a line, the spans
    # 16): pages never touched cost nothing. Every part starts at a multiple of 8 bytes.
    room = _ahead.records_room(len(buf), count, len(tpl.prefix) + len(tpl.suffix))
    line = 8 * count
    take = pool.take if pool is not None else _fresh
    space = memoryview(take(room + _ahead.LINE_BYTES * count))
    ends = space[:line]
    fps = space[line : 2 * line] if fingerprint else space[:0]
    out = space[2 * line : 2 * line + room]
    rec, marks = space[2 * line + room :][:line], space[3 * line + room :][:line]
    spans = space[4 * line + room :][: 2 * line]  # two per line: where each slow line is
    counts = _native.encode_lines(
        buf, limit, slow, tpl.prefix, tpl.suffix, header.encode(), out, ends, fps, rec, marks,
        spans,
    )  # fmt: skip
    if counts is None:
        return None
    lines, records, blanks, slows, size = counts
    core = _Core(
        out[:size].toreadonly(),
        ends[: 8 * records].cast("q"),
        fps[: 8 * records].cast("Q") if fingerprint else _NO_INTS,
        None if records == lines else rec[: 8 * records].cast("q"),
        marks[: 8 * blanks].cast("q").tolist(),
        [],
        lines,
    )
    if slows:  # at the back of marks and spans (of `count` entries), the last line first
        first = count - slows
        slow_lines = marks.cast("q")[first:count].tolist()[::-1]
        flat = spans.cast("q")[2 * first : 2 * count].tolist()
        slow_spans = [flat[k : k + 2] for k in range(0, 2 * slows, 2)][::-1]
        _settle(core, buf, tpl, limit, slow_lines, slow_spans, fingerprint, header)
    if core.rec is not None and len(core.rec) == lines:
        core.rec = None
    return core


def _fresh(nbytes: int) -> mmap.mmap:
    return _ahead.anonymous(nbytes)


_NO_INTS = memoryview(b"").cast("q")


def _settle(
    core: _Core,
    buf: bytes,
    tpl: _Template,
    limit: int,
    lines: list[int],
    spans: list[list[int]],
    fingerprint: bool,
    header: str = "",
) -> None:
    """The kernel's slow `lines` (ascending, at `spans` of `buf`) one by one: their records put
    into `core` in line order, their rejects and blanks listed (a line that is `header`, if
    given, among the rejects)."""
    assert core.rec is not None
    kept_lines: list[int] = []
    kept_records: list[bytes] = []
    kept_ids: list[bytes] = []
    for index, (lo, hi) in zip(lines, spans, strict=True):
        raw = buf[lo:hi]
        outcome = _check_line(raw, limit, tpl.check)
        if header and outcome == header:
            detail = f"the header line again ({header!r}): files joined with cat?"
            core.rejects.append((index, RejectReason.WRONG_SHAPE, detail, raw))
        elif isinstance(outcome, str):
            kept_lines.append(index)
            kept_records.append(tpl.record(outcome))
            kept_ids.append(outcome.encode())
        elif isinstance(outcome, tuple):
            core.rejects.append((index, outcome[0], outcome[1], raw))
        else:
            core.blank.append(index)
    core.blank.sort()
    if not kept_lines:
        return
    import numpy as np

    at = np.searchsorted(core.rec, kept_lines)  # each kept line goes before these records
    bounds = np.concatenate(([0], core.ends))
    view = memoryview(core.data)
    parts: list[bytes | memoryview] = []
    done = 0
    for cut, record in zip(bounds[at].tolist(), kept_records, strict=True):
        parts += (view[done:cut], record)
        done = cut
    parts.append(view[done:])
    core.data = b"".join(parts)
    added = np.fromiter(map(len, kept_records), np.int64, len(kept_records))
    core.ends = np.cumsum(np.insert(np.diff(bounds), at, added))
    core.rec = np.insert(core.rec, at, kept_lines)
    if fingerprint:
        core.fps = np.insert(core.fps, at, _fingerprints_of(kept_ids))


def _true_runs(mask: Bools) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first, last): the first and last index of each run of True in `mask`."""
    import numpy as np

    edges = np.diff(mask.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


# ---------------------------------------------------------------------------------------------
# JSON lines


class _JsonRecords:
    """JSON-lines objects as canonical records of one input kind, or why not.

    Allowed keys: the kind's ID field, `itemList` (personalized ranking only, where it is
    required) and `filterValues`, which is merged over the run's `filter_values`. A line that
    would make a record but repeats a key is rejected (`repeats`): a JSON parser keeps only one
    of the values, and the other would be lost without a trace.

    `itemList` is a non-empty list of at most `max_items` item IDs (`--max-item-list`; a longer
    list is rejected as too long), each checked as the ID field is (`_check_id`: blank, control
    characters, over `limit` characters) and, like it, stripped of surrounding whitespace; one
    bad item rejects the line, the detail naming its position
    (`itemList[2]: control character U+0001 at character 2`).
    """

    def __init__(
        self,
        kind: InputKind,
        limit: int,
        filter_values: Mapping[str, str],
        tpl: _Template,
        max_items: int = MAX_ITEM_LIST,
        placeholders: Sequence[str] | None = None,
    ) -> None:
        self.kind = kind
        self.field = kind.id_field
        self.limit = limit
        self.max_items = max_items
        self.filter_values = filter_values
        self.placeholders = placeholders
        self.tpl = tpl
        self.allowed = [self.field]
        if kind is InputKind.RANKING:
            self.allowed.append("itemList")
        self.allowed.append("filterValues")
        # The keys every line that makes a record has, once each: the ID field (and itemList).
        self.required = [b'"' + key.encode() + b'"' for key in self.allowed[:-1]]

    def repeats(
        self, data: bytes, lines: list[bytes], made: list[int], keys: int
    ) -> dict[int, str]:
        """Of the records made from `lines` (`made`: the line of each; `keys`: how many keys
        they have, as `record` counts them), those whose line repeats a key, by position, with
        why (`_repeated_key`); `data`: the lines as read.

        Most pieces are settled whole, by counting. Each key is followed by a colon, so if the
        piece has no more colons than its records have keys, no line that made one repeats a
        key. A line that makes a record has each `required` key and at most `filterValues`
        besides, so none does either if the piece has no `\\u` escape (the only way to spell
        these keys other than as they are), no `"filterValues"`, and each required key in quotes
        once per record. Only other pieces (IDs with a colon and a `\\u` escape, filterValues
        with a colon, keys that are also values) are looked at line by line.
        """
        if data.count(b":") <= keys:
            return {}
        if (
            b"\\u" not in data
            and b'"filterValues"' not in data
            and all(data.count(key) == len(made) for key in self.required)
        ):
            return {}
        found: dict[int, str] = {}
        for position, index in enumerate(made):
            line = lines[index]
            if line.count(b":") > len(self.required):
                why = _repeated_key(line, orjson.loads(line))
                if why is not None:
                    found[position] = why
        return found

    def record(self, obj: object) -> tuple[bytes, bytes, int] | _Bad:
        """One JSON-lines object as a canonical record, its ID's UTF-8 and how many keys it
        has (its own and its filterValues'), or why not."""
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
        checked = _check_id(value, self.limit, self.tpl.check)
        if isinstance(checked, _Blank):
            return (wrong, f"{self.field} is empty")
        if isinstance(checked, tuple):
            return checked
        parts = [self.tpl.head, orjson.dumps(checked)]
        if self.kind is InputKind.RANKING:
            if "itemList" not in obj:
                return (wrong, "missing key 'itemList' (required for personalized ranking)")
            items = obj["itemList"]
            if items is None:
                return (wrong, "itemList is null: it must be a list of item IDs")
            if not isinstance(items, list) or not items:
                return (wrong, "itemList must be a list of one or more item IDs")
            if len(items) > self.max_items:
                return (
                    RejectReason.TOO_LONG,
                    f"itemList has {len(items):,} items, more than {self.max_items:,} "
                    "(--max-item-list)",
                )
            clean = self._items(items)
            if isinstance(clean, tuple):
                return clean
            parts += [b',"itemList":', orjson.dumps(clean)]
        merged = self.filter_values
        keys = len(obj)
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
                why = filter_value_problem(name, spec, self.placeholders)
                if why is not None:
                    return (wrong, f"filterValues[{name!r}]: {why}")
            merged = {**merged, **given}
            keys += len(given)
            if len(merged) > MAX_FILTER_VALUES:
                return (
                    wrong,
                    f"filterValues has {len(merged)} names with the run's --filter-values; the "
                    f"service takes at most {MAX_FILTER_VALUES}",
                )
        if merged:
            parts += [b',"filterValues":', orjson.dumps(merged, option=orjson.OPT_SORT_KEYS)]
        parts.append(b"}\n")
        return b"".join(parts), checked.encode(), keys

    def _items(self, items: list[Any]) -> list[str] | _Bad:
        """The item IDs of a non-empty `itemList` (as JSON gave it), each checked and stripped
        as the ID field is, or why not (naming the first bad item's position)."""
        try:
            joined = "".join(items)
        except TypeError:  # not all strings
            joined = "\x00"
        # Most lists settle at once: printable strings (so no control character, and no
        # whitespace around an item but spaces), none too long or blank.
        if joined.isprintable() and max(map(len, items)) <= self.limit:
            clean: list[str] = [item.strip() for item in items] if " " in joined else items
            if all(clean):
                return clean
        clean = []
        for position, item in enumerate(items):
            where = f"itemList[{position}]"
            if not isinstance(item, str):
                return (
                    RejectReason.WRONG_SHAPE,
                    f"{where} must be a string, not {_json_type(item)}",
                )
            checked = _check_id(item, self.limit)
            if isinstance(checked, _Blank):
                return (RejectReason.WRONG_SHAPE, f"{where} is empty")
            if isinstance(checked, tuple):
                return (checked[0], f"{where}: {checked[1]}")
            clean.append(checked)
        return clean


def _repeated_key(raw: bytes, obj: dict[str, object]) -> str | None:
    """Why `raw`, the JSON text `obj` was parsed from, is refused for repeating a key, or None.

    A parser keeps one value of a repeated key (orjson the last), so `{"userId": "a",
    "userId": "b"}` would lose "a" without a trace. Only the line's object and its
    `filterValues` object are checked: a line with objects anywhere else is refused for its
    shape. Most lines are settled by counting: each key is followed by a colon, so a line with
    no more colons than those objects have keys repeats none. Only a `\\u` escape can spell a
    letter, digit or `_` other than as itself, so a line without one that holds each of those
    keys (if identifiers) in quotes once repeats none of them. The rest (`\\u` escapes, keys
    that are also values or not identifiers) are parsed again by `json`, which shows every
    object's keys to a hook.
    """
    inner = obj.get("filterValues")
    keys = [*obj, *inner] if isinstance(inner, dict) else obj
    if raw.count(b":") <= len(keys):
        return None
    if raw.find(b"\\u") < 0:
        for key in keys:
            if not key.isidentifier() or raw.count(b'"%b"' % key.encode()) != 1:
                break
        else:
            return None
    try:
        top = json.loads(raw, object_pairs_hook=_Keys.of, parse_int=str, parse_float=str)
    except (ValueError, RecursionError):  # orjson read it: json differs only at its limits
        return None
    if not isinstance(top, _Keys):
        return None
    if top.repeated is not None:
        return f"duplicate key {top.repeated!r}"
    for name, value in top.objects:
        if value.repeated is not None:
            return f"duplicate key {value.repeated!r} in {name}"
    return None


@dataclass(frozen=True, slots=True)
class _Keys:
    """What `_repeated_key` makes of a JSON object: its first repeated key, and the objects
    among its values."""

    repeated: str | None
    objects: list[tuple[str, _Keys]]

    @classmethod
    def of(cls, pairs: list[tuple[str, object]]) -> _Keys:
        seen: set[str] = set()
        repeated = None
        for key, _ in pairs:
            if key in seen and repeated is None:
                repeated = key
            seen.add(key)
        objects = [(key, value) for key, value in pairs if isinstance(value, _Keys)]
        return cls(repeated, objects)


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


MAX_FILTER_VALUES = 25  # names in one line's filterValues (reference §1.5)
MAX_FILTER_VALUE = 1000  # characters of one name's value, its quoted values joined
FILTER_NAME = re.compile(r"[A-Za-z0-9_]{1,50}")


def filter_value_problem(name: str, spec: str, placeholders: Sequence[str] | None) -> str | None:
    """Why the service's limits (reference §1.5) or the run's filter would not take filter value
    `name` with `spec` (its double-quoted values joined), or None: the name is a placeholder's,
    without `$`, of 1-50 letters, digits or `_`; the value at most 1000 characters; and with
    `placeholders` known (the filter's, `()` for a run without one), one of them, as cased."""
    if not FILTER_NAME.fullmatch(name):
        return "a name is the placeholder's without $: 1 to 50 letters, digits or _"
    if len(spec) > MAX_FILTER_VALUE:
        return f"its value is {len(spec):,} characters; the service takes {MAX_FILTER_VALUE:,}"
    if placeholders is not None and name not in placeholders:
        if not placeholders:
            return "the run has no filter (--filter-arn), so the job would ignore it"
        have = ", ".join(f"${p}" for p in placeholders)
        return f"the filter has no ${name} placeholder (it has {have}; names are case-sensitive)"
    return None


def _filter_value_ok(spec: object) -> bool:
    """The service's filter value format: one or more double-quoted values, comma separated."""
    if not isinstance(spec, str):
        return False
    try:
        values = orjson.loads("[" + spec + "]")
    except orjson.JSONDecodeError:
        return False
    return bool(values) and all(isinstance(value, str) for value in values)
