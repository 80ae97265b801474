"""How fast `merge_shard` merges one shard, and how much memory it takes, per result format.

Builds one shard in memory (N users, default 1,000,000; one input part and one `.out` object of
user-personalization lines with 25 items and scores, shuffled), then merges it from an in-memory
object store into JSON lines, CSV and Parquet, each in a child process so peak RSS is its own.
Prints lines/s and peak RSS; the baseline row is the parse alone (every line through
`parse_output_line`, nothing written), so the ratios show what routing, spilling, reconciling
and writing cost on top.

    .venv/bin/python benchmarks/merge.py [--users N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson

from _common import Timer, peak_rss_self, print_table, run_child
from fanout.merge import MergeSinks, OutputRecord, merge_shard, open_results, parse_output_line
from fanout.records import InputKind
from fanout.storage import ObjectInfo


def make_shard(users: int) -> tuple[bytes, bytes]:
    rng = random.Random(1)
    ids = [f"user-{i:09d}" for i in range(users)]
    sent = b"".join(b'{"userId":"' + u.encode() + b'"}\n' for u in ids)
    rng.shuffle(ids)
    items = [str(rng.randrange(100_000)) for _ in range(25)]
    scores = sorted((round(rng.random() / 100, 7) for _ in range(25)), reverse=True)
    tail = orjson.dumps({"recommendedItems": items, "scores": scores})
    out = b"".join(
        b'{"input":{"userId":"' + u.encode() + b'"},"output":' + tail + b',"error":null}\n'
        for u in ids
    )
    return sent, out


class Store:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key]))

    async def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        data = memoryview(self.objects[key])
        for at in range(0, len(data), chunk_size):
            yield bytes(data[at : at + chunk_size])


class Discard:
    async def write(self, data: bytes | Sequence[OutputRecord]) -> None:
        pass


async def merge(users: int, name: str) -> dict[str, object]:
    sent, out = make_shard(users)
    store = Store({"in/p.jsonl": sent, "out/s/p.jsonl.out": out})
    del sent, out
    with tempfile.TemporaryDirectory() as folder, Timer() as timer:
        if name == "parse only":
            lines = store.objects["out/s/p.jsonl.out"].splitlines()
            for line in lines:
                parse_output_line(line, InputKind.USER)
            size = 0
        else:
            path = Path(folder) / f"results.{name}"
            async with open_results(path, InputKind.USER) as results:
                sinks = MergeSinks(results, Discard(), Discard(), Discard())
                stats = await merge_shard(
                    store, "s3://b/out/s/", InputKind.USER, ["s3://b/in/p.jsonl"], sinks, shard=0
                )
            assert stats.results == users, stats
            size = path.stat().st_size
    return {
        "format": name,
        "seconds": round(timer.seconds, 2),
        "lines/s": round(users / timer.seconds),
        "MiB out": round(size / 2**20, 1),
        "peak RSS MiB": round(peak_rss_self() / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(orjson.dumps(asyncio.run(merge(args.users, args.child))).decode())
        return
    rows = []
    for name in ("parse only", "jsonl", "csv", "parquet"):
        child = run_child([sys.executable, __file__, "--users", str(args.users), "--child", name])
        rows.append(orjson.loads(child.stdout.strip().splitlines()[-1]))
    base = float(str(rows[0]["lines/s"]))
    for row in rows:
        row["× parse"] = round(float(str(row["lines/s"])) / base, 2)
    print(f"merge of one shard of {args.users:,} users (input and outputs held in memory)")
    print_table(rows)


if __name__ == "__main__":
    main()
