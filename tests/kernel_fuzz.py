"""Fuzz the merge's kernels with damaged output lines; run by
`test_merge_kernels.test_kernels_stay_in_bounds_on_damaged_lines` with `NUMBA_BOUNDSCHECK=1`,
so that an index outside an array raises IndexError instead of reading or writing past it."""

from __future__ import annotations

import random
import sys

import numpy as np

from fanout import _mergekernels as K
from fanout._outputs import Block, parse_block
from fanout.records import InputKind

GOOD = [
    b'{"input":{"userId":"u1"},"output":{"recommendedItems":["a","b"],"scores":[0.5,3.773E-4]},'
    b'"error":null}',
    b'{"input":{"userId":"Zo\xc3\xab"},"output":{"recommendedItems":["x","",","],"scores":'
    b"[1,-0.0,12345678901234567e-5]}}",
    b'{"input":{"userId":"u3"},"output":{"recommendedItems":["a"]}}',
    b'{"input":{"userId":"u4"},"output":{"recommendedItems":["a"],"scores":[1]},"error":null}\r',
]


def damaged(rng: random.Random) -> bytes:
    line = bytearray(rng.choice(GOOD))
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        at = rng.randrange(len(line) + 1)
        if what < 0.4:
            del line[at:]  # truncated
        elif what < 0.7 and line:
            line[min(at, len(line) - 1)] = rng.choice(b'"\\,]}[{:0e.-\x00\xc3\xff 9')
        else:
            line[at:at] = bytes([rng.randrange(256)])
    return bytes(line)


def main(seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    every = np.uint64(2**64 - 1)
    for _ in range(rounds):
        lines = [rng.choice(GOOD) if rng.random() < 0.3 else damaged(rng) for _ in range(20)]
        data = b"\n".join(lines) + rng.choice([b"", b"\n"])
        for limit in (40, 10_000):
            parsed = parse_block(0, Block(data), InputKind.USER, limit)
            common = parsed.common
            common.flat()
            common.lines()
            K.columns(common.data, common.spans)
            lo, hi = common.id_spans()
            prints = K.fingerprints(common.data, lo, hi, every)
            tags = np.full(len(lo), ord("r"), np.uint8)
            records, _ = K.partitioned(
                common.data, lo, hi, tags, (prints % np.uint64(4)).astype(np.int64), 4
            )
            sent = K.readonly(np.frombuffer(records.tobytes().replace(b'r"', b'"'), np.uint8))
            K.reconcile(sent, K.readonly(records), np.array([114, 101], np.uint8), every)
            K.route(
                np.sort(prints[::2]),
                np.zeros(len(prints[::2]), np.uint8),
                prints,
                K.as_array("rdu"),
            )
            where = np.array(rng.sample(range(1 << 40), len(lo)), np.int64)
            kept, _ = K.held(common.data, common.spans, where, 1 << 36, 16)
            K.unheld(K.readonly(kept))
            K.unheld(K.readonly(kept[: rng.randrange(len(kept) + 1)].copy()))
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            K.unheld(np.frombuffer(noise + damaged(rng), np.uint8))
        K.scan_sent(np.frombuffer(data, np.uint8), K.as_array('{"input":{"userId":"'))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
