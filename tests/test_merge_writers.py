"""Result files: each format round-trips, writes are atomic, existing files are refused."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fanout._outputs import Block, OutputRecord, parse_block, parse_output_line
from fanout.errors import ConfigError, MergeError
from fanout.merge import ResultFormat, ResultShape, open_results
from fanout.records import InputKind


def rec(key: str, items: tuple[str, ...], scores: tuple[float, ...] | None = None) -> OutputRecord:
    raw = orjson.dumps(
        {
            "input": {"userId": key},
            "output": {"recommendedItems": items, **({"scores": scores} if scores else {})},
        }
    )
    return OutputRecord(key, raw, items, scores)


RECORDS = [
    rec("u1", ("a", "b"), (0.5, 3.773e-4)),
    rec('Zoë, "the" user', ("x|y", "z"), (1e-7, 0.25)),
    rec("u3", ()),
]


def listing(folder: Path) -> list[Path]:
    return list(folder.iterdir())


async def write(path: Path, records: list[OutputRecord], **kwargs: object) -> int:
    async with open_results(path, InputKind.USER, **kwargs) as results:  # type: ignore[arg-type]
        await results.write(records[:1])
        await results.write(records[1:])
    return results.rows


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
async def test_jsonl_round_trips(tmp_path: Path, name: str) -> None:
    """JSON lines hold one flat record per ID; .gz is compressed."""
    path = tmp_path / name
    assert await write(path, RECORDS) == 3
    data = path.read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    rows = [orjson.loads(line) for line in data.splitlines()]
    assert rows == [
        {"userId": "u1", "recommendedItems": ["a", "b"], "scores": [0.5, 3.773e-4]},
        {"userId": 'Zoë, "the" user', "recommendedItems": ["x|y", "z"], "scores": [1e-7, 0.25]},
        {"userId": "u3", "recommendedItems": []},
    ]
    assert pl.read_ndjson(io.BytesIO(data))["userId"].to_list()[0] == "u1"


async def test_raw_jsonl_keeps_the_service_lines(tmp_path: Path) -> None:
    """Raw mode writes each line as the service wrote it."""
    path = tmp_path / "raw.jsonl"
    await write(path, RECORDS, raw=True)
    assert path.read_bytes().splitlines() == [r.raw for r in RECORDS]


@pytest.mark.parametrize(
    ("name", "separator"), [("r.csv", "|"), ("r.csv.gz", ";"), ("comma.csv", ",")]
)
async def test_csv_round_trips_with_quoting(tmp_path: Path, name: str, separator: str) -> None:
    """CSV has a header, joined lists, and quotes what needs quoting."""
    path = tmp_path / name
    await write(path, RECORDS, separator=separator)
    data = path.read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["userId", "recommendedItems", "scores"]
    assert rows[2][0] == 'Zoë, "the" user'
    assert rows[2][1].split(separator) == (["x|y", "z"] if separator != "|" else ["x", "y", "z"])
    assert [float(s) for s in rows[1][2].split(separator)] == [0.5, 3.773e-4]
    assert rows[3] == ["u3", "", ""]


async def test_parquet_round_trips_in_row_groups(tmp_path: Path) -> None:
    """Parquet has typed list columns and is written a row group at a time."""
    path = tmp_path / "r.parquet"
    records = [rec(f"u{i}", (f"i{i}", "j"), (0.5, 0.25)) for i in range(10)] + RECORDS
    async with open_results(path, InputKind.USER, row_group_rows=4) as results:
        for at in range(0, len(records), 3):
            await results.write(records[at : at + 3])
    table = pq.read_table(path)
    assert table.column_names == ["userId", "recommendedItems", "scores"]
    assert table.schema.field("scores").type.value_type == pa.float64()
    assert table.schema.field("recommendedItems").type.value_type == pa.string()
    assert table.num_rows == 13
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    frame = pl.read_parquet(path)
    assert frame.row(11) == ('Zoë, "the" user', ["x|y", "z"], [1e-7, 0.25])
    assert frame.row(12) == ("u3", [], None)


async def test_parquet_themes_and_segments(tmp_path: Path) -> None:
    """Theme and segment results get their own columns."""
    theme = parse_output_line(
        b'{"input":{"itemId":"1"},"output":{"recommendedItems":["2"],"theme":"T",'
        b'"itemsThemeRelevanceScores":[0.1]}}',
        InputKind.ITEM,
    )
    segment = parse_output_line(
        b'{"input":{"itemId":"1"},"output":{"usersList":["u"]}}', InputKind.ITEM
    )
    assert isinstance(theme, OutputRecord) and isinstance(segment, OutputRecord)
    async with open_results(tmp_path / "t.parquet", InputKind.ITEM) as results:
        await results.write([theme])
    assert pl.read_parquet(tmp_path / "t.parquet").row(0) == ("1", ["2"], "T", [0.1])
    async with open_results(tmp_path / "s.csv", InputKind.ITEM) as results:
        await results.write([segment])
    assert (tmp_path / "s.csv").read_text().splitlines() == ["itemId,users", "1,u"]
    with pytest.raises(MergeError, match="segments"):
        async with open_results(tmp_path / "mixed.parquet", InputKind.ITEM) as results:
            await results.write([theme, segment])
    assert not (tmp_path / "mixed.parquet").exists()


@pytest.mark.parametrize("name", ["e.jsonl", "e.csv", "e.parquet"])
async def test_empty_results_are_valid_files(tmp_path: Path, name: str) -> None:
    """No results still gives a readable (empty) file with the kind's columns."""
    path = tmp_path / name
    async with open_results(path, InputKind.USER):
        pass
    if name.endswith(".parquet"):
        assert pq.read_table(path).column_names == ["userId", "recommendedItems", "scores"]
    elif name.endswith(".csv"):
        assert path.read_text() == "userId,recommendedItems,scores\n"
    else:
        assert path.read_bytes() == b""


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv", "r.parquet"])
async def test_failure_leaves_no_partial_file(tmp_path: Path, name: str) -> None:
    """An error inside the block removes the temporary file and creates no destination."""
    path = tmp_path / name
    with pytest.raises(RuntimeError, match="boom"):
        async with open_results(path, InputKind.USER, row_group_rows=1) as results:
            await results.write(RECORDS)
            raise RuntimeError("boom")
    assert listing(tmp_path) == []


async def test_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    """With overwrite, a failed write leaves the old file as it was."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"old\n")
    with pytest.raises(RuntimeError):
        async with open_results(path, InputKind.USER, overwrite=True) as results:
            await results.write(RECORDS)
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old\n"
    assert listing(tmp_path) == [path]


async def test_existing_file_is_refused_without_overwrite(tmp_path: Path) -> None:
    """An existing destination is an error that says to pass --overwrite; with it, replaced."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"old\n")
    with pytest.raises(ConfigError, match="already exists: pass --overwrite"):
        async with open_results(path, InputKind.USER):
            pass
    assert path.read_bytes() == b"old\n"
    await write(path, RECORDS, overwrite=True)
    assert path.read_text().startswith("userId,")


async def test_file_created_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    """If the destination appears during the write, it is kept and the write fails."""
    path = tmp_path / "r.jsonl"
    with pytest.raises(ConfigError, match="pass --overwrite"):
        async with open_results(path, InputKind.USER) as results:
            await results.write(RECORDS)
            path.write_bytes(b"theirs\n")
    assert path.read_bytes() == b"theirs\n"
    assert listing(tmp_path) == [path]


def test_format_from_name_and_bad_names() -> None:
    """The extension picks the format; an unknown one says what to name the file."""
    assert ResultFormat.for_path(Path("a.JSONL.gz")) is ResultFormat.JSONL
    assert ResultFormat.for_path(Path("a.csv")) is ResultFormat.CSV
    assert ResultFormat.for_path(Path("a.parquet")) is ResultFormat.PARQUET
    with pytest.raises(ConfigError, match=r"\.jsonl, \.csv or \.parquet"):
        ResultFormat.for_path(Path("a.txt"))
    with pytest.raises(ConfigError, match="raw"):
        open_results("a.csv", InputKind.USER, raw=True)
    with pytest.raises(ConfigError, match=r"drop the \.gz"):
        open_results("a.parquet.gz", InputKind.USER, fmt=ResultFormat.PARQUET)
    assert ResultShape.of(RECORDS[0]) is ResultShape.RECOMMENDATIONS


async def test_explicit_format_overrides_the_name(tmp_path: Path) -> None:
    """An explicit format wins over the extension."""
    path = tmp_path / "results.out"
    await write(path, RECORDS, fmt=ResultFormat.CSV)
    assert path.read_text().startswith("userId,recommendedItems,scores\n")


async def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    """A destination in a folder that does not exist is refused up front."""
    with pytest.raises(ConfigError, match="does not exist"):
        async with open_results(tmp_path / "nope" / "r.jsonl", InputKind.USER):
            pass


COMMON_LINES = [
    b'{"input":{"userId":"u1"},"output":{"recommendedItems":["a","b"],"scores":[0.5,3.773E-4]},'
    b'"error":null}',
    b'{"input":{"userId":"Zo\xc3\xab, \'q\'"},"output":{"recommendedItems":["x|y","z"],'
    b'"scores":[1E-7,1]},"error":null}',
    b'{"input":{"userId":"u3"},"output":{"recommendedItems":[""],"scores":[0]}}',
]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("r.jsonl", {}),
        ("raw.jsonl", {"raw": True}),
        ("r.csv", {}),
        ("r.parquet", {}),
        ("t.parquet", {"shape": ResultShape.THEMES}),
    ],
)
async def test_common_lines_write_as_their_records_do(
    tmp_path: Path, name: str, options: dict[str, object]
) -> None:
    """Lines kept as byte ranges make the same file as the same lines parsed into records."""
    parsed = parse_block(0, Block(b"\n".join(COMMON_LINES)), InputKind.USER, 1000)
    common = parsed.common
    assert len(common) == 3
    records = common.records(InputKind.USER)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with open_results(tmp_path / "a" / name, InputKind.USER, **options) as fast:  # type: ignore[arg-type]
        await fast.write_common(common.take([2]))
        await fast.write_common(common.take([0, 1]))
    async with open_results(tmp_path / "b" / name, InputKind.USER, **options) as slow:  # type: ignore[arg-type]
        await slow.write(records[2:])
        await slow.write(records[:2])
    assert fast.rows == slow.rows == 3
    a, b = tmp_path / "a" / name, tmp_path / "b" / name
    if name.endswith(".parquet"):
        assert pq.read_table(a).equals(pq.read_table(b))
    elif name == "r.jsonl":  # the same values; numbers as the service wrote them
        assert [orjson.loads(x) for x in a.read_bytes().splitlines()] == [
            orjson.loads(x) for x in b.read_bytes().splitlines()
        ]
        assert b"3.773E-4" in a.read_bytes()
    else:
        assert a.read_bytes() == b.read_bytes()
