"""`fanout.retry.combine`: a retry's rows appended to the run's result file, whichever of the
two is gzipped (a run merged again to `.gz` may have retries whose results are not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fanout.retry import combine


def _write(path: Path, text: str) -> None:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _read(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode()


@pytest.mark.parametrize("parent", ["run.jsonl", "run.jsonl.gz"])
@pytest.mark.parametrize("child", ["results.jsonl", "results.jsonl.gz"])
def test_json_lines_are_appended_whichever_is_gzipped(
    tmp_path: Path, parent: str, child: str
) -> None:
    first, second = tmp_path / parent, tmp_path / child
    _write(first, '{"userId":"a"}\n')
    _write(second, '{"userId":"b"}\n')
    combine(first, second, "jsonl")
    assert _read(first) == '{"userId":"a"}\n{"userId":"b"}\n'  # gzip.decompress: every member


@pytest.mark.parametrize("parent", ["run.csv", "run.csv.gz"])
@pytest.mark.parametrize("child", ["results.csv", "results.csv.gz"])
def test_csv_rows_are_appended_without_the_childs_header(
    tmp_path: Path, parent: str, child: str
) -> None:
    first, second = tmp_path / parent, tmp_path / child
    _write(first, "userId,recommendedItems\na,x|y\n")
    _write(second, "userId,recommendedItems\nb,z\n")
    combine(first, second, "csv")
    assert _read(first) == "userId,recommendedItems\na,x|y\nb,z\n"
