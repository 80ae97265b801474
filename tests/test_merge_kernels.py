"""The merge's kernels (C, `fanout._mergenative`) against plain Python: scores read exactly,
reconciliation counted exactly (however often fingerprints collide), damaged lines read as the
parser reads them, and no read or write outside a buffer, whatever the lines or the arguments."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernel_fuzz
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


def test_bad_arguments_raise_value_error() -> None:
    """Spans, positions and partitions outside what they index are refused before any loop
    runs."""
    data = K.as_array('{"input":{"userId":"u"},"output":{"recommendedItems":["a"]}}')
    kinds, spans = K.scan(data, K.head_of("userId"), 1000)
    assert kinds.tolist() == [K.COMMON]
    past = spans.copy()
    past[0, K.ITEMS_HI] = len(data) + 1
    head, middle = K.as_array('{"userId":"'), K.as_array('","recommendedItems":["')
    lo, hi = spans[:, K.ID_LO].copy(), spans[:, K.ID_HI].copy()
    calls: list[Callable[[], object]] = [
        lambda: K.flat_lines(data, past, head, middle),
        lambda: K.columns(data, past),
        lambda: K.flat_lines(data, spans[:, :8], head, middle),
        lambda: K.fingerprints(data, hi, lo, np.uint64(1)),
        lambda: K.partitioned(data, lo, hi, np.zeros(1, np.uint8), np.array([2]), 2),
        lambda: K.held(data, spans, np.array([-1]), 1, 4),
        lambda: K.held(data, spans, np.array([4]), 1, 4),
        lambda: K.joined(data, data, len(data) + 1),
        lambda: K.route(np.zeros(2, np.uint64), np.zeros(1, np.uint8), lo.view(np.uint64), head),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_damaged_lines_read_as_the_parser_reads_them() -> None:
    """On damaged lines and with spoilt arguments (`kernel_fuzz`), the kernels agree with the
    parser and refuse what they cannot use with ValueError, never another error."""
    kernel_fuzz.main(3, 200)


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


# Reads one byte past the end of a buffer: AddressSanitizer must stop it, or the fuzz below
# proves nothing.
_CANARY = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *past_end(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    unsigned char c = ((volatile unsigned char *)b.buf)[b.len];
    PyBuffer_Release(&b);
    return PyLong_FromLong(c);
}
static PyMethodDef methods[] = {{"past_end", past_end, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "canary", NULL, -1, methods};
PyMODINIT_FUNC PyInit_canary(void) { return PyModule_Create(&module); }
"""


def test_kernels_stay_in_bounds_on_damaged_lines(tmp_path: Path) -> None:
    """Damaged lines and spoilt arguments never make a kernel read or write outside a buffer:
    the fuzz (`kernel_fuzz`) runs against the extension built with AddressSanitizer, which
    stops the run at the first such access, as it stops a canary that reads one byte too far."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    found = subprocess.run([*cc, "-print-file-name=libasan.so"], capture_output=True, text=True)
    libasan = found.stdout.strip()
    if found.returncode or not os.path.isabs(libasan):
        pytest.skip(f"{cc[0]} has no AddressSanitizer runtime (libasan.so)")
    paths = sysconfig.get_paths()
    includes = [f"-I{paths['include']}", f"-I{paths['platinclude']}"]
    flags = ["-shared", "-fPIC", "-O1", "-g", "-std=c11", "-fsanitize=address"]
    flags.append("-fno-omit-frame-pointer")

    def build(source: Path, target: Path) -> None:
        subprocess.run([*cc, *flags, *includes, str(source), "-o", str(target)], check=True)

    extension = tmp_path / "_mergenative.so"
    build(Path(K.__file__).with_name("_mergenative.c"), extension)
    (tmp_path / "canary.c").write_text(_CANARY)
    build(tmp_path / "canary.c", tmp_path / "canary.so")
    env = {
        **os.environ,
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0",
        "PYTHONMALLOC": "malloc",  # Python's own objects in ASan's heap too
    }
    canary = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import canary, numpy\n"
        "canary.past_end(numpy.zeros(16, numpy.uint8))\n"
    )
    tripped = subprocess.run(
        [sys.executable, "-c", canary], env=env, capture_output=True, text=True, timeout=120
    )
    assert tripped.returncode != 0 and "heap-buffer-overflow" in tripped.stderr, tripped.stderr
    fuzz = Path(kernel_fuzz.__file__)
    run = subprocess.run(
        [sys.executable, str(fuzz), "7", "2000", str(extension)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-5000:]
