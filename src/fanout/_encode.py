"""Validating IDs and encoding them as Personalize input records (JSON lines).

An ID is normalised (stripped) and rejected if it is blank, too long, has a control character or
is not valid UTF-8; a valid one becomes `{"userId":"<ID>"...}\\n` (`_Template`). JSON-lines input
is checked key by key against what the batch job accepts and written again canonically
(`_JsonRecords`).

The hot path (one ID per line) is vectorised per piece: a piece whose lines are all clean (valid
UTF-8, no control characters, quotes or backslashes, no surrounding whitespace, none blank or too
long) is encoded with one `bytes.replace` and fingerprinted with numpy; only the lines that fail
those checks go through the per-line path, which gives byte-identical results for clean lines.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from ._dedupe import I64, U64, Bools, _fingerprints, _fingerprints_fixed, _fingerprints_of
from .records import InputKind, RejectReason

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
Check = Callable[[str], str | None]  # why an ID is not acceptable, or None
_Reject = tuple[int, RejectReason, str, bytes | str]  # line in the piece, reason, detail, raw


# ---------------------------------------------------------------------------------------------
# One ID


def _check_id(text: str, limit: int, check: Check | None = None) -> str | _Bad | _Blank:
    """The normalised ID, or why it cannot be sent (`check`: a kind's own rule, e.g. queries)."""
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
    prefix: bytes  # head + b'"': before an ID that needs no escaping
    suffix: bytes  # b'"' + tail
    sep: bytes  # suffix + prefix: what each inner line end becomes
    extra: int  # bytes a record has more than its input line (which ends in b"\n")
    check: Check | None = None  # the kind's own rule for an ID (every line then goes slow)

    @classmethod
    def make(
        cls, id_field: str, filter_values: bytes | None, check: Check | None = None
    ) -> _Template:
        head = b'{"' + id_field.encode() + b'":'
        tail = (b',"filterValues":' + filter_values if filter_values else b"") + b"}\n"
        prefix, suffix = head + b'"', b'"' + tail
        extra = len(prefix) + len(suffix) - 1
        return cls(head, tail, prefix, suffix, suffix + prefix, extra, check)

    @property
    def id_span(self) -> tuple[int, int]:
        """(head, tail): `record[head : len(record) - tail]` is the ID as a JSON string."""
        return len(self.head), len(self.tail)

    def record(self, value: str) -> bytes:
        return self.head + orjson.dumps(value) + self.tail

    def run(self, lines: bytes) -> bytes:
        """Encode clean lines (each ending in b"\\n") in one pass."""
        body = lines.replace(b"\n", self.sep)
        return b"".join((self.prefix, memoryview(body)[: len(body) - len(self.prefix)]))


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


def _encode_lines(
    buf: bytes,
    tpl: _Template,
    limit: int,
    slow: bool = False,
    fingerprint: bool = True,
) -> _Core:
    """Encode `buf`, one candidate ID per line; clean lines vectorised, others one by one.
    Fingerprints are left empty unless `fingerprint`."""
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
    if plain:
        grid = _line_grid(buf, arr)
        if grid is not None and int(grid[:, :first].min()) >= 32 and b"\x7f" not in buf:
            stride = step  # fixed-width lines of printable ASCII
    if stride:
        count = len(buf) // step
        if not slow and first <= limit and not _fixed_bad(buf, arr, step):
            size = step + tpl.extra
            fixed = _encode_fixed(buf, stride, count, tpl)
            ends = np.arange(size, size * count + 1, size, dtype=np.int64)
            if fingerprint:
                fps = _fingerprints_fixed(buf, 0, step, first, count)
            else:
                fps = np.empty(0, np.uint64)
            return _Core(fixed, ends, fps, None, [], [], count)
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


def _line_grid(buf: bytes, arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
    """`arr` (the bytes of `buf`) as one row per line, if its lines are non-empty and all of one
    width (each row ends in b"\\n")."""
    first = buf.find(b"\n")
    step = first + 1
    if first <= 0 or len(buf) % step:
        return None
    grid = arr.reshape(-1, step)
    return grid if bool((grid[:, first] == 10).all()) else None


def _encode_fixed(buf: bytes, stride: int, count: int, tpl: _Template) -> memoryview:
    """`tpl.run(buf)` for clean lines that are all `stride - 1` bytes long, GIL-free.

    The records are built in place in fresh numpy memory and handed on as a view of it, not
    copied into `bytes`: numpy asks for huge pages for large arrays, so the fresh memory costs a
    few page faults where a `bytes` copy of it cost one per 4 KiB (and a pass over the data).
    """
    size = stride - 1
    prefix, suffix = len(tpl.prefix), len(tpl.suffix)
    layout = np.dtype([("p", f"V{prefix}"), ("id", f"V{size}"), ("s", f"V{suffix}")])
    space = np.empty(count * layout.itemsize, np.uint8)
    out = space.view(layout)
    out["p"] = np.frombuffer(tpl.prefix, f"V{prefix}")[0]
    out["id"] = np.ndarray((count,), f"V{size}", buffer=buf, strides=(stride,))  # no copy
    out["s"] = np.frombuffer(tpl.suffix, f"V{suffix}")[0]
    space.flags.writeable = False
    return space.data


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
        outcome = _check_line(raw, limit, tpl.check)
        if isinstance(outcome, str):
            kept_bad.append(index)
            kept_records.append(tpl.record(outcome))
            kept_ids.append(outcome.encode())
        elif isinstance(outcome, tuple):
            rejects.append((index, outcome[0], outcome[1], raw))
        else:
            blank.append(index)
    good = ~bad
    run_first, run_last = _true_runs(good)
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


def _true_runs(mask: Bools) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first, last): the first and last index of each run of True in `mask`."""
    edges = np.diff(mask.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


# ---------------------------------------------------------------------------------------------
# JSON lines


class _JsonRecords:
    """JSON-lines objects as canonical records of one input kind, or why not.

    Allowed keys: the kind's ID field, `itemList` (personalized ranking only, where it is
    required) and `filterValues`, which is merged over the run's `filter_values`.
    """

    def __init__(
        self, kind: InputKind, limit: int, filter_values: Mapping[str, str], tpl: _Template
    ) -> None:
        self.kind = kind
        self.field = kind.id_field
        self.limit = limit
        self.filter_values = filter_values
        self.tpl = tpl
        self.allowed = [self.field]
        if kind is InputKind.RANKING:
            self.allowed.append("itemList")
        self.allowed.append("filterValues")

    def record(self, obj: object) -> tuple[bytes, bytes] | _Bad:
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
        checked = _check_id(value, self.limit, self.tpl.check)
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
