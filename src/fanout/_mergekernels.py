"""The merge's kernels: checking output lines of the common shape, fingerprinting and spilling
IDs, reconciling exactly, and building what is written (JSON lines, Arrow buffers) from byte
ranges, without a Python object per line.

Each kernel is a loop in C (`fanout._mergenative`, `_mergenative.c`, built with the package)
that runs without the GIL, so a kernel called through `anyio.to_thread.run_sync` uses a second
core. This module gives them their types and says what they do, and hands them contiguous arrays
of the right dtype; the C code checks every argument and index, so bad arguments raise
ValueError and never make a kernel read or write out of range.

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

import numpy as np
import numpy.typing as npt

from . import _mergenative as _C

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


# The fixed parts of a common line (`_mergenative.c` has the same bytes).
MID = as_array('"},"output":{"recommendedItems":["')
SCORES_KEY = as_array(',"scores":[')
ERROR_NULL = as_array(',"error":null}')
NOTHING = as_array("")  # the head for output lines that never have the common shape


def head_of(id_field: str) -> U8:
    """The start of a common line: `{"input":{"<id field>":"`."""
    return as_array('{"input":{"' + id_field + '":"')


def readonly(array: U8) -> U8:
    """`array`, marked read-only: a block is a view of what was read, never written to."""
    array.flags.writeable = False
    return array


def _u8(array: U8) -> U8:
    return np.ascontiguousarray(array, np.uint8)


def _i64(array: I64) -> I64:
    return np.ascontiguousarray(array, np.int64)


def _u64(array: U64) -> U64:
    return np.ascontiguousarray(array, np.uint64)


def _spans(spans: I64) -> I64:
    if spans.ndim != 2 or spans.shape[1] != SPAN_COLUMNS:
        raise ValueError(f"span rows have {SPAN_COLUMNS} columns, not shape {spans.shape}")
    return np.ascontiguousarray(spans, np.int64)


def joined(head: U8, body: U8, end: int) -> U8:
    """`head` followed by `body[:end]`, as a new array."""
    return _C.join(_u8(head), _u8(body), end)


def scan(data: U8, head: U8, max_line: int) -> tuple[U8, I64]:
    """Each line's kind (`BLANK`, `COMMON`, `OTHER`, `OVERLONG`) and span row (-1 but for
    `LINE_LO`, `LINE_HI` where the line is not common). A line is overlong when it has more
    than `max_line` bytes (its `\r` included)."""
    return _C.scan(_u8(data), _u8(head), max_line)


def scan_sent(data: U8, head: U8) -> tuple[int, I64, I64]:
    """The IDs of a block of input lines as prepare writes them (`{"<id field>":"ID"}`, no
    escapes, no control characters, valid UTF-8; blank lines skipped): (the number of lines, ID
    starts, ID ends). Any other line stops the scan: the number of lines is then -1."""
    return _C.scan_sent(_u8(data), _u8(head))


def fingerprints(data: U8, lo: I64, hi: I64, mask: np.uint64) -> U64:
    """A 64-bit fingerprint of each `data[lo[i]:hi[i]]` (FNV-1a, then murmur3's finaliser),
    keeping the bits of `mask` (all of them but in tests, which make collisions common)."""
    return _C.fingerprints(_u8(data), _i64(lo), _i64(hi), int(mask))


def partitioned(
    data: U8, lo: I64, hi: I64, tags: U8, parts: I64, partitions: int
) -> tuple[U8, I64]:
    """Records `<tag>"<data[lo:hi]>"\n` (no tag byte where the tag is 0), ordered by partition
    (stable): the bytes, and where each partition's records start (`partitions + 1` bounds)."""
    return _C.partitioned(_u8(data), _i64(lo), _i64(hi), _u8(tags), _i64(parts), partitions)


def flat_lines(data: U8, spans: I64, head: U8, middle: U8) -> U8:
    """Common lines as flat JSON lines: `head` ID `middle` items `"]` [`,"scores":[` scores `]`]
    `}\n` (with head `{"userId":"`, middle `","recommendedItems":["`)."""
    return _C.flat_lines(_u8(data), _spans(spans), _u8(head), _u8(middle))


def joined_lines(data: U8, spans: I64) -> U8:
    """The lines themselves, each followed by `\n`."""
    return _C.joined_lines(_u8(data), _spans(spans))


# A held line (`--order input`, `merge.OrderedLines`): a header of HELD_HEADER bytes, little-endian:
# its input position (8 bytes), the line's length (4), then 7 × 4 bytes: ID_LO … SCORES_HI as
# offsets into the line (-1 stays -1) and COUNT (-1: not of the common shape); then the line.
HELD_HEADER = 40


def held(data: U8, spans: I64, positions: I64, span: int, files: int) -> tuple[U8, I64]:
    """The lines of `spans` (rows as `scan` gives them; COUNT -1 for a line not of the common
    shape) as held lines, each led by its header, ordered by file (`position // span`,
    stable): the bytes, and where each file's lines start (`files + 1` bounds)."""
    return _C.held(_u8(data), _spans(spans), _i64(positions), span, files)


def unheld(records: U8) -> tuple[I64, I64, int]:
    """The held lines in `records` (as `held` writes them): each one's position, its span row
    (offsets into `records`), and how many bytes the whole, sound lines take (the rest is a
    line cut short, or damage: no span reaches outside its line)."""
    return _C.unheld(_u8(records))


def columns(data: U8, spans: I64) -> tuple[U8, I32, U8, I32, I32, F64, I64, I32]:
    """Arrow-ready buffers of common lines: the IDs (bytes, offsets); the items (bytes, offsets,
    and per line the offsets of its items); the scores (values, where the fast way could not
    read one: `slow` holds the start of its text and NaN stands in, and per line the offsets of
    its scores; a line without scores has none).

    The fast way reads a number of at most 15 digits (so below 2**53) scaled by 10**k with
    |k| ≤ 22: one correctly rounded multiplication or division, exactly what a correct parser
    gives; any other number is left to Python's `float`."""
    return _C.columns(_u8(data), _spans(spans))


def route(sent: U64, written: U8, fps: U64, tags: U8) -> tuple[U8, I64]:
    """Each of `fps`, in turn: its tag, and its index in the sorted `sent` (where it would go).
    The tag is `tags[0]` for the first line of a sent fingerprint not yet `written` (which it
    then marks), `tags[1]` for a sent one already written, `tags[2]` for one never sent."""
    return _C.route(_u64(sent), written, _u64(fps), _u8(tags))


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


def reconcile(sent: U8, out: U8, written: U8, mask: np.uint64) -> tuple[I64, I64, I64]:
    """Match the spilled output IDs (`out`, tagged: `partitioned`'s records) against the
    spilled sent IDs (`sent`, untagged), exactly: through a hash table of the distinct sent IDs,
    by fingerprint, then byte for byte. Returns the counts (`RECONCILED`) and where the missing
    sent IDs are in `sent` (inside their quotes), in the order of `sent`. `written` holds the
    tags of lines that were written (results and errors); `mask` as for `fingerprints`. A sent
    ID counts as a result if a line with exactly its ID was written as a result, else as an
    error if one was written as an error, else as missing."""
    return _C.reconcile(_u8(sent), _u8(out), _u8(written), int(mask))
