"""Temporary, while numba goes: the merge's kernels as they were in numba, for
`test_mergenative_parity` only (fanout now runs `_mergenative`).

The merge's compiled kernels (`fanout._jit`): checking output lines of the common shape,
fingerprinting and spilling IDs, reconciling exactly, and building what is written (JSON lines,
Arrow buffers) from byte ranges, without a Python object per line.

A block is whole lines of one output object (`\n`-separated, a final `\r` dropped). `scan`
sorts each line into blank, common, other (left to `_outputs.parse_output_line`) or overlong,
and for a common line records where its parts are (the `LINE_LO` … `COUNT` columns of one
int64 row):

    {"input":{"<id field>":"ID"},"output":{"recommendedItems":["I1",…,"In"],"scores":[S1,…,Sn]}
    …followed by `}` or `,"error":null}`; `scores` may be absent.

A common line has no escapes, no control characters and valid UTF-8 in its ID and items, at
least one item, and exactly as many scores (JSON numbers) as items. The kernel is strict where
`parse_output_line` is lenient, never the other way: numbers it cannot be sure orjson reads the
same way (over 18 integer digits, 3-digit exponents) make the line "other", so both ways always
agree on what a line says (the tests hold them to it).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fanout._jit import kernel

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

BLANK, COMMON, OTHER, OVERLONG = 0, 1, 2, 3

# Columns of a span row: the line; the ID; the inside of recommendedItems' quotes (`I1","I2`);
# the inside of scores' brackets (-1, -1 without scores); the number of items.
LINE_LO, LINE_HI, ID_LO, ID_HI, ITEMS_LO, ITEMS_HI, SCORES_LO, SCORES_HI, COUNT = range(9)
SPAN_COLUMNS = 9


def as_array(text: str) -> U8:
    """`text`'s UTF-8 as an array, for the kernels."""
    return np.frombuffer(text.encode(), np.uint8).copy()


MID = as_array('"},"output":{"recommendedItems":["')
SCORES_KEY = as_array(',"scores":[')
ERROR_NULL = as_array(',"error":null}')
NOTHING = as_array("")  # the head for output lines that never have the common shape


def head_of(id_field: str) -> U8:
    """The start of a common line: `{"input":{"<id field>":"`."""
    return as_array('{"input":{"' + id_field + '":"')


@kernel
def _at(data: U8, p: int, end: int, pattern: U8) -> bool:
    if p + len(pattern) > end:
        return False
    for k in range(len(pattern)):  # noqa: SIM110 - a generator is not compiled as well
        if data[p + k] != pattern[k]:
            return False
    return True


@kernel
def _put(out: U8, p: int, source: U8, lo: int, hi: int) -> int:
    out[p : p + hi - lo] = source[lo:hi]
    return p + hi - lo


# Byte classes inside a JSON string: plain ASCII, the closing quote, not allowed unescaped (a
# control character) or an escape (not handled here), and the bytes of non-ASCII characters.
_PLAIN, _QUOTE, _STOP, _HIGH = 0, 1, 2, 3
_CLASS = np.zeros(256, np.uint8)
_CLASS[:32] = _STOP
_CLASS[92] = _STOP
_CLASS[34] = _QUOTE
_CLASS[128:] = _HIGH


@kernel
def joined(head: U8, body: U8, end: int) -> U8:
    """`head` followed by `body[:end]`, as a new array."""
    out = np.empty(len(head) + end, np.uint8)
    out[: len(head)] = head
    out[len(head) :] = body[:end]
    return out


@kernel
def _string_end(data: U8, p: int, end: int) -> tuple[int, bool]:
    """Where the string starting at `p` (after its opening quote) ends (its closing quote), and
    whether it has a non-ASCII byte; -1 for a control character, a backslash or no end."""
    high = False
    while p < end:
        c = _CLASS[data[p]]
        if c != _PLAIN:
            if c == _QUOTE:
                return p, high
            if c == _STOP:
                return -1, high
            high = True
        p += 1
    return -1, high


@kernel
def _utf8(data: U8, p: int, end: int) -> bool:
    """Whether `data[p:end]` is valid UTF-8 (no overlong forms, surrogates or values past
    U+10FFFF)."""
    while p < end:
        c = data[p]
        if c < 0x80:
            p += 1
            continue
        if 0xC2 <= c <= 0xDF:
            size, low, high = 2, 0x80, 0xBF
        elif c == 0xE0:
            size, low, high = 3, 0xA0, 0xBF
        elif c == 0xED:
            size, low, high = 3, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            size, low, high = 3, 0x80, 0xBF
        elif c == 0xF0:
            size, low, high = 4, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            size, low, high = 4, 0x80, 0xBF
        elif c == 0xF4:
            size, low, high = 4, 0x80, 0x8F
        else:
            return False
        if p + size > end or not low <= data[p + 1] <= high:
            return False
        for k in range(2, size):
            if not 0x80 <= data[p + k] <= 0xBF:
                return False
        p += size
    return True


@kernel
def _blank(data: U8, p: int, end: int) -> bool:
    """Whether the line is empty after `bytes.strip()` (ASCII whitespace)."""
    while p < end:
        c = data[p]
        if not (c == 32 or 9 <= c <= 13):
            return False
        p += 1
    return True


@kernel
def _items_end(data: U8, p: int, end: int) -> tuple[int, int]:
    """Where the list of strings whose first one starts at `p` (after its quote) ends (the
    quote of the last one, followed by `]`), and how many strings it has; -1 if anything but
    plain strings joined by `","` comes first (an escape, a control character, invalid
    UTF-8)."""
    start = p
    high = False
    count = 1
    while p < end:
        c = _CLASS[data[p]]
        if c == _PLAIN:
            p += 1
        elif c == _HIGH:
            high = True
            p += 1
        elif c == _STOP or p + 2 >= end:
            return -1, 0
        elif data[p + 1] == 93:  # "]
            return (p if not high or _utf8(data, start, p) else -1), count
        elif data[p + 1] == 44 and data[p + 2] == 34:  # ","
            p += 3
            count += 1
        else:
            return -1, 0
    return -1, 0


@kernel
def _scores_end(data: U8, p: int, end: int, count: int) -> int:
    """Where the list of `count` JSON numbers starting at `p` ends (its `]`); -1 if it is not
    that, or has a number orjson might not read as a finite double (over 18 integer digits, a
    3-digit exponent). One function, not one call per number: this is the hottest loop."""
    numbers = 0
    while p < end:
        if data[p] == 45:  # -
            p += 1
        q = p
        if q < end and data[q] == 48:  # a leading 0 stands alone
            q += 1
        else:
            while q < end and ((data[q] - 48) & 0xFF) <= 9:
                q += 1
            if q == p or q - p > 18:
                return -1
        if q < end and data[q] == 46:  # .
            q += 1
            digits = q
            while q < end and ((data[q] - 48) & 0xFF) <= 9:
                q += 1
            if q == digits:
                return -1
        if q < end and (data[q] | 32) == 101:  # e E
            q += 1
            if q < end and (data[q] == 43 or data[q] == 45):
                q += 1
            digits = q
            while q < end and ((data[q] - 48) & 0xFF) <= 9:
                q += 1
            if q == digits or q - digits > 2:
                return -1
        numbers += 1
        if q >= end:
            return -1
        if data[q] == 93:  # ]
            return q if numbers == count else -1
        if data[q] != 44 or numbers == count:
            return -1
        p = q + 1
    return -1


@kernel
def _common(data: U8, s: int, end: int, head: U8, row: I64) -> int:
    """If the line starting at `s` has the common shape, where it ends (its `\n`, `\r\n` or
    `end`), with `row` filled in; -1 otherwise. Nothing it accepts spans a line end."""
    if len(head) == 0 or not _at(data, s, end, head):
        return -1
    p = s + len(head)
    id_hi, high = _string_end(data, p, end)
    if id_hi <= p or (high and not _utf8(data, p, id_hi)):
        return -1
    row[ID_LO], row[ID_HI] = p, id_hi
    if not _at(data, id_hi, end, MID):
        return -1
    p = id_hi + len(MID)
    row[ITEMS_LO] = p
    items, count = _items_end(data, p, end)
    if items < 0:
        return -1
    row[ITEMS_HI] = items
    row[COUNT] = count
    p = items + 2
    row[SCORES_LO] = row[SCORES_HI] = -1
    if _at(data, p, end, SCORES_KEY):
        p += len(SCORES_KEY)
        row[SCORES_LO] = p
        p = _scores_end(data, p, end, count)
        if p < 0:
            return -1
        row[SCORES_HI] = p
        p += 1
    if p >= end or data[p] != 125:  # } closing "output"
        return -1
    p += 1
    if p < end and data[p] == 125:
        p += 1
    elif _at(data, p, end, ERROR_NULL):
        p += len(ERROR_NULL)
    else:
        return -1
    if p == end or data[p] == 10:
        return p
    if data[p] == 13 and (p + 1 == end or data[p + 1] == 10):
        return p
    return -1


@kernel
def scan(data: U8, head: U8, max_line: int) -> tuple[U8, I64]:
    """Each line's kind (`BLANK`, `COMMON`, `OTHER`, `OVERLONG`) and span row. A line is
    overlong when it has more than `max_line` bytes (its `\r` included)."""
    n = 0
    for i in range(len(data)):
        n += data[i] == 10
    if len(data) and data[len(data) - 1] != 10:
        n += 1
    kinds = np.empty(n, np.uint8)
    spans = np.empty((n, SPAN_COLUMNS), np.int64)
    size = len(data)
    s = 0
    for i in range(n):
        row = spans[i]
        e = _common(data, s, size, head, row)
        if e >= 0:
            kinds[i] = COMMON
            full = e + 1 if e < size and data[e] == 13 else e  # the \r counts for the limit
        else:
            row[:] = -1
            full = s
            while full < size and data[full] != 10:
                full += 1
            e = full - 1 if full > s and data[full - 1] == 13 else full
            kinds[i] = BLANK if _blank(data, s, e) else OTHER
        if full - s > max_line:
            kinds[i] = OVERLONG
        row[LINE_LO], row[LINE_HI] = s, e
        s = full + 1
    return kinds, spans


@kernel
def scan_sent(data: U8, head: U8) -> tuple[int, I64, I64]:
    """The IDs of a block of input lines as prepare writes them (`{"<id field>":"ID"}`, no
    escapes, no control characters, valid UTF-8; blank lines skipped): (the number of lines, ID
    starts, ID ends). Any other line stops the scan: the number of lines is then -1."""
    n = 1
    for i in range(len(data)):
        if data[i] == 10:
            n += 1
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    lines = found = s = 0
    while s < len(data):
        e = s
        while e < len(data) and data[e] != 10:
            e += 1
        following = e + 1
        lines += 1
        if e > s and data[e - 1] == 13:
            e -= 1
        if not _blank(data, s, e):
            if not _at(data, s, e, head):
                return -1, lo[:0], hi[:0]
            p = s + len(head)
            q, high = _string_end(data, p, e)
            if q <= p or q + 2 != e or data[q + 1] != 125 or (high and not _utf8(data, p, q)):
                return -1, lo[:0], hi[:0]
            lo[found], hi[found] = p, q
            found += 1
        s = following
    return lines, lo[:found], hi[:found]


@kernel
def _hash(data: U8, lo: int, hi: int) -> np.uint64:
    """A 64-bit fingerprint of `data[lo:hi]`: FNV-1a, then murmur3's finaliser."""
    h = np.uint64(0xCBF29CE484222325)
    for p in range(lo, hi):
        h = (h ^ np.uint64(data[p])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@kernel
def fingerprints(data: U8, lo: I64, hi: I64, mask: np.uint64) -> U64:
    """The fingerprint (`_hash`) of each `data[lo[i]:hi[i]]`, keeping the bits of `mask` (all
    of them but in tests, which make collisions common)."""
    out = np.empty(len(lo), np.uint64)
    for i in range(len(lo)):
        out[i] = _hash(data, lo[i], hi[i]) & mask
    return out


@kernel
def partitioned(
    data: U8, lo: I64, hi: I64, tags: U8, parts: I64, partitions: int
) -> tuple[U8, I64]:
    """Records `<tag>"<data[lo:hi]>"\n` (no tag byte where the tag is 0), ordered by partition
    (stable): the bytes, and where each partition's records start (`partitions + 1` bounds)."""
    bounds = np.zeros(partitions + 1, np.int64)
    for i in range(len(lo)):
        bounds[parts[i] + 1] += hi[i] - lo[i] + 3 + (1 if tags[i] else 0)
    for k in range(partitions):
        bounds[k + 1] += bounds[k]
    at = bounds[:-1].copy()
    out = np.empty(bounds[partitions], np.uint8)
    for i in range(len(lo)):
        p = at[parts[i]]
        if tags[i]:
            out[p] = tags[i]
            p += 1
        out[p] = 34
        p += 1
        size = hi[i] - lo[i]
        out[p : p + size] = data[lo[i] : hi[i]]
        p += size
        out[p] = 34
        out[p + 1] = 10
        at[parts[i]] = p + 2
    return out, bounds


@kernel
def flat_lines(data: U8, spans: I64, head: U8, middle: U8) -> U8:
    """The lines as flat JSON lines: `head` ID `middle` items `"]` [`,"scores":[` scores `]`]
    `}\n` (with head `{"userId":"`, middle `","recommendedItems":["`)."""
    size = 0
    for i in range(len(spans)):
        r = spans[i]
        size += len(head) + r[ID_HI] - r[ID_LO] + len(middle) + r[ITEMS_HI] - r[ITEMS_LO] + 4
        if r[SCORES_LO] >= 0:
            size += len(SCORES_KEY) + r[SCORES_HI] - r[SCORES_LO] + 1
    out = np.empty(size, np.uint8)
    p = 0
    for i in range(len(spans)):
        r = spans[i]
        p = _put(out, p, head, 0, len(head))
        p = _put(out, p, data, r[ID_LO], r[ID_HI])
        p = _put(out, p, middle, 0, len(middle))
        p = _put(out, p, data, r[ITEMS_LO], r[ITEMS_HI])
        out[p] = 34  # "
        out[p + 1] = 93  # ]
        p += 2
        if r[SCORES_LO] >= 0:
            p = _put(out, p, SCORES_KEY, 0, len(SCORES_KEY))
            p = _put(out, p, data, r[SCORES_LO], r[SCORES_HI])
            out[p] = 93
            p += 1
        out[p] = 125  # }
        out[p + 1] = 10
        p += 2
    return out


@kernel
def joined_lines(data: U8, spans: I64) -> U8:
    """The lines themselves, each followed by `\n`."""
    size = 0
    for i in range(len(spans)):
        size += spans[i, LINE_HI] - spans[i, LINE_LO] + 1
    out = np.empty(size, np.uint8)
    p = 0
    for i in range(len(spans)):
        lo, hi = spans[i, LINE_LO], spans[i, LINE_HI]
        out[p : p + hi - lo] = data[lo:hi]
        p += hi - lo
        out[p] = 10
        p += 1
    return out


# A held line (`--order input`, `merge.OrderedLines`): a header of HELD_HEADER bytes, little-endian:
# its input position (8 bytes), the line's length (4), then 7 × 4 bytes: ID_LO … SCORES_HI as
# offsets into the line (-1 stays -1) and COUNT (-1: not of the common shape); then the line.
HELD_HEADER = 40


@kernel
def _put_le(out: U8, p: int, value: int, size: int) -> None:
    for k in range(size):
        out[p + k] = (value >> (8 * k)) & 255


@kernel
def _get_le(data: U8, p: int, size: int) -> int:
    value = 0
    for k in range(size - 1, -1, -1):
        value = (value << 8) | data[p + k]
    if size == 4 and value >= 2**31:  # a signed 32-bit value
        value -= 2**32
    return value


@kernel
def held(data: U8, spans: I64, positions: I64, span: int, files: int) -> tuple[U8, I64]:
    """The lines of `spans` (rows as `scan` gives them; COUNT -1 for a line not of the common
    shape) as held lines, each led by its header, ordered by file (`position // span`,
    stable): the bytes, and where each file's lines start (`files + 1` bounds)."""
    bounds = np.zeros(files + 1, np.int64)
    for i in range(len(spans)):
        bounds[positions[i] // span + 1] += HELD_HEADER + spans[i, LINE_HI] - spans[i, LINE_LO]
    for k in range(files):
        bounds[k + 1] += bounds[k]
    at = bounds[:-1].copy()
    out = np.empty(bounds[files], np.uint8)
    for i in range(len(spans)):
        file = positions[i] // span
        p = at[file]
        lo, hi = spans[i, LINE_LO], spans[i, LINE_HI]
        _put_le(out, p, positions[i], 8)
        _put_le(out, p + 8, hi - lo, 4)
        for c in range(ID_LO, COUNT):
            _put_le(out, p + 12 + 4 * (c - ID_LO), spans[i, c] - lo if spans[i, c] >= 0 else -1, 4)
        _put_le(out, p + 36, spans[i, COUNT], 4)
        p += HELD_HEADER
        out[p : p + hi - lo] = data[lo:hi]
        at[file] = p + hi - lo
    return out, bounds


@kernel
def unheld(records: U8) -> tuple[I64, I64, int]:
    """The held lines in `records` (as `held` writes them): each one's position, its span row
    (offsets into `records`), and how many bytes the whole, sound lines take (the rest is a
    line cut short, or damage: no span reaches outside its line)."""
    count = 0
    p = 0
    while p + HELD_HEADER <= len(records):
        size = _get_le(records, p + 8, 4)
        if size < 0 or p + HELD_HEADER + size > len(records):
            break
        count += 1
        p += HELD_HEADER + size
    positions = np.empty(count, np.int64)
    spans = np.empty((count, SPAN_COLUMNS), np.int64)
    p = 0
    for i in range(count):
        positions[i] = _get_le(records, p, 8)
        lo = p + HELD_HEADER
        size = _get_le(records, p + 8, 4)
        spans[i, LINE_LO] = lo
        spans[i, LINE_HI] = lo + size
        for c in range(ID_LO, COUNT):
            offset = _get_le(records, p + 12 + 4 * (c - ID_LO), 4)
            if offset < -1 or offset > size:  # damaged: never a range outside the line
                return positions[:i], spans[:i], p
            spans[i, c] = lo + offset if offset >= 0 else -1
        spans[i, COUNT] = _get_le(records, p + 36, 4)
        if spans[i, COUNT] < -1 or positions[i] < 0:
            return positions[:i], spans[:i], p
        p = spans[i, LINE_HI]
    return positions, spans, p


_POWERS = np.array([10.0**k for k in range(23)])  # exact as doubles


@kernel
def _number(data: U8, p: int, end: int) -> float:
    """The JSON number `data[p:end]` as a double, if the fast exact way can read it (at most
    15 digits, so below 2**53, scaled by 10**k with |k| ≤ 22: one correctly rounded
    multiplication or division); NaN if not."""
    negative = data[p] == 45
    if negative:
        p += 1
    mantissa = 0
    digits = 0
    scale = 0
    while p < end and ((data[p] - 48) & 0xFF) <= 9:
        mantissa = mantissa * 10 + (data[p] - 48)
        digits += 1
        p += 1
    if p < end and data[p] == 46:
        p += 1
        while p < end and ((data[p] - 48) & 0xFF) <= 9:
            mantissa = mantissa * 10 + (data[p] - 48)
            digits += 1
            scale -= 1
            p += 1
    if p < end:  # an exponent (the number was checked by _scores_end)
        p += 1
        sign = 1
        if data[p] == 45 or data[p] == 43:
            sign = -1 if data[p] == 45 else 1
            p += 1
        exponent = 0
        while p < end:
            exponent = exponent * 10 + (data[p] - 48)
            p += 1
        scale += sign * exponent
    if digits > 15 or scale < -22 or scale > 22:  # (15 digits: below 2**53, no overflow)
        return math.nan
    value = float(mantissa)
    value = value * float(_POWERS[scale]) if scale >= 0 else value / float(_POWERS[-scale])
    return -value if negative else value


@kernel
def columns(data: U8, spans: I64) -> tuple[U8, I32, U8, I32, I32, F64, I64, I32]:
    """Arrow-ready buffers: the IDs (bytes, offsets); the items (bytes, offsets, and per line the
    offsets of its items); the scores (values, where the fast way could not read one: `slow`
    holds the start of its text and NaN stands in, and per line the offsets of its scores; a
    line without scores has none)."""
    n = len(spans)
    id_size = item_size = items = scores = 0
    for i in range(n):
        r = spans[i]
        id_size += r[ID_HI] - r[ID_LO]
        item_size += r[ITEMS_HI] - r[ITEMS_LO]
        items += r[COUNT]
        if r[SCORES_LO] >= 0:
            scores += r[COUNT]
    id_data = np.empty(id_size, np.uint8)
    id_offsets = np.zeros(n + 1, np.int32)
    item_data = np.empty(item_size, np.uint8)
    item_offsets = np.zeros(items + 1, np.int32)
    item_lists = np.zeros(n + 1, np.int32)
    values = np.empty(scores, np.float64)
    slow = np.empty(scores, np.int64)
    slow_count = 0
    score_lists = np.zeros(n + 1, np.int32)
    ip = it = ix = sx = 0
    for i in range(n):
        r = spans[i]
        ip = _put(id_data, ip, data, r[ID_LO], r[ID_HI])
        id_offsets[i + 1] = ip
        p = r[ITEMS_LO]
        while True:  # items are joined by `","`, and no other quote is inside them
            q = p
            while q < r[ITEMS_HI] and data[q] != 34:
                item_data[it] = data[q]
                it += 1
                q += 1
            ix += 1
            item_offsets[ix] = it
            if q >= r[ITEMS_HI]:
                break
            p = q + 3
        item_lists[i + 1] = ix
        if r[SCORES_LO] >= 0:
            p = r[SCORES_LO]
            while True:
                q = p
                while q < r[SCORES_HI] and data[q] != 44:
                    q += 1
                value = _number(data, p, q)
                if np.isnan(value):
                    slow[slow_count] = p
                    slow_count += 1
                values[sx] = value
                sx += 1
                if q >= r[SCORES_HI]:
                    break
                p = q + 1
        score_lists[i + 1] = sx
    return (
        id_data,
        id_offsets,
        item_data,
        item_offsets,
        item_lists,
        values,
        slow[:slow_count],
        score_lists,
    )


@kernel
def route(sent: U64, written: U8, fps: U64, tags: U8) -> tuple[U8, I64]:
    """Each of `fps`, in turn: its tag, and its index in the sorted `sent` (where it would go).
    The tag is `tags[0]` for the first line of a sent fingerprint not yet `written` (which it
    then marks), `tags[1]` for a sent one already written, `tags[2]` for one never sent."""
    out = np.empty(len(fps), np.uint8)
    where = np.searchsorted(sent, fps)
    for i in range(len(fps)):
        w = where[i]
        if w < len(sent) and sent[w] == fps[i]:
            if written[w] == 0:
                written[w] = 1
                out[i] = tags[0]
            else:
                out[i] = tags[1]
        else:
            out[i] = tags[2]
    return out, where


# What `reconcile` counts, in this order.
RECONCILED = (
    "results",
    "errors",
    "missing",
    "unexpected",
    "duplicated_in_output",
    "collisions",
    "sent",
)


@kernel
def _records(data: U8, tagged: bool) -> tuple[I64, I64, U8]:
    """The records of a spill (`partitioned`): where each ID starts and ends, and its tag."""
    n = 0
    for i in range(len(data)):
        n += data[i] == 10
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    tags = np.zeros(n, np.uint8)
    s = 0
    for i in range(n):
        if tagged:
            tags[i] = data[s]
            s += 1
        e = s
        while data[e] != 10:
            e += 1
        lo[i], hi[i] = s + 1, e - 1  # inside the quotes
        s = e + 1
    return lo, hi, tags


@kernel
def _same(a: U8, a_lo: int, a_hi: int, b: U8, b_lo: int, b_hi: int) -> bool:
    if a_hi - a_lo != b_hi - b_lo:
        return False
    for k in range(a_hi - a_lo):  # noqa: SIM110 - a generator is not compiled as well
        if a[a_lo + k] != b[b_lo + k]:
            return False
    return True


@kernel
def reconcile(sent: U8, out: U8, written: U8, mask: np.uint64) -> tuple[I64, I64, I64]:
    """Match the spilled output IDs (`out`, tagged) against the spilled sent IDs (`sent`),
    exactly: through a hash table of the distinct sent IDs, by fingerprint, then byte for byte.
    Returns the counts (`RECONCILED`) and where the missing sent IDs are in `sent` (inside their
    quotes). `written` holds the tags of lines that were written (results and errors); `mask`
    as for `fingerprints`. A sent ID counts as a result if a line with exactly its ID was
    written as a result, else as an error if one was written as an error, else as missing."""
    s_lo, s_hi, _ = _records(sent, False)
    o_lo, o_hi, o_tags = _records(out, True)
    ns = len(s_lo)
    size = 16
    while size < 2 * ns:
        size *= 2
    slots = np.full(size, -1, np.int64)  # a distinct sent ID's entry, by fingerprint
    fps = np.empty(ns, np.uint64)
    counts = np.zeros(len(RECONCILED), np.int64)
    for i in range(ns):
        fp = fps[i] = _hash(sent, s_lo[i], s_hi[i]) & mask
        h = fp & np.uint64(size - 1)
        while True:
            j = slots[h]
            if j < 0:
                slots[h] = i
                counts[6] += 1
                break
            if fps[j] == fp and _same(sent, s_lo[j], s_hi[j], sent, s_lo[i], s_hi[i]):
                break  # sent twice
            h = (h + np.uint64(1)) & np.uint64(size - 1)
    lines = np.zeros(ns, np.int64)  # by the entry of a distinct sent ID: its output lines,
    result = np.zeros(ns, np.bool_)  # and whether one was written as a result / an error
    error = np.zeros(ns, np.bool_)
    for k in range(len(o_lo)):
        fp = _hash(out, o_lo[k], o_hi[k]) & mask
        tag = o_tags[k]
        h = fp & np.uint64(size - 1)
        while True:
            j = slots[h]
            if j < 0:
                counts[3] += 1  # unexpected
                counts[5] += tag == written[0] or tag == written[1]  # written: a collision
                break
            if fps[j] == fp and _same(sent, s_lo[j], s_hi[j], out, o_lo[k], o_hi[k]):
                lines[j] += 1
                result[j] |= tag == written[0]
                error[j] |= tag == written[1]
                break
            h = (h + np.uint64(1)) & np.uint64(size - 1)
    missing = np.empty(counts[6], np.int64)
    found_missing = 0
    for slot in range(size):
        j = slots[slot]
        if j < 0:
            continue
        counts[4] += max(lines[j] - 1, 0)
        if result[j]:
            counts[0] += 1
        elif error[j]:
            counts[1] += 1
        else:
            counts[2] += 1
            counts[5] += lines[j] > 0  # its lines went unwritten because of a collision
            missing[found_missing] = j
            found_missing += 1
    chosen = np.sort(missing[:found_missing])
    return counts, s_lo[chosen], s_hi[chosen]


def readonly(array: U8) -> U8:
    """`array`, marked read-only: every block the kernels get is, so each kernel is compiled for
    one type of block only (a writable array is another type to numba)."""
    array.flags.writeable = False
    return array
