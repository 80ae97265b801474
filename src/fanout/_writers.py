"""Result files: JSON lines, CSV or Parquet, written incrementally and atomically.

Every writer writes to a temporary file beside the destination and renames it into place when
its `async with` block ends without an error; on an error the temporary file is removed, so a
destination is either absent, the previous file (with `overwrite=True`) or complete. An existing
destination is refused unless `overwrite=True`.

Memory: a text writer holds at most `_FLUSH_BYTES` (4 MiB) of encoded rows; the Parquet writer
holds at most one row group (`row_group_rows` rows or about `row_group_bytes` bytes of Arrow
data) before writing it.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import os
import secrets
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import anyio
import numpy as np
import orjson

from . import _mergekernels as K
from ._outputs import CommonLines, OutputRecord
from .errors import ConfigError, MergeError, naming
from .records import InputKind

_FLUSH_BYTES = 4 * 1024 * 1024
# Written data is synced to disk every so often while other shards are still being parsed,
# rather than all at once by the fsync before the file is moved into place (1 GB: ~0.7 s idle).
_SYNC_BYTES = 128 * 1024 * 1024
_Piece = bytes | memoryview  # encoded rows


class ResultFormat(enum.Enum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def for_path(cls, path: Path) -> ResultFormat:
        """The format a file name asks for: `.jsonl`, `.csv`, `.parquet` (`.gz` allowed on text)."""
        name = path.name.lower().removesuffix(".gz")
        for suffix, fmt in ((".jsonl", cls.JSONL), (".json", cls.JSONL), (".csv", cls.CSV)):
            if name.endswith(suffix):
                return fmt
        if name.endswith((".parquet", ".pq")) and not path.name.lower().endswith(".gz"):
            return cls.PARQUET
        raise ConfigError(
            f"cannot tell the result format from {path.name!r}: name it .jsonl, .csv or .parquet "
            "(.jsonl.gz and .csv.gz are compressed), or give the format explicitly"
        )


class ResultShape(enum.Enum):
    """The columns of a result table, which the recipe and job mode decide."""

    RECOMMENDATIONS = "recommendations"  # recommendedItems, scores (null without scores)
    THEMES = "themes"  # recommendedItems, theme, itemsThemeRelevanceScores
    SEGMENTS = "segments"  # users

    @classmethod
    def of(cls, record: OutputRecord) -> ResultShape:
        if record.users is not None:
            return cls.SEGMENTS
        if record.theme is not None or record.theme_scores is not None:
            return cls.THEMES
        return cls.RECOMMENDATIONS

    def columns(self) -> tuple[str, ...]:
        return {
            ResultShape.RECOMMENDATIONS: ("recommendedItems", "scores"),
            ResultShape.THEMES: ("recommendedItems", "theme", "itemsThemeRelevanceScores"),
            ResultShape.SEGMENTS: ("users",),
        }[self]


def flat_record(record: OutputRecord, kind: InputKind) -> dict[str, Any]:
    """One result as a flat JSON object: the ID under its input name, then what the line had."""
    return _flat(record, kind.id_field)


def _flat(record: OutputRecord, field: str) -> dict[str, Any]:
    out: dict[str, Any] = {field: record.key}
    if record.users is not None:
        out["users"] = record.users
        return out
    out["recommendedItems"] = record.items
    if record.scores is not None:
        out["scores"] = record.scores
    if record.theme is not None:
        out["theme"] = record.theme
    if record.theme_scores is not None:
        out["itemsThemeRelevanceScores"] = record.theme_scores
    return out


def temporary_path(path: Path, owner: str | None = None) -> Path:
    """Where a result is written before it is renamed to `path`: beside it, hidden, and named
    for the run writing it (`owner`), so that a run clearing what its own unfinished merge
    left there never removes another run's file in progress."""
    mark = f"{owner}." if owner else ""
    return path.with_name(f".{path.name}.{mark}{secrets.token_hex(4)}.tmp")


class ResultFile:
    """A result file being written; `async with open_results(...) as results:` then
    `await results.write(records)`. Safe to share between tasks (writes are whole records)."""

    def __init__(self, path: Path, kind: InputKind, overwrite: bool) -> None:
        self.path = path
        self.kind = kind
        self.overwrite = overwrite
        self.rows = 0
        self._tmp = temporary_path(path)
        self._lock = anyio.Lock()
        self._open = False

    async def __aenter__(self) -> ResultFile:
        if self._open:
            raise RuntimeError("result file already open")
        check_result_path(self.path, self.overwrite)
        try:
            await anyio.to_thread.run_sync(self._start)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from exc
        self._open = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        with anyio.CancelScope(shield=True):
            if exc is None:
                try:
                    with naming(self.path):
                        await self._finish()
                        await anyio.to_thread.run_sync(self._commit)
                except BaseException:
                    await anyio.to_thread.run_sync(self._discard)
                    raise
            else:
                await anyio.to_thread.run_sync(self._discard)

    async def write(self, records: Sequence[OutputRecord]) -> None:
        if not self._open:
            raise RuntimeError("result file is not open: use `async with`")
        if records:
            with naming(self.path):
                await self._write(records)
            self.rows += len(records)

    async def write_common(self, lines: CommonLines) -> None:
        """Write results of the common shape, as the merge parsed them (`parse_lines`)."""
        if not self._open:
            raise RuntimeError("result file is not open: use `async with`")
        if len(lines):
            with naming(self.path):
                await self._write_common(lines)
            self.rows += len(lines)

    async def _write_common(self, lines: CommonLines) -> None:
        await self._write(lines.records(self.kind))  # formats without a faster way

    # -- for subclasses --

    def _start(self) -> None:
        raise NotImplementedError

    async def _write(self, records: Sequence[OutputRecord]) -> None:
        raise NotImplementedError

    async def _finish(self) -> None:
        raise NotImplementedError

    def _close_sync(self) -> None:
        """Close whatever is open, without raising (the file is being discarded)."""

    # -- atomic replace --

    def _commit(self) -> None:
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.overwrite:
            os.replace(self._tmp, self.path)
        else:
            try:
                os.link(self._tmp, self.path)
            except FileExistsError:
                raise ConfigError(
                    f"{self.path} appeared while the results were written; pass --overwrite "
                    "to replace it"
                ) from None
            os.unlink(self._tmp)

    def _discard(self) -> None:
        self._close_sync()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def check_result_path(path: Path, overwrite: bool) -> None:
    """Refuse a result file that exists (unless `overwrite`) or whose folder does not."""
    if not overwrite and path.exists():
        raise ConfigError(f"{path} already exists: pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: the folder {path.parent} does not exist")


class _TextFile(ResultFile):
    """Rows encoded to bytes, buffered, optionally gzipped, written on a worker thread."""

    def __init__(self, path: Path, kind: InputKind, overwrite: bool, gzip: bool) -> None:
        super().__init__(path, kind, overwrite)
        self._pieces: list[_Piece] = []  # encoded rows not yet written, never copied here
        self._pending = 0
        self._synced = 0  # bytes on disk (fdatasync), so that the final fsync has little to do
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        self._handle: BinaryIO | None = None

    def _start(self) -> None:
        self._handle = open(self._tmp, "xb")  # noqa: SIM115 - closed in _finish or _discard

    def _encode(self, records: Sequence[OutputRecord]) -> bytes:
        raise NotImplementedError

    async def _write(self, records: Sequence[OutputRecord]) -> None:
        await self._add(self._encode(records))

    async def _add(self, data: _Piece) -> None:
        self._pieces.append(data)
        self._pending += len(data)
        if self._pending >= _FLUSH_BYTES:
            await self._flush(final=False)

    async def _flush(self, final: bool) -> None:
        pieces, self._pieces, self._pending = self._pieces, [], 0
        handle, packer = self._handle, self._gzip
        assert handle is not None

        def send() -> None:
            if packer is None:
                handle.writelines(pieces)
            else:
                handle.writelines(packer.compress(piece) for piece in pieces)
                if final:
                    handle.write(packer.flush())
            if handle.tell() - self._synced >= _SYNC_BYTES:
                handle.flush()
                os.fdatasync(handle.fileno())
                self._synced = handle.tell()
            if final:
                handle.close()

        async with self._lock:
            await anyio.to_thread.run_sync(send)

    async def _finish(self) -> None:
        await self._flush(final=True)
        self._handle = None

    def _close_sync(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _JsonlFile(_TextFile):
    def __init__(self, path: Path, kind: InputKind, overwrite: bool, gzip: bool, raw: bool) -> None:
        super().__init__(path, kind, overwrite, gzip)
        self._raw = raw

    def _encode(self, records: Sequence[OutputRecord]) -> bytes:
        if self._raw:
            return b"".join(record.raw + b"\n" for record in records)
        field = self.kind.id_field
        return b"".join([orjson.dumps(_flat(record, field)) + b"\n" for record in records])

    async def _write_common(self, lines: CommonLines) -> None:
        encode = lines.lines if self._raw else lines.flat
        await self._add(await anyio.to_thread.run_sync(encode))


def _join_numbers(values: tuple[float, ...] | None, sep: str) -> str:
    """Numbers as shortest round-trip decimals joined by `sep` (orjson formats them fast)."""
    if not values:
        return ""
    text = orjson.dumps(values)[1:-1].decode()
    return text if sep == "," else text.replace(",", sep)


class _CsvFile(_TextFile):
    def __init__(
        self,
        path: Path,
        kind: InputKind,
        overwrite: bool,
        gzip: bool,
        shape: ResultShape | None,
        separator: str,
    ) -> None:
        super().__init__(path, kind, overwrite, gzip)
        self._shape = shape
        self._sep = separator
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._header_done = False

    def _header(self, shape: ResultShape) -> None:
        self._shape = shape
        self._csv.writerow((self.kind.id_field, *shape.columns()))
        self._header_done = True

    def _encode(self, records: Sequence[OutputRecord]) -> bytes:
        if not self._header_done:
            self._header(self._shape or ResultShape.of(records[0]))
        shape = self._shape
        assert shape is not None
        sep = self._sep
        rows: list[tuple[str, ...]] = []
        for record in records:
            _check_shape(record, shape, self.path)
            if shape is ResultShape.SEGMENTS:
                rows.append((record.key, sep.join(record.users or ())))
                continue
            items = sep.join(record.items)
            if shape is ResultShape.RECOMMENDATIONS:
                scores = _join_numbers(record.scores, sep)
                rows.append((record.key, items, scores))
            else:
                theme_scores = _join_numbers(record.theme_scores, sep)
                rows.append((record.key, items, record.theme or "", theme_scores))
        self._csv.writerows(rows)
        text = self._text.getvalue()
        self._text.seek(0)
        self._text.truncate()
        return text.encode()

    async def _finish(self) -> None:
        if not self._header_done:
            self._header(self._shape or _default_shape(self.kind))
            self._pieces.append(self._text.getvalue().encode())
        await super()._finish()


def _default_shape(kind: InputKind) -> ResultShape:
    return (
        ResultShape.SEGMENTS if kind is InputKind.ITEM_ATTRIBUTES else ResultShape.RECOMMENDATIONS
    )


def _check_shape(record: OutputRecord, shape: ResultShape, path: Path) -> None:
    found = ResultShape.of(record)
    if found is shape or (shape is ResultShape.THEMES and found is ResultShape.RECOMMENDATIONS):
        return
    raise MergeError(
        f"{path} holds {shape.value} but the result for {record.key!r} is {found.value}: the "
        "job outputs do not all come from the same kind of job"
    )


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet results need pyarrow: pip install 'fanout[parquet]'") from None
    return pa, pq


class _ParquetFile(ResultFile):
    """Rows become Arrow record batches as they come; a row group is written when it is full."""

    def __init__(
        self,
        path: Path,
        kind: InputKind,
        overwrite: bool,
        shape: ResultShape | None,
        row_group_rows: int,
        row_group_bytes: int,
    ) -> None:
        super().__init__(path, kind, overwrite)
        self._pa, self._pq = _pyarrow()
        self._shape = shape
        self._group_rows = row_group_rows
        self._group_bytes = row_group_bytes
        self._batches: list[Any] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: Any = None
        self._schema: Any = None

    def _start(self) -> None:
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)

    def _make_schema(self, shape: ResultShape) -> Any:
        pa = self._pa
        fields = [pa.field(self.kind.id_field, pa.string(), nullable=False)]
        if shape is ResultShape.SEGMENTS:
            fields.append(pa.field("users", pa.list_(pa.string())))
        else:
            fields.append(pa.field("recommendedItems", pa.list_(pa.string())))
            if shape is ResultShape.RECOMMENDATIONS:
                fields.append(pa.field("scores", pa.list_(pa.float64())))
            else:
                fields.append(pa.field("theme", pa.string()))
                fields.append(pa.field("itemsThemeRelevanceScores", pa.list_(pa.float64())))
        self._shape = shape
        self._schema = pa.schema(fields)
        return self._schema

    def _batch(self, records: Sequence[OutputRecord]) -> Any:
        shape = self._shape
        assert shape is not None
        for record in records:
            _check_shape(record, shape, self.path)
        columns: list[list[Any]] = [[record.key for record in records]]
        if shape is ResultShape.SEGMENTS:
            columns.append([record.users for record in records])
        else:
            columns.append([record.items for record in records])
            if shape is ResultShape.RECOMMENDATIONS:
                columns.append([record.scores for record in records])
            else:
                columns.append([record.theme for record in records])
                columns.append([record.theme_scores for record in records])
        return self._pa.RecordBatch.from_arrays(
            [
                self._pa.array(column, type=field.type)
                for column, field in zip(columns, self._schema, strict=True)
            ],
            schema=self._schema,
        )

    async def _write(self, records: Sequence[OutputRecord]) -> None:
        if self._schema is None:
            self._make_schema(self._shape or ResultShape.of(records[0]))
        await self._add(self._batch(records))

    async def _write_common(self, lines: CommonLines) -> None:
        if self._schema is None:
            self._make_schema(self._shape or ResultShape.RECOMMENDATIONS)
        if self._shape is not ResultShape.RECOMMENDATIONS:
            await self._write(lines.records(self.kind))  # checks the shape, as records do
            return
        await self._add(await anyio.to_thread.run_sync(self._common_batch, lines))

    def _common_batch(self, lines: CommonLines) -> Any:
        """Arrow columns straight from the lines' byte ranges (`_mergekernels.columns`); a
        score the kernel's fast exact way cannot read is read by Python."""
        pa = self._pa
        ids, id_at, items, item_at, item_lists, values, slow, score_lists = K.columns(
            lines.data, lines.spans
        )
        if len(slow):
            data = lines.data
            missing = np.flatnonzero(np.isnan(values))
            for at, start in zip(missing.tolist(), slow.tolist(), strict=True):
                end = start
                while data[end] not in b",]":
                    end += 1
                values[at] = float(data[start:end].tobytes())

        def strings(data: K.U8, offsets: K.I32) -> Any:
            return pa.StringArray.from_buffers(
                len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
            )

        unscored = lines.spans[:, K.SCORES_LO] < 0
        columns = [
            strings(ids, id_at),
            pa.ListArray.from_arrays(pa.array(item_lists), strings(items, item_at)),
            pa.ListArray.from_arrays(
                pa.array(score_lists),
                pa.array(values),
                mask=pa.array(unscored) if unscored.any() else None,
            ),
        ]
        schema = self._schema
        columns = [c.cast(f.type) for c, f in zip(columns, schema, strict=True)]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    async def _add(self, batch: Any) -> None:
        self._batches.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self._group_rows or self._pending_bytes >= self._group_bytes:
            await self._flush()

    async def _flush(self) -> None:
        batches, self._batches = self._batches, []
        self._pending_rows = self._pending_bytes = 0
        if not batches:
            return
        async with self._lock:
            await anyio.to_thread.run_sync(self._write_group, batches)

    def _open_writer(self) -> Any:
        """The Parquet writer: snappy (what Spark, duckdb and Athena default to; zstd is ~25%
        smaller but costs ~15% more CPU); dictionary encoding only where values repeat (item and
        user IDs, themes), not for the unique IDs or the scores, where it costs half the time
        of writing and saves nothing; min/max statistics for the ID column only, the one a
        query filters on (on the list columns they cost a quarter of the time)."""
        repeated = [
            f"{field.name}.list.element" if self._pa.types.is_list(field.type) else field.name
            for field in self._schema
            if field.name in ("recommendedItems", "users", "theme")
        ]
        return self._pq.ParquetWriter(
            str(self._tmp),
            self._schema,
            compression="snappy",
            use_dictionary=repeated,
            write_statistics=[self.kind.id_field],
        )

    def _write_group(self, batches: list[Any]) -> None:
        if self._writer is None:
            self._writer = self._open_writer()
        table = self._pa.Table.from_batches(batches, schema=self._schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    async def _finish(self) -> None:
        if self._schema is None:
            self._make_schema(self._shape or _default_shape(self.kind))
        await self._flush()

        def close() -> None:
            if self._writer is None:
                self._writer = self._open_writer()
            self._writer.close()
            self._writer = None

        async with self._lock:
            await anyio.to_thread.run_sync(close)

    def _close_sync(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # best effort while discarding
                self._writer.close()
            self._writer = None


def result_format(
    path: Path, fmt: ResultFormat | None, raw: bool = False, separator: str = "|"
) -> ResultFormat:
    """The format of a result file at `path` (`fmt`, or from its name), refused with what to
    change if the options do not fit it: checked before a run starts (`MergeSettings`) as
    when the file is opened."""
    chosen = fmt or ResultFormat.for_path(path)
    if raw and chosen is not ResultFormat.JSONL:
        raise ConfigError("raw results (the service's lines verbatim) can only be JSON lines")
    if chosen is ResultFormat.CSV and (not separator or separator in {"\n", "\r"}):
        raise ConfigError("the CSV list separator must be a non-empty string without newlines")
    if chosen is not ResultFormat.CSV and separator != "|":
        raise ConfigError(
            f"--separator {separator!r} joins lists in CSV results; {path.name} is "
            f"{chosen.value}, which keeps lists as lists: leave --separator out"
        )
    if chosen is ResultFormat.PARQUET and path.name.lower().endswith(".gz"):
        raise ConfigError(f"{path.name}: Parquet files are compressed inside; drop the .gz")
    return chosen


def open_results(
    path: Path | str,
    kind: InputKind,
    *,
    fmt: ResultFormat | None = None,
    overwrite: bool = False,
    raw: bool = False,
    separator: str = "|",
    shape: ResultShape | None = None,
    row_group_rows: int = 1_000_000,
    row_group_bytes: int = 32 * 1024 * 1024,
    owner: str | None = None,
) -> ResultFile:
    """A result file for `async with`: format from `fmt` or the name, gzip for `.gz` text files.

    `raw` (JSON lines only) keeps the service's lines verbatim. `separator` joins lists in CSV
    cells. `shape` fixes the CSV/Parquet columns; by default the first result decides. `owner`
    (a run ID) names its temporary file (`temporary_path`).
    """
    path = Path(path)
    chosen = result_format(path, fmt, raw, separator)
    gzip = path.name.lower().endswith(".gz")
    result: ResultFile
    if chosen is ResultFormat.JSONL:
        result = _JsonlFile(path, kind, overwrite, gzip, raw)
    elif chosen is ResultFormat.CSV:
        result = _CsvFile(path, kind, overwrite, gzip, shape, separator)
    else:
        if row_group_rows <= 0 or row_group_bytes <= 0:
            raise ConfigError("row_group_rows and row_group_bytes must be positive")
        result = _ParquetFile(path, kind, overwrite, shape, row_group_rows, row_group_bytes)
    result._tmp = temporary_path(path, owner)
    return result
