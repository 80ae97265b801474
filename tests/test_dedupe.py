"""The dedupe set and the ID fingerprints: exact repeats, memory per ID, one hash on every path."""

from __future__ import annotations

import numpy as np

from fanout._dedupe import _fingerprints, _fingerprints_fixed, _fingerprints_of, _FingerprintSet


def test_fingerprint_set_finds_duplicates_across_runs_merges_and_growth() -> None:
    """The set reports exactly the repeats, through run merges, segments and filter growth."""
    seen = _FingerprintSet()
    seen.RUN_CAP = 1 << 12
    seen.SEGMENT = 1 << 6
    seen.BLOCK = 1 << 9
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**64 - 1, 40_000, dtype=np.uint64, endpoint=True)
    known: set[int] = set()
    for step in range(40):
        picks = pool[rng.integers(0, min(len(pool), 1000 * (step + 1)), 700)]
        dup = seen.add(picks)
        expected = []
        for value in picks.tolist():
            expected.append(value in known)
            known.add(value)
        assert dup.tolist() == expected
    assert len(seen) == len(known)
    assert len(seen._runs) > 1


def test_fingerprint_set_memory_per_id_is_about_eleven_bytes() -> None:
    """A million distinct IDs take 10 to 12.5 bytes each in the set."""
    seen = _FingerprintSet()
    rng = np.random.default_rng(1)
    for _ in range(5):
        seen.add(rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True))
    assert 10 <= seen.nbytes / len(seen) <= 12.5


def test_fingerprints_are_the_same_on_every_path() -> None:
    """Fixed-stride, gathered and separate fingerprints of the same IDs agree, and are stable."""
    ids = [b"abcdefgh%02d" % i for i in range(50)]
    buf = b"\n".join(ids) + b"\n"
    starts = np.arange(0, len(buf), 11, dtype=np.int64)
    lens = np.full(50, 10, np.int64)
    strided = _fingerprints(buf, starts, lens, 11)
    gathered = _fingerprints(buf, starts, lens)
    separate = _fingerprints_of(ids)
    assert strided.tolist() == gathered.tolist() == separate.tolist()
    assert len(set(strided.tolist())) == 50
    assert _fingerprints_of([b"u1"]).tolist() == [_fingerprints_of([b"u1", b"x"])[0]]
    assert int(_fingerprints_of([b"user-1"])[0]) == 0x2FA477FF4FEE90D2


def test_fixed_width_fingerprints_match_for_every_width() -> None:
    """Fingerprints read in place from fixed-width lines equal those of the separate IDs."""
    for size in range(1, 40):
        ids = [bytes(97 + (i * 7 + k) % 26 for k in range(size)) for i in range(9)]
        buf = b"\n".join(ids) + b"\n"
        assert _fingerprints_fixed(buf, 0, size + 1, size, 9).tolist() == (
            _fingerprints_of(ids).tolist()
        )


def test_fingerprints_of_many_similar_ids_do_not_collide() -> None:
    """Sequential numeric IDs and prefixes of each other get distinct fingerprints."""
    ids = [str(i).encode() for i in range(200_000)] + [b"a" * n for n in range(1, 300)]
    assert len(np.unique(_fingerprints_of(ids))) == len(ids)
