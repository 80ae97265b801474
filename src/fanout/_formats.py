"""Input formats: which one a file is in, and its pieces parsed into encoded records.

A file's format is declared (`SourceOptions.format`), told by its name, or sniffed: gzip by its
magic bytes (`_Gunzip` undoes it), Parquet by its own, JSON lines by a first non-blank line that
starts with `{`, else text (one ID per line), unless that line is a header naming the ID column
(`_FileFormat._sniffed`; `.txt` files too). CSV/TSV name their ID column in a header row.

`_Encoder` is stage 1 of the source: it turns one `_Piece` of text, CSV/TSV, JSON lines or
Parquet values into an `_Encoded` (records, fingerprints, rejects), in a worker thread.
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import orjson

from ._dedupe import _fingerprints_of, _int64
from ._encode import (
    _NO_INTS,
    STRIP,
    _decode,
    _encode_lines,
    _JsonRecords,
    _LineGuess,
    _OutputPool,
    _Reject,
    _Template,
)
from .errors import ConfigError, InputError
from .records import InputKind, RejectReason
from .segments import query_problem

_STRIP_BYTES = b" \t\n\r"  # `STRIP`'s ASCII part, for a check on bytes

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._dedupe import I64, U64
    from .source import SourceOptions

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


def _declared_format(name: str, fmt: str) -> str | None:
    """The format `fmt` (from the options) or the file's name says, or None: sniff it."""
    if fmt != "auto":
        return fmt
    stem = name.lower().removesuffix(".gz")
    for ext, by_name in _EXTENSIONS.items():
        if stem.endswith(ext):
            return by_name
    return None


# ---------------------------------------------------------------------------------------------
# Pieces: what stage 1 gets, and what it makes of them


@dataclass(slots=True)
class _Piece:
    """About `chunk_bytes` of one file, cut at a line end (a record end for CSV)."""

    file_no: int
    name: str
    fmt: str  # text, csv, tsv, jsonl, parquet, or "long" (one over-long line: see `source`)
    data: bytes = b""
    values: list[Any] | None = None  # parquet: the ID column's values, one by one...
    skip: int = 0  # header lines just before this piece
    column: int = 0  # csv/tsv/parquet: the ID column
    column_name: str = ""
    scale: float = 0.0  # first piece of the first file: about how many such pieces the file has
    header: str = ""  # text: the header line skipped at the file's start (rejected if again)
    joined: _Joined | None = None  # ...or parquet: the values joined into lines (`_joined`)


@dataclass(slots=True)
class _Encoded:
    """Stage 1's result for one piece, before dedupe."""

    piece: _Piece
    lines: int  # physical lines (rows for Parquet): advances the file's line numbers
    rows: int  # counted in stats.lines
    blank: int
    data: bytes | memoryview  # see RecordBatch.data
    ends: I64
    fps: U64
    rec_lines: I64 | None  # 0-based line in the piece of each record; None: record i is line i
    rejects: list[_Reject]
    id_span: tuple[int, int] | None  # record[head:-tail] is the ID as a JSON string

    @classmethod
    def empty(
        cls, piece: _Piece, lines: int, rows: int, blank: int, rejects: list[_Reject]
    ) -> _Encoded:
        """A piece with no records."""
        return cls(piece, lines, rows, blank, b"", _NO_INTS, _NO_INTS, None, rejects, None)


@dataclass(slots=True)
class _Rows:
    """What a piece of rows (CSV, Parquet) gives before encoding: each row's ID field (a
    candidate, encoded later as a line of text) with its line and raw row, and the rejects."""

    column_name: str
    ids: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    raws: list[bytes | str] = field(default_factory=list)
    rejects: list[_Reject] = field(default_factory=list)

    def reject_newline(self, line: int, raw: bytes | str) -> None:
        """The ID field has a line end inside (not just around) it."""
        detail = f"control character U+000A in column {self.column_name!r}"
        self.rejects.append((line, RejectReason.CONTROL_CHARACTER, detail, raw))


class _Encoder:
    """Stage 1: pieces to encoded records, fingerprints and rejects. Thread-safe; the only
    state is the pool of output buffers and the guess of the lines in a text piece."""

    def __init__(self, options: SourceOptions, *, slow: bool = False) -> None:
        self.dedupe = options.dedupe
        self.outputs = _OutputPool()
        self.lines = _LineGuess()  # of text pieces (a guess of one thread at a time is enough)
        self.limit = options.max_id_length
        # Item-attribute queries have rules of their own: each is checked, one by one.
        check = query_problem if options.kind is InputKind.ITEM_ATTRIBUTES else None
        self.slow = slow or check is not None
        self.field = options.kind.id_field
        filter_values = {
            name: ",".join(json.dumps(value) for value in values)
            for name, values in options.filter_values.items()
        }
        encoded = orjson.dumps(filter_values, option=orjson.OPT_SORT_KEYS)
        self.tpl = _Template.make(self.field, encoded if filter_values else None, check)
        self.json = _JsonRecords(
            options.kind,
            self.limit,
            filter_values,
            self.tpl,
            options.max_item_list,
            options.placeholders,
        )

    def encode(self, piece: _Piece) -> _Encoded:
        """Stage 1 for `piece`."""
        if piece.fmt == "text":
            return self._text(piece)
        if piece.fmt == "jsonl":
            return self._jsonl(piece)
        if piece.fmt in ("csv", "tsv"):
            return self._csv(piece)
        if piece.fmt == "parquet":
            return self._parquet(piece)
        raise AssertionError(f"unknown piece format {piece.fmt}")

    def _text(self, piece: _Piece) -> _Encoded:
        core = _encode_lines(
            piece.data,
            self.tpl,
            self.limit,
            self.slow,
            self.dedupe,
            self.outputs,
            self.lines,
            piece.header,
        )
        return _Encoded(
            piece,
            core.count,
            core.count,
            len(core.blank),
            core.data,
            core.ends,
            core.fps,
            core.rec,
            core.rejects,
            self.tpl.id_span,
        )

    def _rows(self, piece: _Piece, lines: int, rows: int, blank: int, found: _Rows) -> _Encoded:
        """Encode the ID fields of rows (CSV, Parquet) with the text path."""
        if not found.ids:
            return _Encoded.empty(piece, lines, rows, blank, found.rejects)
        import numpy as np

        joined = b"\n".join(found.ids) + b"\n"  # every candidate a line, even an empty last one
        where = np.array(found.lines, np.int64)
        raw = found.raws.__getitem__
        return self._lines(piece, lines, rows, blank, found.rejects, joined, where, raw)

    def _lines(
        self,
        piece: _Piece,
        lines: int,
        rows: int,
        blank: int,
        rejects: list[_Reject],
        joined: bytes,
        where: npt.NDArray[np.int64] | None,
        raw: Callable[[int], bytes | str],
    ) -> _Encoded:
        """Encode candidate IDs, one a line of `joined`, with the text path: candidate k is line
        `where[k]` of the piece (None: line k), and `raw(k)` is its raw field."""
        if not joined:
            return _Encoded.empty(piece, lines, rows, blank, rejects)
        core = _encode_lines(joined, self.tpl, self.limit, self.slow, self.dedupe, self.outputs)

        def line(index: int) -> int:
            return index if where is None else int(where[index])

        for index in core.blank:
            detail = f"column {piece.column_name!r} is empty"
            rejects.append((line(index), RejectReason.MISSING_COLUMN, detail, raw(index)))
        for index, reason, detail, _ in core.rejects:
            rejects.append((line(index), reason, detail, raw(index)))
        rejects.sort(key=lambda item: item[0])
        rec_lines: I64 | None = core.rec
        if where is not None:
            rec_lines = where if core.rec is None else where[_int64(core.rec)]
        return _Encoded(
            piece,
            lines,
            rows,
            blank,
            core.data,
            core.ends,
            core.fps,
            rec_lines,
            rejects,
            self.tpl.id_span,
        )

    def _csv(self, piece: _Piece) -> _Encoded:
        delim = _delimiter(piece.fmt)
        sep = delim.encode()
        col = piece.column
        lines = _lines_of(piece.data)
        found = _Rows(piece.column_name)
        ids, id_lines, raws, rejects = found.ids, found.lines, found.raws, found.rejects
        blank = 0
        rows = 0

        def missing(index: int, fields: int, raw: bytes | str) -> None:
            detail = (
                f"row has {fields} column(s); the ID column {piece.column_name!r} "
                f"is column {col + 1}"
            )
            rejects.append((index, RejectReason.MISSING_COLUMN, detail, raw))

        def quoted_rows(first: int, stop: int) -> int:
            """Parse lines `first` to `stop` (from a line with a double quote to where the
            quotes balance, or to the end of the piece) as CSV; the line to go on from. Lines
            are decoded as they are read (bytes that are not UTF-8 kept as they are, for the
            ID's own check), so a stray quote does not hold the rest of the piece as text."""
            nonlocal blank, rows
            row_texts: list[str] = []  # the lines of the row being read

            def texts() -> Iterator[str]:
                for i in range(first, stop):
                    text = lines[i].removesuffix(b"\r").decode("utf-8", "surrogateescape")
                    row_texts.append(text)
                    yield text + "\n"

            def raw_row() -> bytes:
                return "\n".join(row_texts).encode("utf-8", "surrogateescape")

            reader = csv.reader(texts(), delimiter=delim, strict=True)
            done = 0
            while True:
                at = first + done
                row_texts.clear()
                try:
                    row = next(reader)
                except StopIteration:
                    return stop
                except csv.Error as exc:
                    # Its line alone is rejected, and the lines after it read again: a quote
                    # that opens a field and never closes (or closes in another row's
                    # field, with more after it) would otherwise take every line up to it.
                    rows += 1
                    detail = f"bad CSV: {exc}"
                    if len(row_texts) > 1:
                        detail = (
                            f"a quoted field opens on this line and is not closed ({exc}): "
                            "the lines after it are read as rows"
                        )
                    raw = row_texts[0].encode("utf-8", "surrogateescape")
                    rejects.append((at, RejectReason.WRONG_SHAPE, detail, raw))
                    return at + 1
                rows += 1
                done = reader.line_num
                if not any(field.strip(STRIP) for field in row):
                    blank += 1
                elif len(row) <= col:
                    missing(at, len(row), raw_row())
                else:
                    value = row[col]
                    if "\n" in value:
                        value = value.strip(STRIP)
                    if "\n" in value:
                        found.reject_newline(at, raw_row())
                        continue
                    ids.append(value.encode("utf-8", "surrogateescape"))
                    id_lines.append(at)
                    raws.append(raw_row())

        quoted = b'"' in piece.data
        index = 0
        while index < len(lines):
            line = lines[index]
            if quoted and b'"' in line:  # maybe a quoted field with line ends inside
                stop, quotes = index + 1, line.count(b'"')
                while quotes % 2 and stop < len(lines):
                    quotes += lines[stop].count(b'"')
                    stop += 1
                index = quoted_rows(index, stop)
                continue
            rows += 1
            line = line.removesuffix(b"\r")
            fields = line.split(sep)
            if not line.replace(sep, b"").strip(_STRIP_BYTES):  # only separators and spaces
                blank += 1
            elif len(fields) <= col:
                missing(index, len(fields), line)
            else:
                ids.append(fields[col])
                id_lines.append(index)
                raws.append(line)
            index += 1
        if piece.column_name.encode() in piece.data:
            _header_again(found)
        return self._rows(piece, len(lines), rows, blank, found)

    def _parquet(self, piece: _Piece) -> _Encoded:
        found = _Rows(piece.column_name)
        null = f"column {piece.column_name!r} is null"
        if piece.joined is not None:
            joined = piece.joined
            for row in joined.nulls:
                found.rejects.append((row, RejectReason.MISSING_COLUMN, null, "null"))
            values = joined.values

            def raw_of(index: int) -> bytes:
                return _raw(values[index].as_py())

            rows = joined.rows
            data, at = joined.data, joined.at
            return self._lines(piece, rows, rows, 0, found.rejects, data, at, raw_of)
        ids, id_lines, raws = found.ids, found.lines, found.raws
        values = piece.values or []
        for index, value in enumerate(values):
            if value is None:
                found.rejects.append((index, RejectReason.MISSING_COLUMN, null, "null"))
                continue
            raw = _raw(value)
            if b"\n" in raw:
                # Strip exactly as the ID is kept (bytes), then look again: a newline left
                # inside would split the ID into two lines.
                raw = raw.strip(_STRIP_BYTES)
                if b"\n" in raw:
                    found.reject_newline(index, raw)
                    continue
            ids.append(raw)
            id_lines.append(index)
            raws.append(raw)
        return self._rows(piece, len(values), len(values), 0, found)

    def _jsonl(self, piece: _Piece) -> _Encoded:
        lines = _lines_of(piece.data)
        if _BOM in piece.data:  # files joined with `cat`: a BOM where each began, as for text
            lines = [_without_boms(line) for line in lines]
        records: list[bytes] = []
        rec_lines: list[int] = []
        ids: list[bytes] = []
        rejects: list[_Reject] = []
        blank = 0
        keys = 0  # of the records' lines
        for index, line in enumerate(lines):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                text = _decode(line)
                if isinstance(text, tuple):
                    rejects.append((index, *text, line))
                elif not text.strip(STRIP):
                    blank += 1
                else:
                    detail = f"not valid JSON: {exc}"
                    rejects.append((index, RejectReason.MALFORMED_JSON, detail, line))
                continue
            outcome = self.json.record(obj)
            if len(outcome) == 2:
                rejects.append((index, *outcome, line))
            else:
                record, value, count = outcome
                records.append(record)
                ids.append(value)
                rec_lines.append(index)
                keys += count
        # A line that repeats a key is not sent with one of its values: it is rejected.
        repeats = self.json.repeats(piece.data, lines, rec_lines, keys)
        if repeats:
            for position, detail in repeats.items():
                index = rec_lines[position]
                rejects.append((index, RejectReason.WRONG_SHAPE, detail, lines[index]))
            rejects.sort(key=lambda reject: reject[0])
            kept = [position for position in range(len(records)) if position not in repeats]
            records = [records[position] for position in kept]
            ids = [ids[position] for position in kept]
            rec_lines = [rec_lines[position] for position in kept]
        data = b"".join(records)
        import numpy as np

        ends = np.cumsum(np.fromiter(map(len, records), np.int64, len(records)))
        fps = _fingerprints_of(ids) if self.dedupe else np.empty(0, np.uint64)
        where = np.array(rec_lines, np.int64)
        return _Encoded(piece, len(lines), len(lines), blank, data, ends, fps, where, rejects, None)


def _header_again(found: _Rows) -> None:
    """Rejects, not IDs, the rows whose ID field is the column's name: the header row again,
    as files joined with `cat` (or exports appended to one another) carry it."""
    header = found.column_name.encode()
    again = [i for i, value in enumerate(found.ids) if _without_boms(value).strip() == header]
    if not again:
        return
    detail = f"the header row again (its {found.column_name!r} column): files joined with cat?"
    for i in again:
        found.rejects.append((found.lines[i], RejectReason.WRONG_SHAPE, detail, found.raws[i]))
    found.rejects.sort(key=lambda reject: reject[0])
    skip = set(again)
    kept = [i for i in range(len(found.ids)) if i not in skip]
    found.ids[:] = [found.ids[i] for i in kept]
    found.lines[:] = [found.lines[i] for i in kept]
    found.raws[:] = [found.raws[i] for i in kept]


def _without_boms(line: bytes) -> bytes:
    while line.startswith(_BOM):
        line = line[len(_BOM) :]
    return line


def _lines_of(data: bytes) -> list[bytes]:
    """`data` split at line ends, without the empty string after the last one."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _delimiter(fmt: str) -> str:
    return "\t" if fmt == "tsv" else ","


# ---------------------------------------------------------------------------------------------
# A file's format, from its first bytes and lines


class _FileFormat:
    """Turns one file's cuts into pieces for stage 1: sniffs the format where neither the
    options nor the name declared it, and reads the ID column from a CSV/TSV header row."""

    def __init__(self, file_no: int, name: str, fmt: str | None, options: SourceOptions) -> None:
        self._kind = options.kind
        self._id_column = options.id_column
        if self._kind is InputKind.RANKING and fmt not in (None, "jsonl"):
            raise _ranking_needs_jsonl(name, fmt)
        self.file_no = file_no
        self.name = name
        self.fmt = fmt
        self.column: int | None = None
        self.column_name = ""
        # Text by its name (`.txt`) is looked at as a file without a known name is: JSON lines
        # if its first line is an object, a table if that line is a header naming the ID column
        # (a table exported as `.txt`, as a spreadsheet's "Text (Tab delimited)" is).
        self._named_text = fmt == "text" and options.format == "auto"
        self._text_header = ""  # a text file's header line, once sniffed

    def pieces(self, cut: bytes) -> Iterator[_Piece]:
        """Sniff the format and read the CSV header where needed; pieces ready for stage 1."""
        if self.fmt is None or self._named_text:
            named, self._named_text = self._named_text, False
            line = _first_nonblank(cut)
            if line is None:
                yield self._piece("text", cut)
                return
            first = cut[line[0] : line[1]].removeprefix(_BOM).strip()
            self.fmt = self._sniffed(first, named)
            if self._kind is InputKind.RANKING and self.fmt != "jsonl":
                raise _ranking_needs_jsonl(self.name, self.fmt)
            if self.fmt == "header":  # one ID column named: read as text after it
                self.fmt = "text"
                self._text_header = first.decode()
                lo, hi = line
                if lo:
                    yield self._piece("text", cut[:lo])
                yield self._piece("text", cut[hi + 1 :], skip=1)
                return
        if self.fmt in ("csv", "tsv") and self.column is None:
            line = _first_nonblank(cut)
            if line is None:
                yield self._piece("text", cut)
                return
            lo, hi = line
            if lo:
                yield self._piece("text", cut[:lo])
            self.column, self.column_name = self._header(cut[lo:hi])
            yield self._piece(self.fmt, cut[hi + 1 :], skip=1)
            return
        yield self._piece(self.fmt, cut)

    def _sniffed(self, first: bytes, named: bool) -> str:
        """The format of a file whose first non-blank line is `first` (stripped): JSON lines
        for an object; CSV/TSV for a header with the ID column in it (named by --id-column, or
        one `_id_column_names` gives); "header" for a line that is only such a name: a
        one-column table, read as text after that line (as CSV it would split IDs at commas
        and unquote them); else text. With --id-column, a file not `named` text is a table
        (whose header must name the column). A JSON array is refused: one ID a line would be
        `[`, each object with its comma, and `]`."""
        if first.startswith(b"{"):
            return "jsonl"
        if _JSON_ARRAY.match(first):
            raise ConfigError(
                f"{self.name}: its first line is {_shown(first)}: a JSON array, which fanout "
                "does not read; give JSON lines, one object a line (`jq -c '.[]' FILE`), or "
                "--format text if that line is an ID"
            )
        fmt = _delimited(first)
        try:
            cells = next(csv.reader([first.decode("utf-8")], delimiter=_delimiter(fmt)), [])
        except (csv.Error, UnicodeDecodeError):
            return "text"
        names = [cell.strip() for cell in cells]
        if self._id_column is not None:
            return fmt if self._id_column in names or not named else "text"
        known = {name.lower() for name in _id_column_names(self._kind)}
        if not known.intersection(name.lower() for name in names):
            if len(names) == 1:
                self._refuse_header(names[0])
            return "text"
        return fmt if len(names) > 1 else "header"

    def _refuse_header(self, line: str) -> None:
        """Refuse a text file whose first line is a header it cannot read as one: columns
        another character separates (`userId;score`), or the ID column of another kind
        (`itemId` where the recipe takes userId). Sent as text, the header would be an ID."""
        for sep in ";|":
            if sep in line and any(_named_for(cell.strip()) for cell in line.split(sep)):
                said = _other_separator(self.name, line, "text")
                assert said is not None
                raise ConfigError(said)
        field_name = _named_for(line)
        if field_name is not None and field_name != self._kind.id_field:
            raise ConfigError(
                f"{self.name}: its first line, {line!r}, names the {field_name} column, and "
                f"the input is of {self._kind.id_field} (the solution's recipe, or "
                "--input-kind): give the input the recipe takes, or --format text if that line "
                "is an ID"
            )

    def _piece(self, fmt: str, data: bytes, skip: int = 0) -> _Piece:
        column, column_name = self.column or 0, self.column_name
        piece = _Piece(self.file_no, self.name, fmt, data, None, skip, column, column_name)
        piece.header = self._text_header
        return piece

    def _header(self, line: bytes) -> tuple[int, str]:
        assert self.fmt is not None
        text = line.decode("utf-8", "replace").removesuffix("\r")
        try:
            header = next(csv.reader([text], delimiter=_delimiter(self.fmt)), [])
        except csv.Error as exc:
            raise ConfigError(
                f"{self.name}: cannot read the header row ({exc}): "
                "its first line must name the columns"
            ) from None
        columns = [cell.strip() for cell in header]
        if len(columns) == 1 and (other := _other_separator(self.name, columns[0], self.fmt)):
            raise ConfigError(other)
        if self._id_column is None and len(columns) == 1:
            names = _id_column_names(self._kind)
            if columns[0].lower() not in {name.lower() for name in names}:  # header or ID?
                raise ConfigError(  # Not guessed: taken as the header, an ID would be lost
                    f"{self.name}: its one column's first line, {columns[0]!r}, is not a "
                    f"column name fanout knows ({', '.join(names)}, in any case): if it is an "
                    "ID, the file has no header: give --format text to read every line as an "
                    f"ID; if it is the header, give --id-column {columns[0]!r}"
                )
        return _pick_column(self.name, columns, self._id_column, self._kind)


def _other_separator(name: str, header: str, fmt: str) -> str | None:
    """What to say of file `name`'s one-column header that is a row of columns another character
    separates (`userId;score`: the `;` of a spreadsheet in many locales), or None. Read as one
    column, its IDs would be whole rows (`a;1`)."""
    known = {"csv": ",", "tsv": "\t"}
    for sep, fix in (("\t", "give --format tsv"), (";", None), ("|", None)):
        if sep == known.get(fmt) or len(header.split(sep)) < 2:
            continue
        shown = "tabs" if sep == "\t" else repr(sep)
        how = fix or (
            f"fanout reads commas (CSV) and tabs (TSV): save it with commas, or turn {sep!r} "
            f"into tabs and give --format tsv (`tr '{sep}' '\\t'`, if no value holds a tab)"
        )
        return f"{name}: its header, {header!r}, is columns separated by {shown}: {how}"
    return None


_BOM = b"\xef\xbb\xbf"
_JSON_ARRAY = re.compile(rb"\[\s*(?:[{\"\]]|$)")  # `[`, `[{`, `["…`, `[]`: not an ID like `[a]`


def _shown(line: bytes, most: int = 40) -> str:
    """`line` for a message: decoded, cut to `most` characters."""
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= most else text[:most] + "…")


def _delimited(first: bytes) -> str:
    """The delimited format of a file whose first line is `first`: TSV if it has tabs and no
    commas, else CSV."""
    return "tsv" if b"\t" in first and b"," not in first else "csv"


def _id_column_names(kind: InputKind) -> tuple[str, ...]:
    """The column names taken as the ID column without --id-column, in any case: the kind's
    field, in snake case, and `id`."""
    field_name = kind.id_field
    snake = {"userId": "user_id", "itemId": "item_id", "itemAttributes": "item_attributes"}
    return (field_name, snake[field_name], "id")


_FIELD_OF_COLUMN = {n.lower(): k.id_field for k in InputKind for n in _id_column_names(k)[:2]}


def _named_for(column: str) -> str | None:
    """The ID field (`userId`, `itemId`, `itemAttributes`) a column is named for, in any case
    and in snake case too; None for any other name, `id` included (it names every kind's)."""
    return _FIELD_OF_COLUMN.get(column.lower())


def _pick_column(
    name: str, columns: Sequence[str], wanted: str | None, kind: InputKind
) -> tuple[int, str]:
    """The index and name of the ID column: `wanted`, else one named for the kind's ID field
    (`userId`, `user_id`, `id`, any case); else a ConfigError, even for a file of one column
    (an `itemId` or `score` column sent as user IDs would be wrong without a word)."""
    shown = ", ".join(repr(column) for column in columns)
    if wanted is not None:
        if columns.count(wanted) > 1:
            raise ConfigError(
                f"{name}: {columns.count(wanted)} columns are named {wanted!r} (the columns are "
                f"{shown}): which holds the IDs cannot be told; name them apart"
            )
        if wanted in columns:
            return columns.index(wanted), wanted
        raise ConfigError(
            f"{name}: no column {wanted!r}; the columns are {shown}: "
            "give one of them as the ID column"
        )
    named = [column for column in columns if _named_for(column) == kind.id_field]
    if len(named) > 1:  # (`id` beside them may be a row's number: not counted)
        then = (
            "name them apart"
            if len(set(named)) < len(named)
            else "give the one that holds the IDs (id_column / --id-column)"
        )
        raise ConfigError(
            f"{name}: {' and '.join(repr(c) for c in named)} both name the {kind.id_field}: {then}"
        )
    for candidate in _id_column_names(kind):
        for index, column in enumerate(columns):
            if column.lower() == candidate.lower():
                return index, column
    if len(columns) == 1:  # a Parquet file's (CSV's are refused so before): not guessed
        field_name = _named_for(columns[0])
        why = (
            f": it is named for the {field_name}, and the input is of {kind.id_field} (the "
            "solution's recipe, or --input-kind)"
            if field_name is not None and field_name != kind.id_field
            else ""
        )
        raise ConfigError(
            f"{name}: its one column, {columns[0]!r}, is not named for the {kind.id_field} "
            f"({', '.join(_id_column_names(kind))}, in any case){why}; if it holds the IDs, "
            f"give --id-column {columns[0]!r}"
        )
    raise ConfigError(
        f"{name}: cannot tell which column holds the {kind.id_field}; the columns are {shown}: "
        "give the ID column (id_column / --id-column)"
    )


def _ranking_needs_jsonl(name: str, fmt: str) -> ConfigError:
    return ConfigError(
        f"{name}: personalized ranking input needs an itemList per user, which only JSON lines "
        f"carry; this file reads as {fmt}: give a .jsonl file or --format jsonl"
    )


def _first_nonblank(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the first line with non-whitespace content (end at its b"\\n")."""
    at = 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            end = len(data)
        if data[at:end].strip():
            return at, end
        at = end + 1
    return None


# ---------------------------------------------------------------------------------------------
# Parquet


def _check_parquet(name: str, kind: InputKind) -> None:
    """Before a Parquet file is read (or spooled): pyarrow is installed and `kind` can come from
    Parquet."""
    _pyarrow()
    if kind is InputKind.RANKING:
        raise _ranking_needs_jsonl(name, "parquet")


def _pyarrow() -> tuple[Any, Any]:
    """`pyarrow` and `pyarrow.parquet`, or a `ConfigError` that says how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet input needs pyarrow: pip install 'fanout[parquet]'") from None
    return pa, pq


class _ParquetColumn:
    """The ID column of a Parquet file (a path, or a seekable file), read in batches of rows.

    Blocking: make it and call `next_values` in a worker thread.
    """

    def __init__(self, name: str, source: str | IO[bytes], options: SourceOptions) -> None:
        pa, pq = _pyarrow()
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{name}: not a readable Parquet file: {exc}") from exc
        schema = parquet.schema_arrow
        index, column = _pick_column(name, list(schema.names), options.id_column, options.kind)
        kind = schema.field(index).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_integer(kind)
        ):
            raise ConfigError(
                f"{name}: column {column!r} has type {kind}; IDs must be strings or "
                "integers: pick another column or convert this one"
            )
        self.index = index
        self.name = column
        rows = max(1, options.chunk_bytes // 48)
        self._batches = parquet.iter_batches(batch_size=rows, columns=[column])

    def next_values(self) -> _Joined | list[Any] | None:
        """The column's values in the next batch of rows, joined into lines in Arrow (a batch
        with a line end inside a value: one by one, as Python values); None after the last."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        column = batch.column(0)
        joined = _joined(column)
        if joined is not None:
            return joined
        values: list[Any] = column.to_pylist()
        return values


@dataclass(frozen=True, slots=True)
class _Joined:
    """A batch of a Parquet ID column as `_Encoder._rows` would join its values: `data` holds
    the values that are not null, each followed by a line end; `rows` the batch's rows, `nulls`
    the rows that are null, `at` the row of each line (None: line k is row k) and `values` the
    Arrow array of the lines' values (a rejected one's raw value is taken from it)."""

    data: bytes
    rows: int
    nulls: list[int]
    at: npt.NDArray[np.int64] | None
    values: Any


def _joined(column: Any) -> _Joined | None:
    """The values of the Arrow array `column` (strings, binary or integers, maybe dictionary
    encoded) joined into lines by Arrow: ~1 ms a 100k values, against ~0.1 s for making each
    a Python object and joining those. None if a value holds a line end (it would be two
    lines): such a batch goes one value at a time."""
    pa, _ = _pyarrow()
    import numpy as np
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_integer(column.type):
        column = column.cast(pa.string())  # as str(value) writes it
    rows = len(column)
    nulls: list[int] = []
    at = None
    if column.null_count:
        missing = column.is_null().to_numpy(zero_copy_only=False)
        nulls = np.flatnonzero(missing).tolist()
        at = np.flatnonzero(~missing).astype(np.int64)
        column = column.drop_null()
    if not len(column):
        return _Joined(b"", rows, nulls, at, column)
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    kind, lists = (pa.large_binary(), pa.LargeListArray) if large else (pa.binary(), pa.ListArray)
    bounds = pa.array([0, len(column)], pa.int64() if large else pa.int32())
    one = lists.from_arrays(bounds, column.cast(kind))
    data = pc.binary_join(one, pa.scalar(b"\n", kind))[0].as_buffer().to_pybytes() + b"\n"
    if data.count(b"\n") != len(column):
        return None
    return _Joined(data, rows, nulls, at, column)


def _raw(value: Any) -> bytes:
    """A Parquet value's raw field, as rejects show it: bytes, or its text in UTF-8."""
    return value if isinstance(value, bytes) else str(value).encode()


# ---------------------------------------------------------------------------------------------
# gzip


class _Gunzip:
    """Streaming gzip (multi-member) with bounded output per step."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._member_started = False
        self.consumed = 0
        self.produced = 0

    def feed(self, raw: bytes) -> None:
        self._input = self._input + raw if self._input else raw

    def step(self, limit: int) -> bytes:
        """Up to `limit` decompressed bytes; b"" once all input so far is used."""
        while self._input:
            if self._z.eof:
                if not self._input.strip(b"\0"):
                    self.consumed += len(self._input)
                    self._input = b""  # zero padding after the last member
                    return b""
                if len(self._input) < 2 and _GZIP_MAGIC.startswith(self._input):
                    return b""  # the start of a next member: wait for more
                if not self._input.startswith(_GZIP_MAGIC):
                    raise InputError(
                        f"{self._name}: unexpected data after a gzip member at compressed byte "
                        f"{self.consumed} ({self.produced} bytes decompressed so far): the file "
                        "is corrupt; compress it again"
                    )
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_started = False
            before = len(self._input)
            try:
                out = self._z.decompress(self._input, limit)
            except zlib.error as exc:  # somewhere in the input given it, or at its end (CRC)
                where = f"{self.consumed:,}-{self.consumed + before:,}"
                raise InputError(
                    f"{self._name}: gzip data is corrupt in compressed bytes {where} "
                    f"({self.produced:,} bytes decompressed before them): {exc}; check or "
                    "download the file again"
                ) from None
            self._member_started = True
            rest = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            self.consumed += before - len(rest)
            self._input = rest
            self.produced += len(out)
            if out:
                return out
            if len(rest) == before and not self._z.eof:
                break  # zlib wants more input
        return b""

    def finish(self) -> None:
        if (self._member_started and not self._z.eof) or self._input:
            raise InputError(
                f"{self._name}: gzip data is truncated after {self.consumed} compressed bytes "
                f"({self.produced} bytes decompressed): the file is incomplete; download or "
                "compress it again"
            )
