"""SHA-256 of part files two at a time (`fanout._sha`, `_sha256.c`): every digest is hashlib's,
however the messages are split into updates and paired, and without the CPU's SHA extensions
it is hashlib's own object."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout import _sha, _sha256

needs_sha_ni = pytest.mark.skipif(not _sha256.available(), reason="no SHA extensions here")

_pieces = st.lists(st.binary(max_size=300), max_size=8)


@needs_sha_ni
@settings(max_examples=300, deadline=None)
@given(a=_pieces, b=_pieces, pair_first=st.integers(0, 8))
def test_updates_and_pairs_give_hashlibs_digests(
    a: list[bytes], b: list[bytes], pair_first: int
) -> None:
    """Two messages fed as pieces, the first `pair_first` of each in pairs (of unequal sizes,
    any part of a block held over) and the rest alone: both digests equal hashlib's."""
    one, two = _sha.Sha256(), _sha.Sha256()
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else b""
        right = b[index] if index < len(b) else b""
        if index < pair_first:
            _sha.update_pair(one, left, two, memoryview(right))
        else:
            one.update(left)
            two.update(memoryview(right))
    assert one.hexdigest() == hashlib.sha256(b"".join(a)).hexdigest()
    assert two.hexdigest() == hashlib.sha256(b"".join(b)).hexdigest()


@needs_sha_ni
def test_long_messages_and_every_length_around_a_block() -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: many blocks on both lanes at once
    for length in [*range(0, 130), 1 << 20, len(data)]:
        one, two = _sha.Sha256(), _sha.Sha256()
        _sha.update_pair(one, data[:length], two, data[3 : 3 + length // 2])
        assert one.hexdigest() == hashlib.sha256(data[:length]).hexdigest()
        assert two.hexdigest() == hashlib.sha256(data[3 : 3 + length // 2]).hexdigest()
    done = _sha.Sha256()
    done.update(b"abc")
    assert done.hexdigest() == done.hexdigest() == hashlib.sha256(b"abc").hexdigest()


@needs_sha_ni
def test_blocks_refuses_what_is_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="whole 64-byte blocks"):
        _sha256.blocks(bytearray(32), b"x" * 65, bytearray(), b"")
    with pytest.raises(ValueError, match="32-byte state"):
        _sha256.blocks(bytearray(31), b"", bytearray(), b"")


def test_without_the_extensions_it_is_hashlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sha256, "available", lambda: False)
    one, two = _sha.new(), _sha.new()
    assert not isinstance(one, _sha.Sha256)
    _sha.update_pair(one, b"left", two, b"right")
    assert one.hexdigest() == hashlib.sha256(b"left").hexdigest()
    assert two.hexdigest() == hashlib.sha256(b"right").hexdigest()
