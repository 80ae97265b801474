"""`fanout.retry.combine`: a retry's rows appended to the run's result file, whichever of the
two is gzipped (a run merged again to `.gz` may have retries whose results are not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fanout.errors import MergeError
from fanout.retry import combine


def _write(path: Path, text: str) -> None:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _read(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode()


# format, the parent's rows, the child's, what the parent holds after (a CSV child's header
# is left off)
CASES = {
    "jsonl": ('{"userId":"a"}\n', '{"userId":"b"}\n', '{"userId":"a"}\n{"userId":"b"}\n'),
    "csv": ("userId,items\na,x|y\n", "userId,items\nb,z\n", "userId,items\na,x|y\nb,z\n"),
}


@pytest.mark.parametrize("fmt", sorted(CASES))
@pytest.mark.parametrize("parent_gz", [False, True], ids=["parent", "parent.gz"])
@pytest.mark.parametrize("child_gz", [False, True], ids=["child", "child.gz"])
def test_rows_are_appended_whichever_is_gzipped(
    tmp_path: Path, fmt: str, parent_gz: bool, child_gz: bool
) -> None:
    first = tmp_path / ("run." + fmt + (".gz" if parent_gz else ""))
    second = tmp_path / ("results." + fmt + (".gz" if child_gz else ""))
    before, added, after = CASES[fmt]
    _write(first, before)
    _write(second, added)
    combine(first, second, fmt)
    assert _read(first) == after  # gzip.decompress reads every member


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("results.csv.gz", gzip.compress(b"userId,items\nb,z\n")[:-12]),  # cut short
        ("results.csv.gz", b"\x1f\x8bnot gzip at all"),
        ("results.parquet", b"PAR1 not Parquet PAR1"),
        ("gone.csv", None),
    ],
    ids=["truncated-gzip", "bad-gzip", "bad-parquet", "gone"],
)
def test_a_retry_result_that_cannot_be_read_is_a_merge_error(
    tmp_path: Path, name: str, body: bytes | None
) -> None:
    """A child file that is gone or corrupt is a MergeError naming both files, and the run's
    result file is left as it was, with no temporary file beside it."""
    fmt = "parquet" if name.endswith(".parquet") else "csv"
    first = tmp_path / ("run.csv" if fmt == "csv" else "run.parquet")
    if fmt == "parquet":
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"userId": ["a"]}), first)
    else:
        first.write_text("userId,items\na,x|y\n")
    before = first.read_bytes()
    second = tmp_path / name
    if body is not None:
        second.write_bytes(body)
    with pytest.raises(MergeError, match=f"cannot add the results in {second} to {first}: "):
        combine(first, second, fmt)
    assert first.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {first.name} | ({second.name} if body is not None else set())
    )
