"""merge_shard against an in-memory object store: routing, reconciliation, collisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest

import fanout.merge as merge_module
from fanout.errors import InputError, MergeError
from fanout.merge import (
    MergeOptions,
    MergeSinks,
    MergeStats,
    OutputRecord,
    Reconciliation,
    merge_shard,
    open_results,
)
from fanout.records import InputKind
from fanout.storage import ObjectInfo

BUCKET = "b"
OUT = "s3://b/out/run/shard-00000/"


class MemoryStore:
    """An ObjectReader over a dict, chunking reads finely to exercise line splitting."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        assert bucket == BUCKET
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key]))

    async def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        data = self.objects[key]
        for at in range(0, len(data), chunk_size):
            yield data[at : at + chunk_size]


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()
        self.records: list[OutputRecord] = []

    async def write(self, data: bytes) -> None:
        self.data += data

    def lines(self) -> list[bytes]:
        return bytes(self.data).splitlines()

    def json(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.lines()]


class Results:
    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    async def write(self, records: Sequence[OutputRecord]) -> None:
        self.records.extend(records)


def sinks() -> tuple[MergeSinks, Results, Collect, Collect, Collect]:
    results, errors, missing, corrupt = Results(), Collect(), Collect(), Collect()
    return MergeSinks(results, errors, missing, corrupt), results, errors, missing, corrupt


def out_line(user: str, error: str | None = None) -> bytes:
    if error:
        return orjson.dumps(
            {"input": {"userId": user}, "output": {"recommendedItems": []}, "error": error}
        )
    return orjson.dumps(
        {
            "input": {"userId": user},
            "output": {"recommendedItems": ["i1", "i2"], "scores": [0.5, 3.773e-4]},
            "error": None,
        }
    )


def put_input(store: MemoryStore, key: str, users: list[str]) -> str:
    store.objects[key] = b"".join(orjson.dumps({"userId": u}) + b"\n" for u in users)
    return f"s3://{BUCKET}/{key}"


async def run(
    store: MemoryStore, parts: list[str], kind: InputKind = InputKind.USER, **opts: object
) -> tuple[MergeStats, Results, Collect, Collect, Collect]:
    all_sinks, results, errors, missing, corrupt = sinks()
    options = MergeOptions(**{"chunk_bytes": 7, **opts})  # type: ignore[arg-type]
    stats = await merge_shard(store, OUT, kind, parts, all_sinks, shard=3, options=options)
    return stats, results, errors, missing, corrupt


def assert_exactly_once(
    sent: set[str], results: Results, errors: Collect, missing: Collect, stats: MergeStats
) -> None:
    answered = [r.key for r in results.records] + [str(e["id"]) for e in errors.json()]
    missed = [line.decode() for line in missing.lines()]
    assert sorted(answered + missed) == sorted(sent)
    assert stats.sent == len(sent) == stats.results + stats.errors + stats.missing


@pytest.mark.parametrize("partitions", [1, 3, 64])
async def test_results_errors_and_missing_are_routed_and_reconciled(partitions: int) -> None:
    """Successes, error lines and unanswered IDs each land in their sink, each ID once, however
    many spill partitions."""
    store = MemoryStore()
    users = [f"u{i}" for i in range(40)] + ["Zoë", 'q"uote']
    parts = [
        put_input(store, "in/run/shard-00000/part-00000.jsonl", users[:20]),
        put_input(store, "in/run/shard-00000/part-00001.jsonl", users[20:]),
    ]
    lines = [out_line(u) for u in users[:30]] + [
        out_line(u, "User error: nope") for u in users[30:35]
    ]
    lines += [out_line("Zoë"), out_line('q"uote')]
    store.objects["out/run/shard-00000/part-00000.jsonl.out"] = b"\n".join(lines[::-1]) + b"\n"
    store.objects["out/run/shard-00000/_CHECK"] = b""
    store.objects["out/run/shard-00000/notes.txt"] = b"not output"
    stats, results, errors, missing, corrupt = await run(store, parts, partitions=partitions)
    assert stats == MergeStats(
        shard=3,
        sent=42,
        duplicated_in_input=0,
        objects=1,
        ignored_objects=2,
        lines=37,
        results=32,
        errors=5,
        missing=5,
        corrupt=0,
        unexpected=0,
        duplicated_in_output=0,
        collisions=0,
    )
    assert errors.json()[0] == {"id": "u34", "error": "User error: nope", "shard": 3}
    assert sorted(missing.lines()) == sorted(u.encode() for u in users[35:40])
    assert corrupt.data == b""
    assert_exactly_once(set(users), results, errors, missing, stats)
    Reconciliation.of([stats]).check(lines=50, blank=3, rejected=2, duplicates=3)


async def test_corrupt_unexpected_and_duplicate_lines_are_counted_and_listed() -> None:
    """Corrupt lines are reported with object and line; their IDs count as missing."""
    store = MemoryStore()
    users = ["a", "b", "c", "d"]
    parts = [put_input(store, "in/p.jsonl", users)]
    body = b"\n".join(
        [
            out_line("a"),
            b"",
            out_line("b")[:25],  # truncated
            out_line("zz"),  # never sent
            out_line("a"),  # duplicate
            out_line("c", "User error: x"),
            b"{garbage",
        ]
    )
    store.objects["out/run/shard-00000/p.jsonl.out"] = body  # no final line end
    stats, results, errors, missing, corrupt = await run(store, parts)
    assert (stats.results, stats.errors, stats.missing) == (1, 1, 2)
    assert (stats.corrupt, stats.unexpected, stats.duplicated_in_output) == (2, 1, 1)
    assert stats.lines == 6
    reports = corrupt.json()
    assert [(r["line"], r["object"], r["shard"]) for r in reports] == [
        (3, "s3://b/out/run/shard-00000/p.jsonl.out", 3),
        (7, "s3://b/out/run/shard-00000/p.jsonl.out", 3),
    ]
    assert "truncated" in str(reports[0]["reason"])
    assert sorted(missing.lines()) == [b"b", b"d"]
    assert [r.key for r in results.records] == ["a"]
    assert_exactly_once(set(users), results, errors, missing, stats)


async def test_no_outputs_means_everything_is_missing(tmp_path: Path) -> None:
    """With no .out object at all, every sent ID is listed missing; local input parts work."""
    store = MemoryStore()
    part = tmp_path / "part-00000.jsonl"
    part.write_bytes(b'{"userId":"x"}\n\n{"userId":"y"}\n{"userId":"x"}\n')
    stats, _, _, missing, _ = await run(store, [str(part)])
    assert (stats.sent, stats.duplicated_in_input, stats.missing, stats.objects) == (2, 1, 2, 0)
    assert sorted(missing.lines()) == [b"x", b"y"]
    with pytest.raises(MergeError, match="4 input lines but 3 accounted"):
        Reconciliation.of([stats]).check(lines=4, blank=0, rejected=0, duplicates=0)
    Reconciliation.of([stats]).check(lines=5, blank=1, rejected=1, duplicates=0)


async def test_fingerprint_collisions_never_hide_a_missing_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With fingerprints that collide all the time, every sent ID is still answered or listed."""
    monkeypatch.setattr(merge_module, "_FINGERPRINT_BITS", np.uint64(3))
    store = MemoryStore()
    users = [f"user-{i}" for i in range(30)]
    parts = [put_input(store, "in/p.jsonl", users)]
    answered = users[:10]
    lines = [out_line(u) for u in answered] + [out_line("stranger")]
    store.objects["out/run/shard-00000/p.jsonl.out"] = b"\n".join(lines)
    stats, results, _, missing, _ = await run(store, parts, partitions=4)
    written = {r.key for r in results.records}
    listed = {line.decode() for line in missing.lines()}
    assert stats.sent == 30 and stats.results + stats.errors + stats.missing == 30
    assert listed == set(users) - (written & set(users))
    assert stats.results == len(written & set(users))
    assert stats.unexpected == 1 and stats.collisions >= 1


async def test_damaged_input_part_is_an_error() -> None:
    """A shard input line that is not a record of the kind stops the merge with where it is."""
    store = MemoryStore()
    store.objects["in/p.jsonl"] = b'{"userId":"a"}\n{"itemId":"b"}\n'
    with pytest.raises(MergeError, match=r"s3://b/in/p.jsonl, line 2: .*prepare the run again"):
        await run(store, ["s3://b/in/p.jsonl"])


async def test_missing_sink_quotes_ids_with_control_characters() -> None:
    """An ID that would break the one-per-line listing is written JSON-quoted."""
    store = MemoryStore()
    parts = [put_input(store, "in/p.jsonl", ["a\nb", "plain"])]
    _, _, _, missing, _ = await run(store, parts)
    assert sorted(missing.lines()) == [b'"a\\nb"', b"plain"]


async def test_merge_into_a_result_file(tmp_path: Path) -> None:
    """merge_shard writes through a ResultFile; the file holds one row per answered ID."""
    store = MemoryStore()
    parts = [put_input(store, "in/p.jsonl", ["a", "b"])]
    store.objects["out/run/shard-00000/p.jsonl.out"] = out_line("b") + b"\n" + out_line("a")
    errors, missing, corrupt = Collect(), Collect(), Collect()
    async with open_results(tmp_path / "r.jsonl", InputKind.USER) as results:
        stats = await merge_shard(
            store,
            OUT,
            InputKind.USER,
            parts,
            MergeSinks(results, errors, missing, corrupt),
            shard=0,
            options=MergeOptions(spill_dir=tmp_path / "spill"),
        )
    rows = [orjson.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert sorted(r["userId"] for r in rows) == ["a", "b"]
    assert rows[0]["scores"] == [0.5, 3.773e-4]
    assert stats.results == 2
    assert list((tmp_path / "spill").iterdir()) == [], "spill files are removed"


class FailingStore(MemoryStore):
    async def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        if chunk_size > 0:
            raise InputError(f"access denied to s3://{bucket}/{key} (GetObject)")
        yield b""


async def test_unreadable_output_is_a_merge_error() -> None:
    """An object that cannot be read stops the merge with a MergeError naming the shard."""
    store = FailingStore()
    store.objects["out/run/shard-00000/p.jsonl.out"] = b""
    with pytest.raises(MergeError, match=r"merging shard 3: access denied to s3://b/in/p.jsonl"):
        await run(store, ["s3://b/in/p.jsonl"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"userId":"}\n{"userId":"a"b"}\n',
        b'{"userId":"a"}\n{"userId":""}\n',
        b'{"userId":"a"}\n{"userId":"b","x":"y"}\n',
        b'{"userId":"a"}\n{"userId":"b"} \n',
        b'{"userId":"a"}\n{"userId":"b\\u0000"}\n{"userId":"c\\"}\n',
    ],
)
async def test_input_parts_are_read_exactly(body: bytes) -> None:
    """A damaged batch of input lines is an error naming the line; escapes are decoded."""
    store = MemoryStore()
    store.objects["in/p.jsonl"] = body
    want: list[str] = []
    for number, line in enumerate(body.splitlines(), start=1):
        try:
            value = orjson.loads(line).get("userId")
        except (orjson.JSONDecodeError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            with pytest.raises(MergeError, match=f"line {number}: "):
                await run(store, ["s3://b/in/p.jsonl"], chunk_bytes=1 << 20)
            return
        want.append(value)
    stats, _, _, missing, _ = await run(store, ["s3://b/in/p.jsonl"], chunk_bytes=1 << 20)
    assert stats.sent == len(want)
    assert sorted(
        orjson.loads(x) if x.startswith(b'"') else x.decode() for x in missing.lines()
    ) == sorted(want)


def test_spill_partitions_follow_the_shard_size() -> None:
    """One partition per 8 MiB of input lines, at least one, at most the configured number."""
    options = MergeOptions()
    assert options.for_input(0).partitions == 1
    assert options.for_input(8 * 1024 * 1024).partitions == 1
    assert options.for_input(8 * 1024 * 1024 + 1).partitions == 2
    assert options.for_input(10**12).partitions == 64
    assert MergeOptions(partitions=4).for_input(10**12).partitions == 4
