"""Fuzz the merge's kernels (`fanout._mergenative`) with damaged output lines and bad arguments.

`python tests/kernel_fuzz.py SEED ROUNDS [EXTENSION]`: with EXTENSION, that build of
`fanout._mergenative` is used instead of the package's. `test_merge_kernels` runs it with the
extension built with AddressSanitizer, so that a read or write outside a buffer aborts the run
rather than passing unseen; every buffer a kernel gets here is an exact-size numpy copy, so that
ASan's red zone starts right after its last byte. It also runs `main` in-process, for the
checks that need no sanitizer: what the kernels say about damaged lines is what the parser
(`parse_output_line`) says, and bad arguments raise ValueError and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
from collections.abc import Callable

import numpy as np


def _use_extension(path: str) -> None:
    """Load `fanout._mergenative` from `path` before anything imports the package's own."""
    spec = importlib.util.spec_from_file_location("fanout._mergenative", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fanout._mergenative"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__" and len(sys.argv) > 3:
    _use_extension(sys.argv[3])

# (after the extension is chosen)
from fanout import _mergekernels as K  # noqa: E402
from fanout._outputs import OutputRecord, parse_output_line  # noqa: E402
from fanout.records import InputKind  # noqa: E402

GOOD = [
    b'{"input":{"userId":"u1"},"output":{"recommendedItems":["a","b"],"scores":[0.5,3.773E-4]},'
    b'"error":null}',
    b'{"input":{"userId":"Zo\xc3\xab"},"output":{"recommendedItems":["x","",","],"scores":'
    b"[1,-0.0,12345678901234567e-5]}}",
    b'{"input":{"userId":"u3"},"output":{"recommendedItems":["a"]}}',
    b'{"input":{"userId":"u4"},"output":{"recommendedItems":["a"],"scores":[1]},"error":null}\r',
    b'{"input":{"userId":"\xe4\xb8\xad"},"output":{"recommendedItems":["\xf0\x9f\x98\x80","1"],'
    b'"scores":[1E-7,-12.5e+3]}}',
]


def damaged(rng: random.Random) -> bytes:
    line = bytearray(rng.choice(GOOD))
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        at = rng.randrange(len(line) + 1)
        if what < 0.4:
            del line[at:]  # truncated
        elif what < 0.7 and line:
            line[min(at, len(line) - 1)] = rng.choice(b'"\\,]}[{:0e.-\x00\xc3\xff 9\r\n')
        else:
            line[at:at] = bytes([rng.randrange(256)])
    return bytes(line)


def exact(data: bytes | K.U8) -> K.U8:
    """An array of exactly these bytes, in memory of its own."""
    return np.frombuffer(bytes(data), np.uint8).copy()


def _block(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(25)):
        what = rng.random()
        if what < 0.25:
            lines.append(rng.choice(GOOD))
        elif what < 0.85:
            lines.append(damaged(rng))
        elif what < 0.9:
            lines.append(rng.choice([b"", b" \t", b"\r", b"\x0b", b"  "]))
        else:
            lines.append(bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
    return b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n", b"\r"])


def _sent_block(rng: random.Random) -> bytes:
    """Input lines as prepare writes them, some damaged."""
    lines = []
    for _ in range(rng.randrange(12)):
        line = bytearray(b'{"userId":"' + rng.choice([b"u1", b"", b"Zo\xc3\xab", b"a b"]) + b'"}')
        if rng.random() < 0.3:
            at = rng.randrange(len(line))
            line[at : at + rng.randrange(3)] = bytes([rng.randrange(256)])
        lines.append(bytes(line))
    return b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])


def _agrees_with_the_parser(data: K.U8, kinds: K.U8, spans: K.I64) -> None:
    """A blank line is blank, and a common line parses to the ID, items and scores its spans
    give (the kernel is never more lenient than the parser)."""
    common = np.ascontiguousarray(spans[kinds == K.COMMON])
    values = K.columns(data, common)[5]
    at = 0
    for kind, row in zip(kinds.tolist(), spans.tolist(), strict=True):
        line = data[row[K.LINE_LO] : row[K.LINE_HI]].tobytes()
        assert (kind == K.BLANK) == (not line.strip()), line
        if kind != K.COMMON:
            continue
        record = parse_output_line(line, InputKind.USER)
        assert isinstance(record, OutputRecord), (line, record)
        assert record.key == data[row[K.ID_LO] : row[K.ID_HI]].tobytes().decode(), line
        items = data[row[K.ITEMS_LO] : row[K.ITEMS_HI]].tobytes().decode().split('","')
        assert list(record.items) == items, line
        if row[K.SCORES_LO] < 0:
            assert record.scores is None, line
            continue
        texts = data[row[K.SCORES_LO] : row[K.SCORES_HI]].tobytes().split(b",")
        mine = values[at : at + len(texts)].tolist()
        at += len(texts)
        read = [float(text) if np.isnan(v) else v for v, text in zip(mine, texts, strict=True)]
        assert record.scores == tuple(read), line


def _refused_or_done(kernel: Callable[..., object], *args: object) -> None:
    """`kernel(*args)` either runs or raises ValueError (bad arguments), nothing else."""
    with contextlib.suppress(ValueError):
        kernel(*args)


def _bad_arguments(rng: random.Random, data: K.U8, spans: K.I64) -> None:
    """The kernels on spans with a few values spoilt, and on other bad arguments."""
    if len(spans):
        bad = spans.copy()
        for _ in range(rng.randint(1, 3)):  # next to what it was, or past either end
            row = len(bad) - 1 if rng.random() < 0.5 else rng.randrange(len(bad))
            column = rng.randrange(K.SPAN_COLUMNS)
            was = int(bad[row, column])
            bad[row, column] = rng.choice(
                [was - 1, was + 1, was - 3, was + 3, -1, 0, len(data), len(data) + 1, 2**40]
            )
        flat_head, middle = exact(b'{"userId":"'), exact(b'","recommendedItems":["')
        _refused_or_done(K.flat_lines, data, bad, flat_head, middle)
        _refused_or_done(K.joined_lines, data, bad)
        _refused_or_done(K.columns, data, bad)
        positions = np.arange(len(bad), dtype=np.int64)
        _refused_or_done(K.held, data, bad, positions, 1, len(bad))
        positions[rng.randrange(len(bad))] = rng.choice([-1, len(bad), 2**62])
        _refused_or_done(K.held, data, spans, positions, 1, len(bad))
        # (the line columns: every row has them)
        lo, hi = bad[:, K.LINE_LO].copy(), bad[:, K.LINE_HI].copy()
        _refused_or_done(K.fingerprints, data, lo, hi, np.uint64(2**64 - 1))
        parts = np.zeros(len(bad), np.int64)
        parts[rng.randrange(len(bad))] = rng.choice([-1, 4, 2**40])
        lo, hi = spans[:, K.LINE_LO].copy(), spans[:, K.LINE_HI].copy()
        tags = np.zeros(len(lo), np.uint8)
        _refused_or_done(K.partitioned, data, lo, hi, tags, parts, 4)
    _refused_or_done(K.joined, exact(b"ab"), data, rng.choice([-1, len(data) + 1]))
    sent = np.sort(np.array([rng.getrandbits(64) for _ in range(3)], np.uint64))
    short = np.zeros(rng.choice([0, 2, 4]), np.uint8)
    _refused_or_done(K.route, sent, short, sent.copy(), exact(b"rdu"))


def _unheld(records: K.U8) -> None:
    """`unheld`'s lines lie in the whole, sound part of `records`, each of its parts in its
    line."""
    positions, spans, whole = K.unheld(records)
    assert 0 <= whole <= len(records) and len(positions) == len(spans)
    assert (positions >= 0).all()
    lo, hi = spans[:, K.LINE_LO : K.LINE_LO + 1], spans[:, K.LINE_HI : K.LINE_HI + 1]
    parts = spans[:, K.ID_LO : K.COUNT]
    assert ((lo >= 0) & (lo <= hi) & (hi <= whole)).all()
    assert ((parts == -1) | ((lo <= parts) & (parts <= hi))).all()
    assert (spans[:, K.COUNT] >= -1).all()


def _edges() -> None:
    """Hand-made rows whose empty ranges lie at the very end of the data."""
    data = exact(b'"a"')
    ends = [-1, -1, 0, 0, 1, 2, 3, 3, 1]  # an empty score at the end
    for row in (ends, [0, 3, 3, 3, 3, 3, 3, 3, 1], [0, 3, 0, 3, 1, 2, -1, 7, 1]):
        spans = np.array([row], np.int64)
        _refused_or_done(K.columns, data, spans)
        _refused_or_done(K.flat_lines, data, spans, exact(b"{"), exact(b""))
        _refused_or_done(K.joined_lines, data, spans)
    for text in (b"", b"\n", b"r", b"r\n", b"\n\n", b'r"', b"\nr"):
        _refused_or_done(K.reconcile, exact(text), exact(text), exact(b"re"), np.uint64(1))
    for text in (b"", b"{", b'{"input":{"userId":"', b'{"userId":"x"', b" ", b"\r"):
        K.scan(exact(text), K.head_of("userId"), 5)
        K.scan_sent(exact(text), exact(b'{"userId":"'))


def main(seed: int, rounds: int) -> None:
    _edges()
    rng = random.Random(seed)
    every = np.uint64(2**64 - 1)
    user_head = K.head_of("userId")
    for _ in range(rounds):
        whole = _block(rng)
        # Blocks cut anywhere: every check at the end of the data meets the end of a buffer.
        for cut in sorted(rng.sample(range(len(whole) + 1), min(len(whole) + 1, 8))):
            data = exact(whole[:cut])
            kinds, spans = K.scan(data, user_head, 10_000)
            _agrees_with_the_parser(data, kinds, spans)
            K.scan_sent(data, exact(b'{"input":{"userId":"'))
        data = exact(whole)
        kinds, spans = K.scan(data, K.NOTHING, 10_000)
        assert not np.count_nonzero(kinds == K.COMMON)
        for limit in (rng.randrange(60), 10_000):
            kinds, spans = K.scan(data, user_head, limit)
        _agrees_with_the_parser(data, kinds, spans)
        common = np.ascontiguousarray(spans[kinds == K.COMMON])
        K.flat_lines(data, common, exact(b'{"userId":"'), exact(b'","recommendedItems":["'))
        K.joined_lines(data, spans)
        K.columns(data, common)
        lo, hi = np.ascontiguousarray(common[:, K.ID_LO]), np.ascontiguousarray(common[:, K.ID_HI])
        prints = K.fingerprints(data, lo, hi, every)
        tags = np.full(len(lo), ord("r"), np.uint8)
        records, _ = K.partitioned(data, lo, hi, tags, (prints % np.uint64(4)).astype(np.int64), 4)
        sent = exact(records.tobytes().replace(b'r"', b'"'))
        K.reconcile(sent, exact(records), exact(b"re"), every)
        part = sent[: rng.randrange(len(sent) + 1)].copy()
        _refused_or_done(K.reconcile, part, exact(data), exact(b"re"), every)
        K.route(np.sort(prints[::2]), np.zeros(len(prints[::2]), np.uint8), prints, exact(b"rdu"))
        where = np.array(rng.sample(range(1 << 40), len(spans)), np.int64)
        kept, _ = K.held(data, spans, where, 1 << 36, 16)
        positions, _, size = K.unheld(exact(kept))
        assert size == len(kept) and (np.sort(positions) == np.sort(where)).all()
        _unheld(exact(kept[: rng.randrange(len(kept) + 1)]))
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        _unheld(exact(noise + kept[: rng.randrange(len(kept) + 1)].tobytes()))
        _unheld(exact(noise + damaged(rng)))
        spoilt = kept.copy()
        for _ in range(rng.randrange(4)):
            if len(spoilt):
                spoilt[rng.randrange(len(spoilt))] = rng.choice([0, 0xFF, rng.randrange(256)])
        _unheld(exact(spoilt))
        inputs = _sent_block(rng)
        for cut in rng.sample(range(len(inputs) + 1), min(len(inputs) + 1, 4)):
            count, lo, hi = K.scan_sent(exact(inputs[:cut]), exact(b'{"userId":"'))
            lines = inputs[:cut].count(b"\n") + (inputs[:cut][-1:] not in (b"", b"\n"))
            assert count in (-1, lines) and len(lo) == len(hi) <= max(count, 0)
        K.joined(exact(noise), data, rng.randrange(len(data) + 1))
        _bad_arguments(rng, data, spans)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
