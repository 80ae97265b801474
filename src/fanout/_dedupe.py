"""ID fingerprints and the set of fingerprints already sent, for the source stage's dedupe.

An ID is compared by a 64-bit fingerprint of its UTF-8 bytes (`_fingerprints`, vectorised over a
whole piece of input), and `_FingerprintSet` remembers the fingerprints sent so far in flat numpy
memory (about 11 bytes per distinct ID).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------------------------------
# Fingerprints

_P1 = np.uint64(0x9E3779B185EBCA87)
_P3 = np.uint64(0x165667B19E3779F9)
_P5 = np.uint64(0x27D4EB2F165667C5)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_HASH_BLOCK = 1 << 16


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
            word = np.bitwise_and(word, _WORD_MASKS[size - 8 * j], out=scratch)
        _mix(head, word, scratch)
    _finish_hash(head)
    if inside < count:
        at = start + inside * stride
        rest = [buf[at + k * stride : at + k * stride + size] for k in range(count - inside)]
        h[inside:] = _fingerprints_of(rest)
    return h


def _fingerprints_of(ids: Sequence[bytes]) -> U64:
    """`_fingerprints` of separate byte strings."""
    if not ids:
        return np.empty(0, np.uint64)
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    starts = np.zeros(len(ids), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return _fingerprints(b"".join(ids), starts, lens)


def _mix(h: U64, word: U64, spare: U64) -> None:
    """One word into the running hashes, in place; `spare` is scratch space (may be `word`)."""
    h ^= word
    h *= _P1
    np.right_shift(h, np.uint64(29), out=spare)
    h ^= spare


def _finish_hash(h: U64) -> U64:
    """The murmur3 64-bit finaliser, in place."""
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


# ---------------------------------------------------------------------------------------------
# The set of fingerprints sent so far


@dataclass(slots=True)
class _Prints:
    """Fingerprints ready for `_FingerprintSet.add`, made ahead (in another thread)."""

    fps: U64
    ordered: U64  # np.sort(fps)
    masks: U64  # _filter_masks(ordered)

    @classmethod
    def of(cls, fps: U64) -> _Prints:
        ordered = np.sort(fps)
        return cls(fps, ordered, _filter_masks(ordered))


class _FingerprintSet:
    """The fingerprints of every ID sent so far, in flat numpy memory.

    Exact membership lives in sorted runs of uint64 (an LSM: one new run per piece, neighbours of
    similar size merged up to `RUN_CAP` entries; the runs of 8 MiB pieces are not merged at all,
    since the filter leaves only ~100 lookups per piece to spread over them).
    In front of them is a filter: a word of 64 bits per ~2-4 IDs, picked by the top bits of the
    fingerprint, in which each ID sets 4 bits picked by its low bits (a blocked Bloom filter, 16
    to 32 bits per ID, false positives 0.1-0.5%; 3 bits gave 0.2-0.8%: 10 million distinct IDs
    send 3,841 lookups to the runs, not 8,202). Keys are handled in sorted order, so the filter
    and the runs are read front to back (random access into large arrays is what costs here),
    and only the filter's few hits are searched in the runs, segment by segment.

    Memory: 8 bytes per ID in the runs + 2 to 4 bytes per ID in the filter = 10 to 12 bytes per
    distinct ID (10,000,000 IDs: 80 MB + 32 MB = 112 MB), plus up to 6 MB while merging runs and
    the old filter's size while growing it.

    Collisions: the set holds fingerprints, not IDs, so two distinct IDs with the same 64-bit
    fingerprint look like one, and the later one counts as a duplicate (the source then lists it
    in the duplicates sink: it is never dropped unlisted). The chance of any such collision among
    n distinct IDs is about n**2 / 2**65 (3e-6 for 10 million IDs).
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
            dup = _sorted_contains(known, fps)
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
                hit |= _sorted_contains(run, values)
                continue
            bounds = np.searchsorted(values, fences).tolist()
            bounds.append(len(values))
            for segment, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                if lo == hi:
                    continue
                part = run[segment * self.SEGMENT : (segment + 1) * self.SEGMENT]
                hit[lo:hi] |= _sorted_contains(part, values[lo:hi])
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


def _sorted_contains(ordered: U64, values: U64) -> Bools:
    """Which of `values` are in the sorted, non-empty `ordered`."""
    pos = np.searchsorted(ordered, values)
    np.minimum(pos, len(ordered) - 1, out=pos)
    found: Bools = ordered[pos] == values
    return found


def _filter_masks(keys: U64) -> U64:
    """The 4 bits each key sets in its filter word (from its low 24 bits)."""
    one = np.uint64(1)
    masks: U64 = np.left_shift(one, keys & np.uint64(63))
    for shift in (6, 12, 18):
        masks |= np.left_shift(one, (keys >> np.uint64(shift)) & np.uint64(63))
    return masks
