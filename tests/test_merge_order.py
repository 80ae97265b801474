"""`--order input`: a shard's results written in input order (`OrderedLines`), and a run's
shards in shard order (`InputOrder`), with bounded memory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.merge import InputOrder, MergeOptions, MergeSinks, OrderedLines, merge_shard
from fanout.records import InputKind
from test_merge_shard import OUT, Collect, MemoryStore, Results, out_line, put_input


def odd_line(user: str) -> bytes:
    """A usable line not of the common shape (spaces), so it is parsed as a record."""
    return b'{ "input": {"userId": %s}, "output": {"recommendedItems": ["x"]} }' % orjson.dumps(
        user
    )


async def merge_ordered(
    store: MemoryStore, parts: list[str], tmp_path: Path, budget: int, results: object
) -> tuple[object, Collect]:
    lines = OrderedLines(tmp_path / "ordered", budget=budget)
    (tmp_path / "ordered").mkdir(exist_ok=True)
    errors = Collect()
    sinks = MergeSinks(results, errors, Collect(), Collect())  # type: ignore[arg-type]
    stats = await merge_shard(
        store, OUT, InputKind.USER, parts, sinks, shard=0,
        options=MergeOptions(chunk_bytes=97), ordered=lines,
    )  # fmt: skip
    assert isinstance(results, Results) and not results.records, "nothing written before"
    await lines.write_to(results, InputKind.USER)
    lines.close()
    return stats, errors


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(0, 300),
    seed=st.integers(0, 2**32),
    budget=st.sampled_from([1, 300, 1 << 20]),
)
async def test_results_come_back_in_input_order(
    tmp_path: Path, count: int, seed: int, budget: int
) -> None:
    """Whatever order the outputs are in, across objects, with errors, odd lines, duplicates
    in the input and in the output, and files split again for a tiny budget, the results are
    the input's answered IDs in input order, each once."""
    rng = random.Random(seed)
    users = [f"u{rng.randrange(count * 2 + 1)}" for _ in range(count)]  # with repeats
    store = MemoryStore()
    half = count // 2
    parts = [put_input(store, "in/p0.jsonl", users[:half])]
    parts.append(put_input(store, "in/p1.jsonl", users[half:]))
    distinct = list(dict.fromkeys(users))
    answered = [u for u in distinct if rng.random() < 0.8]
    failed = {u for u in answered if rng.random() < 0.1}
    lines = [
        out_line(u, "bad") if u in failed else (odd_line(u) if rng.random() < 0.2 else out_line(u))
        for u in answered
    ]
    lines += [out_line(u) for u in answered if u not in failed and rng.random() < 0.1]  # repeats
    rng.shuffle(lines)
    third = len(lines) // 3
    for k, chunk in enumerate((lines[:third], lines[third:])):
        store.objects[f"out/run/shard-00000/p{k}.jsonl.out"] = b"\n".join(chunk)
    results = Results()
    tmp = tmp_path / f"case-{seed}-{count}-{budget}"
    tmp.mkdir()
    stats, errors = await merge_ordered(store, parts, tmp, budget, results)
    want = [u for u in answered if u not in failed]
    assert [r.key for r in results.records] == want
    assert sorted(str(e["id"]) for e in errors.json()) == sorted(failed)
    assert stats.results == len(want)  # type: ignore[attr-defined]
    assert list((tmp / "ordered").iterdir()) == [], "spill files are removed as written"


async def test_run_shards_are_written_in_shard_order_whatever_order_they_finish(
    tmp_path: Path,
) -> None:
    """`InputOrder` holds back a shard until every earlier one is written."""
    store = MemoryStore()
    shards = {0: ["a", "b", "c"], 1: ["d", "e"], 2: ["f"]}
    results = Results()
    order = InputOrder(results, InputKind.USER, tmp_path)
    written_after = {}
    for shard in (2, 0, 1):
        users = shards[shard]
        part = put_input(store, f"in/s{shard}.jsonl", users)
        store.objects[f"out/s{shard}/x.out"] = b"\n".join(map(out_line, reversed(users)))
        lines = order.lines_for(shard)
        sinks = MergeSinks(Results(), Collect(), Collect(), Collect())
        await merge_shard(
            store, f"s3://b/out/s{shard}/", InputKind.USER, [part], sinks, shard=shard,
            ordered=lines,
        )  # fmt: skip
        await order.merged(shard, lines)
        written_after[shard] = "".join(r.key for r in results.records)
    assert written_after == {2: "", 0: "abc", 1: "abcdef"}
    order.check_written()
    assert os.listdir(tmp_path) == [], "each shard's spill is removed once written"
