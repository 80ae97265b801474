"""The dedupe set and the ID fingerprints (`fanout._native`): exact repeats, memory per ID, one
hash on every path, the definition in plain Python, and arguments checked before any loop."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout import _native
from fanout._dedupe import _fingerprints, _fingerprints_of, _FingerprintSet
from fanout._encode import _encode_lines, _Template

MASK = (1 << 64) - 1


def reference(value: bytes) -> int:
    """The fingerprint's definition (`fanout._dedupe`), one ID at a time."""
    h = (len(value) * 0x165667B19E3779F9 + 0x27D4EB2F165667C5) & MASK
    for at in range(0, len(value), 8):
        h = ((h ^ int.from_bytes(value[at : at + 8], "little")) * 0x9E3779B185EBCA87) & MASK
        h ^= h >> 29
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


@given(st.lists(st.binary(max_size=70), max_size=40))
def test_fingerprints_are_the_definition(ids: list[bytes]) -> None:
    assert _fingerprints_of(ids).tolist() == [reference(value) for value in ids]


def test_fingerprints_are_the_same_on_every_path() -> None:
    """The line encoder's, gathered and separate fingerprints of the same IDs agree, and are
    stable."""
    ids = [b"abcdefgh%02d" % i for i in range(50)]
    buf = b"\n".join(ids) + b"\n"
    starts = np.arange(0, len(buf), 11, dtype=np.int64)
    lens = np.full(50, 10, np.int64)
    encoded = _encode_lines(buf, _Template.make("userId", None), 256).fps
    gathered = _fingerprints(buf, starts, lens)
    separate = _fingerprints_of(ids)
    assert encoded.tolist() == gathered.tolist() == separate.tolist()
    assert len(set(encoded.tolist())) == 50
    assert int(_fingerprints_of([b"user-1"])[0]) == 0x2FA477FF4FEE90D2


def test_line_fingerprints_match_for_every_width() -> None:
    """Fingerprints read in place from lines equal those of the separate IDs, also for the last
    line, whose last word would run past the end of the buffer."""
    tpl = _Template.make("userId", None)
    for size in range(1, 40):
        ids = [bytes(97 + (i * 7 + k) % 26 for k in range(size)) for i in range(9)]
        buf = b"\n".join(ids)  # no line end after the last
        assert _encode_lines(buf, tpl, 256).fps.tolist() == _fingerprints_of(ids).tolist()


def test_fingerprints_of_many_similar_ids_do_not_collide() -> None:
    """Sequential numeric IDs and prefixes of each other get distinct fingerprints."""
    ids = [str(i).encode() for i in range(200_000)] + [b"a" * n for n in range(1, 300)]
    assert len(np.unique(_fingerprints_of(ids))) == len(ids)


def test_out_of_range_arguments_raise_instead_of_reading_past_the_buffer() -> None:
    out = np.empty(2, np.uint64)
    with pytest.raises(ValueError, match=r"ID 1 .* outside the buffer"):
        _native.fingerprints(b"abcd", np.array([0, 3], np.int64), np.array([2, 2], np.int64), out)
    with pytest.raises(ValueError, match="differ in length"):
        _native.fingerprints(b"ab", np.zeros(1, np.int64), np.zeros(1, np.int64), out)
    with pytest.raises(ValueError, match="at least one 64-byte bucket"):
        _native.insert(np.zeros(8, np.uint64), np.zeros(1, np.uint64), np.zeros(1, np.uint8))
    with pytest.raises(TypeError):
        _native.insert(b"\0" * 16, np.zeros(1, np.uint64), np.zeros(1, np.uint8))  # read-only


@pytest.fixture(params=[True, False], ids=["simd", "portable"])
def simd(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each test twice: with the AVX2 loops (where the CPU has them) and with the portable ones."""
    yield _native.use_simd(request.param)
    _native.use_simd(True)


def _past_boundary(words: int, offset: int) -> npt.NDArray[np.uint64]:
    """A zeroed table of `words` words that starts `offset` bytes past a 64-byte boundary."""
    memory = np.zeros(words + 16, np.uint64)
    skip = (64 - memory.ctypes.data % 64 + offset) % 64 // 8
    return memory[skip : skip + words]


@pytest.mark.parametrize("offset", [0, 8, 56])
def test_insert_uses_the_buckets_after_the_first_boundary(simd: bool, offset: int) -> None:
    """The buckets start at the table's first 64-byte boundary, wherever the buffer starts: the
    words before it stay empty, and the repeats are found all the same."""
    table = _past_boundary(8 * 64 + 8, offset)
    prints = np.random.default_rng(offset).integers(1, 2**63, 300, dtype=np.uint64)
    dup = np.zeros(300, np.uint8)
    assert _native.insert(table, prints, dup) == 300 and not dup.any()
    assert _native.insert(table, prints[::-1].copy(), dup) == 0 and dup.all()
    before = (64 - offset) % 64 // 8
    assert not table[:before].any() and np.count_nonzero(table) == 300


def test_a_full_table_raises_instead_of_probing_forever(simd: bool) -> None:
    """One bucket: 8 fingerprints fit, a repeat is still found, a ninth new one raises, and so
    does a rehash of 9 into one bucket."""
    table = _past_boundary(9, 0)
    prints = np.arange(1, 9, dtype=np.uint64)
    assert _native.insert(table, prints, np.zeros(8, np.uint8)) == 8
    dup = np.zeros(1, np.uint8)
    assert _native.insert(table, prints[3:4].copy(), dup) == 0 and dup[0] == 1
    with pytest.raises(ValueError, match="table is full"):
        _native.insert(table, np.array([99], np.uint64), dup)
    two = _past_boundary(8 * 2 + 1, 0)
    assert _native.insert(two, np.arange(1, 10, dtype=np.uint64), np.zeros(9, np.uint8)) == 9
    with pytest.raises(ValueError, match="new table is full"):
        _native.rehash(two, _past_boundary(9, 0))


def test_fingerprint_set_finds_exactly_the_repeats_through_growth(simd: bool) -> None:
    """The set reports exactly the repeats, 0 and the largest fingerprint included, growing
    from its smallest table many times over."""
    seen = _FingerprintSet()
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**64 - 1, 400_000, dtype=np.uint64, endpoint=True)
    pool[:3] = [0, 2**64 - 1, 1]
    known: set[int] = set()
    for step in range(40):
        picks = pool[rng.integers(0, min(len(pool), 10_000 * (step + 1)), 7_000)]
        picks[::500] = pool[step % 3]
        dup = seen.add(picks)
        expected = []
        for value in picks.tolist():
            expected.append(value in known)
            known.add(value)
        assert (dup is None) == (not any(expected))  # None: no repeat at all
        flags = [False] * len(picks) if dup is None else [bool(flag) for flag in dup]
        assert flags == expected
    assert len(seen) == len(known)
    assert seen.slots > 3 * _FingerprintSet.MIN_SLOTS


def test_fingerprint_set_memory_per_id() -> None:
    """Sized ahead, a million distinct IDs take 10 bytes each; grown as they come, at most 15
    (and at least 8.9: the table grows only when it would be over 90% full). An estimate 10%
    short of the IDs still fits without growing."""
    rng = np.random.default_rng(1)
    prints = rng.integers(0, 2**64 - 1, 1_000_000, dtype=np.uint64, endpoint=True)
    ahead, grown = _FingerprintSet(), _FingerprintSet()
    ahead.reserve(len(prints))
    for part in np.array_split(prints, 5):
        assert ahead.add(part) is None
        assert grown.add(part) is None
    assert 9.9 <= ahead.nbytes / len(ahead) <= 10.1
    assert 8.9 <= grown.nbytes / len(grown) <= 15
    short = _FingerprintSet()
    short.reserve(int(len(prints) * 0.9))
    slots = short.slots
    for part in np.array_split(prints, 5):
        short.add(part)
    assert short.slots == slots and len(short) == len(prints)
