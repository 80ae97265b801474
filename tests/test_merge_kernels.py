"""The merge's compiled kernels against plain Python: scores read exactly, reconciliation counted
exactly (however often fingerprints collide), numba loaded only when a kernel runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout import _mergekernels as K
from fanout import _writers
from fanout._outputs import Block, OutputRecord, parse_block, parse_output_line
from fanout.merge import open_results
from fanout.records import InputKind

# Scores as the service and other writers print them: Java-style exponents, plain decimals,
# integers, many digits (past the kernel's exact fast path), signs.
SCORE_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.floats(min_value=1e-12, max_value=1.0).map(lambda x: f"{x:.6E}"),
    st.floats(min_value=1e-12, max_value=1.0).map(lambda x: f"{x:.17g}"),
    st.integers(-(10**17), 10**17).map(str),
    st.sampled_from(["0", "-0.0", "1e22", "1e-22", "123456789012345678e-3", "3.773E-4"]),
)

ITEM = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters='"\\'),
    max_size=8,
).filter(lambda s: not any(ord(c) < 32 for c in s))


@st.composite
def common_lines(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for number in range(draw(st.integers(1, 6))):
        items = draw(st.lists(ITEM, min_size=1, max_size=5))
        scores = [draw(SCORE_TEXT) for _ in items]
        listed = ",".join(f'"{item}"' for item in items)
        body = (
            f'{{"input":{{"userId":"u{number}"}},"output":{{"recommendedItems":[{listed}],'
            f'"scores":[{",".join(scores)}]}}}}'
        )
        lines.append(body.encode())
    return lines


@settings(max_examples=150, deadline=None)
@given(lines=common_lines())
def test_parquet_scores_are_read_exactly(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    """Whatever the scores' spelling, the Parquet file built from byte ranges holds exactly the
    doubles the parser reads (the kernel's fast path or Python's float, never an approximation)."""
    anyio.run(_parquet_scores_are_read_exactly, tmp_path_factory, lines)


async def _parquet_scores_are_read_exactly(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    parsed = parse_block(0, Block(b"\n".join(lines)), InputKind.USER, 10_000)
    expected = [parse_output_line(line, InputKind.USER) for line in lines]
    usable = [r for r in expected if isinstance(r, OutputRecord)]
    if not len(parsed.common):
        return
    folder = tmp_path_factory.mktemp("p")
    async with open_results(folder / "r.parquet", InputKind.USER) as results:
        await results.write_common(parsed.common)
    table = pq.read_table(folder / "r.parquet").to_pylist()
    by_key = {r.key: r for r in usable}
    assert table
    for row in table:
        record = by_key[row["userId"]]
        assert row["recommendedItems"] == list(record.items)
        assert row["scores"] == list(record.scores or ())


def _reference(sent: list[bytes], out: list[tuple[bytes, bytes]]) -> dict[str, int]:
    """Reconciliation by the definition, with Python sets and dicts."""
    distinct = set(sent)
    tags: dict[bytes, bytes] = {}
    counts = Counter[str]()
    for tag, key in out:
        if key not in distinct:
            counts["unexpected"] += 1
            counts["collisions"] += tag in (b"r", b"e")
        else:
            tags[key] = tags.get(key, b"") + tag
    for key in distinct:
        seen = tags.get(key, b"")
        counts["duplicated_in_output"] += max(len(seen) - 1, 0)
        if b"r" in seen:
            counts["results"] += 1
        elif b"e" in seen:
            counts["errors"] += 1
        else:
            counts["missing"] += 1
            counts["collisions"] += bool(seen)
    counts["sent"] = len(distinct)
    return {name: counts[name] for name in K.RECONCILED}


IDS = st.sampled_from([b"a", b"b", b"ab", b"ba", b"\\u00e9", b"abc", b"x" * 40, b"y"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(IDS, max_size=12),
    st.lists(st.tuples(st.sampled_from([b"r", b"e", b"d", b"u"]), IDS), max_size=12),
    st.sampled_from([0, 1, 3, 2**64 - 1]),
)
def test_reconcile_counts_exactly_whatever_the_fingerprints(
    sent: list[bytes], out: list[tuple[bytes, bytes]], bits: int
) -> None:
    """The kernel's counts and missing IDs are the definition's, also when every fingerprint
    collides (mask 0) or many do (1, 3)."""
    sent_data = np.frombuffer(b"".join(b'"' + key + b'"\n' for key in sent), np.uint8)
    out_data = np.frombuffer(b"".join(tag + b'"' + key + b'"\n' for tag, key in out), np.uint8)
    written = np.array([ord("r"), ord("e")], np.uint8)
    counts, lo, hi = K.reconcile(sent_data, out_data, written, np.uint64(bits))
    assert dict(zip(K.RECONCILED, counts.tolist(), strict=True)) == _reference(sent, out)
    answered = {key for tag, key in out if tag in (b"r", b"e")}
    missing = [sent_data[a:b].tobytes() for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    assert sorted(missing) == sorted(set(sent) - answered)


def test_numba_is_imported_only_when_a_kernel_runs() -> None:
    """Commands that never merge (prepare, plan, status) do not pay for numba and LLVM."""
    code = (
        "import sys, fanout.cli, fanout.pipeline, fanout.merge\n"
        "assert 'numba' not in sys.modules\n"
        "from fanout import _mergekernels as K\n"
        "import numpy as np\n"
        "K.fingerprints(np.zeros(1, np.uint8), np.zeros(1, np.int64), np.ones(1, np.int64),"
        " np.uint64(1))\n"
        "assert 'numba' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


async def test_result_files_are_synced_as_they_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text result is synced to disk every `_SYNC_BYTES`, not only when it is committed."""
    synced: list[int] = []
    monkeypatch.setattr(_writers, "_SYNC_BYTES", 100)
    monkeypatch.setattr(_writers, "_FLUSH_BYTES", 1)
    monkeypatch.setattr(os, "fdatasync", synced.append)
    line = orjson.dumps({"input": {"userId": "u"}, "output": {"recommendedItems": ["a"] * 20}})
    record = parse_output_line(line, InputKind.USER)
    assert isinstance(record, OutputRecord)
    async with open_results(tmp_path / "r.jsonl", InputKind.USER) as results:
        for _ in range(5):
            await results.write([record])
    assert len(synced) >= 2


def test_kernels_stay_in_bounds_on_damaged_lines(tmp_path: Path) -> None:
    """Truncated and corrupted lines never make a kernel index outside an array: with numba's
    bounds checks on (compiled apart, in a private cache), that would raise IndexError."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    fuzz = Path(__file__).with_name("kernel_fuzz.py")
    subprocess.run([sys.executable, str(fuzz), "7", "300"], check=True, env=env, timeout=600)
