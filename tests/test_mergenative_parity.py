"""Temporary, while numba goes: the C kernels (`fanout._mergenative`) give exactly what the numba
kernels give, on random and damaged lines and on many spellings of scores."""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
import pytest

import numba_kernels as old
from fanout import _mergenative as C
from kernel_fuzz import GOOD, damaged

ALL = 2**64 - 1


def _exact(data: bytes) -> Any:
    return np.frombuffer(data, np.uint8).copy()


def _same(a: Any, b: Any, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), what


def _score(rng: random.Random) -> str:
    x = rng.random() ** rng.randint(1, 30) * 10 ** rng.randint(-5, 5) * rng.choice([1, -1])
    bits = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
    mantissa = str(rng.randint(0, 10 ** rng.randint(1, 17)))
    return rng.choice(
        [
            repr(x),
            repr(bits) if np.isfinite(bits) else "1",
            f"{x:.{rng.randint(1, 9)}E}",
            f"{x:.{rng.randint(0, 20)}g}",
            f"{x:.{rng.randint(0, 18)}f}",
            str(rng.randint(-(10**19), 10**19)),
            f"{mantissa}e{rng.choice(['', '+', '-'])}{rng.randint(0, 99)}",
            f"{mantissa}.{rng.randint(0, 10**9)}E-{rng.randint(0, 30)}",
            rng.choice(["0", "-0", "-0.0", "1e22", "1e-22", "1e23", "9007199254740993", "0e0"]),
        ]
    )


def _item(rng: random.Random) -> str:
    return "".join(rng.choice("a1é中😀, x") for _ in range(rng.randint(0, 6)))


def _line(rng: random.Random) -> bytes:
    n = rng.randint(1, 8)
    items = ",".join(f'"{_item(rng)}"' for _ in range(n))
    tail = rng.choice(["}", ',"error":null}'])
    head = f'{{"input":{{"userId":"u{_item(rng)}"}},"output":{{"recommendedItems":[{items}]'
    if rng.random() < 0.2:
        return f"{head}}}{tail}".encode()
    scores = ",".join(_score(rng) for _ in range(n + (rng.random() < 0.05)))
    return f'{head},"scores":[{scores}]}}{tail}'.encode()


def _block(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 30)):
        what = rng.random()
        if what < 0.4:
            lines.append(_line(rng))
        elif what < 0.6:
            lines.append(rng.choice(GOOD))
        elif what < 0.85:
            lines.append(damaged(rng))
        elif what < 0.9:
            lines.append(rng.choice([b"", b"  \t", b"\r"]))
        else:
            lines.append(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
    return b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n", b"\r"])


@pytest.mark.parametrize("seed", range(4))
def test_the_c_kernels_give_what_the_numba_kernels_give(seed: int) -> None:
    """Every kernel, on the same random and damaged input, byte for byte."""
    rng = random.Random(seed)
    for _ in range(300):
        data = _exact(_block(rng))
        for head in (old.head_of("userId"), old.NOTHING):
            limit = rng.randint(0, 200)
            for a, b in zip(old.scan(data, head, limit), C.scan(data, head, limit), strict=True):
                _same(a, b, "scan")
        kinds, spans = C.scan(data, old.head_of("userId"), 10_000)
        common = spans[kinds == old.COMMON]
        mine: tuple[Any, ...] = C.columns(data, common)
        theirs: tuple[Any, ...] = old.columns(data, common)
        item_bytes = int(theirs[3][-1])
        for i, (a, b) in enumerate(zip(theirs, mine, strict=True)):
            _same(a[:item_bytes] if i == 2 else a, b, f"columns {i}")  # (numba's tail)
        head, middle = old.as_array('{"userId":"'), old.as_array('","recommendedItems":["')
        _same(
            old.flat_lines(data, common, head, middle),
            C.flat_lines(data, common, head, middle),
            "flat",
        )
        _same(old.joined_lines(data, spans), C.joined_lines(data, spans), "joined_lines")
        lo, hi = common[:, old.ID_LO].copy(), common[:, old.ID_HI].copy()
        for mask in (ALL, 3, 0):
            _same(
                old.fingerprints(data, lo, hi, np.uint64(mask)),
                C.fingerprints(data, lo, hi, mask),
                "fps",
            )
        fps = C.fingerprints(data, lo, hi, ALL)
        tags = np.array([rng.choice([0, 114, 101]) for _ in lo], np.uint8)
        parts = (fps % np.uint64(5)).astype(np.int64)
        for a, b in zip(
            old.partitioned(data, lo, hi, tags, parts, 5),
            C.partitioned(data, lo, hi, tags, parts, 5),
            strict=True,
        ):
            _same(a, b, "partitioned")
        positions = np.array(rng.sample(range(1 << 20), len(spans)), np.int64)
        span = rng.randint(1, 1 << 17)
        held = spans.copy()
        held[kinds != old.COMMON, old.COUNT] = -1
        args = (data, held, positions, span, (1 << 20) // span + 1)
        for a, b in zip(old.held(*args), C.held(*args), strict=True):
            _same(a, b, "held")
        records = C.held(*args)[0]
        for cut in (
            records,
            records[: rng.randrange(len(records) + 1)],
            _exact(bytes(rng.randrange(256) for _ in range(300))),
        ):
            cut = cut.copy()
            a, b = old.unheld(cut), C.unheld(cut)
            _same(a[0], b[0], "unheld")
            _same(a[1], b[1], "unheld")
            assert a[2] == b[2]
        sent = np.unique(
            np.concatenate([fps[::2], np.array([rng.getrandbits(64) for _ in range(4)], np.uint64)])
        )
        mark_a = (np.arange(len(sent)) % 3 == 0).astype(np.uint8)
        mark_b = mark_a.copy()
        route_tags = old.as_array("rdu")
        for a, b in zip(
            old.route(sent, mark_a, fps, route_tags),
            C.route(sent, mark_b, fps, route_tags),
            strict=True,
        ):
            _same(a, b, "route")
        _same(mark_a, mark_b, "written")
        ids = [
            bytes(rng.choice(b"ab\\") for _ in range(rng.randint(0, 3)))
            for _ in range(rng.randint(0, 30))
        ]
        sent_ids = _exact(b"".join(b'"' + key + b'"\n' for key in ids) + rng.choice([b"", b'"zz']))
        out_ids = _exact(
            b"".join(
                bytes([rng.choice(b"reduX")]) + b'"' + rng.choice([*ids, b"q"]) + b'"\n'
                for _ in range(rng.randint(0, 30))
            )
        )
        written = _exact(b"re")
        for mask in (ALL, 1, 0):
            for a, b in zip(
                old.reconcile(sent_ids, out_ids, written, np.uint64(mask)),
                C.reconcile(sent_ids, out_ids, written, mask),
                strict=True,
            ):
                _same(a, b, "reconcile")
        inputs = _exact(
            b"\n".join(
                b'{"userId":"' + _item(rng).encode() + b'"}' for _ in range(rng.randint(0, 9))
            )
            + rng.choice([b"", b"\n", b'\n{"userId":"a\\"}'])
        )
        a, b = (
            old.scan_sent(inputs, old.as_array('{"userId":"')),
            C.scan_sent(inputs, old.as_array('{"userId":"')),
        )
        assert a[0] == b[0]
        _same(a[1], b[1], "scan_sent")
        _same(a[2], b[2], "scan_sent")
        end = rng.randint(0, len(data))
        _same(
            old.joined(old.as_array("xy"), data, end), C.join(old.as_array("xy"), data, end), "join"
        )


@pytest.mark.parametrize("seed", range(2))
def test_scores_are_read_to_the_same_bits(seed: int) -> None:
    """Every score, as numba and C read it (NaN where the fast way cannot), bit for bit; and
    what the fast way reads is Python's float of the text."""
    rng = random.Random(seed)
    for _ in range(20):
        lines = []
        for user in range(200):
            items = ",".join(f'"{i}"' for i in range(25))
            scores = ",".join(_score(rng) for _ in range(25))
            lines.append(
                f'{{"input":{{"userId":"u{user}"}},"output":{{"recommendedItems":[{items}],"scores":[{scores}]}}}}'
            )
        data = _exact("\n".join(lines).encode())
        kinds, spans = C.scan(data, old.head_of("userId"), 10**6)
        common = spans[kinds == old.COMMON]
        mine, theirs = C.columns(data, common), old.columns(data, common)
        for i in (5, 6, 7):
            _same(mine[i], theirs[i], f"columns {i}")
        texts = [
            t
            for r in common
            for t in data[r[old.SCORES_LO] : r[old.SCORES_HI]].tobytes().split(b",")
        ]
        for text, value in zip(texts, mine[5].tolist(), strict=True):
            assert np.isnan(value) or struct.pack("d", value) == struct.pack("d", float(text)), text
