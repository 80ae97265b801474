"""ID fingerprints and the set of fingerprints already sent, for the source stage's dedupe.

An ID is compared by a 64-bit fingerprint of its UTF-8 bytes, and `_FingerprintSet` remembers
the fingerprints sent so far in an open-addressing hash table. Both loops are C
(`fanout._native`, built with the package), run without the GIL, so dedupe runs on one core
while encoding runs on the other.

The fingerprint of an ID of `len` bytes, the same in every process and on every platform:
`h = len * P3 + P5`; for each little-endian 64-bit word `w` of the ID (the last one
zero-padded) `h = (h ^ w) * P1; h ^= h >> 29`; then the murmur3 64-bit finaliser (constants in
`_native.c`; `tests/test_dedupe.py` holds a plain-Python copy of the definition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from . import _ahead, _native

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# 64-bit integers, 8 bytes each: a memoryview of format q / Q, or a numpy array. The hot path
# (one ID per line, nothing rejected, no duplicate) makes and passes only memoryviews, so that
# a prepare does not import numpy (~60-90 ms of its start); the rest imports it when needed.
I64: TypeAlias = "memoryview | npt.NDArray[np.int64]"
U64: TypeAlias = "memoryview | npt.NDArray[np.uint64]"
Bools: TypeAlias = "npt.NDArray[np.bool_]"


def _fingerprints(buf: bytes | memoryview, starts: I64, lens: I64) -> U64:
    """The fingerprints of the IDs `buf[starts[i] : starts[i] + lens[i]]`."""
    import numpy as np

    out = np.empty(len(starts), np.uint64)
    _native.fingerprints(buf, _int64(starts), _int64(lens), out)
    return out


def _fingerprints_of(ids: Sequence[bytes]) -> U64:
    """The fingerprints of separate byte strings."""
    import numpy as np

    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    starts = np.zeros(len(ids), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return _fingerprints(b"".join(ids), starts, lens)


def _int64(values: I64) -> npt.NDArray[np.int64]:
    import numpy as np

    return np.ascontiguousarray(values, np.int64)


class _FingerprintSet:
    """The fingerprints of every ID sent so far, in an open-addressing hash table (`_native`:
    buckets of 8 slots, one cache line each, chosen by the fingerprint's top bits, a full one
    spilling into the next; lookups prefetched ahead).

    Memory: 8 bytes per slot, the table sized to be `LOAD` (80%) full: 10 bytes per distinct
    ID when it was sized for the input (`reserve`, from the input's size, as the source does
    for a file). It grows by half only when it would be more than `MAX_LOAD` (90%) full, so an
    estimate up to 12% short still fits; after growing, up to 15 bytes per ID, and, for a moment
    while it grows, the old table beside the new (10,000,000 IDs: 100 MB sized ahead).

    Collisions: the set holds fingerprints, not IDs, so two distinct IDs with the same 64-bit
    fingerprint look like one, and the later one counts as a duplicate (the source then lists it
    in the duplicates sink: it is never dropped unlisted). The chance of any such collision among
    n distinct IDs is about n**2 / 2**65 (3e-6 for 10 million IDs).
    """

    LOAD = _ahead.LOAD
    MAX_LOAD = 0.9
    MIN_SLOTS = 1 << 16
    GROWTH = 1.5

    def __init__(self) -> None:
        self._count = 0
        self._table = _zeros(self.MIN_SLOTS + 1)  # + the "0 was added" word

    def __len__(self) -> int:
        return self._count

    @property
    def slots(self) -> int:
        return len(self._table) - 1

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes)

    def add(self, fps: U64) -> bytearray | None:
        """Add `fps` (8 bytes each, contiguous); None if none of them was present before, else
        a byte per fingerprint, 1 for each one already present (earlier in `fps` or in the
        set)."""
        count = len(fps)
        if self._count + count > self.MAX_LOAD * self.slots:
            self._grow(max(self._count + count, int(self._count * self.GROWTH)))
        dup = bytearray(count)
        fresh = _native.insert(self._table, fps, dup)
        self._count += fresh
        return None if fresh == count else dup

    def reserve(self, count: int) -> None:
        """Size the table for about `count` distinct IDs (saves growing it step by step)."""
        if count > self.LOAD * self.slots:
            self._grow(count)

    def _grow(self, count: int) -> None:
        """A table for `count` IDs at `LOAD`, filled again from the old one."""
        table = _zeros(_ahead.words_for(count))
        _native.rehash(self._table, table)
        self._table = table


def _zeros(count: int) -> memoryview:
    """A zeroed table of `count` words, in memory from `_ahead` (faulted in ahead for a local
    file; else written with zeros before it is used: `_ahead.allocate` says why)."""
    return memoryview(_ahead.allocate(count))[: 8 * count].cast("Q")
