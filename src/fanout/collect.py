"""`fanout merge --from`: merge batch outputs fanout did not make (a folder or an S3 prefix).

There is no input to reconcile against, so every usable line is written (object by object, a
block of lines at a time), error lines go to `<result>.errors.jsonl` and unusable ones to
`<result>.corrupt.jsonl`, and the counts say what was seen. As in a run's merge, an ID's first
usable line wins: a later line for it (in any object) is not written again but listed in
`<result>.duplicates.jsonl` and counted, and an error line for an ID that has a result (or
an earlier error) is listed there too, not in the errors. IDs are compared by fingerprint
(`_dedupe`, ~10 bytes per ID); a collision lists a line as a duplicate, never drops it
silently. Errors wait in a temporary file until every result is known. Lines are parsed as
the run's merge parses them (`_outputs.parse_block`: compiled for the common shape). Streams:
one chunk of one object at a time; a line over `merge.MAX_LINE_BYTES` is reported corrupt, not
held.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from ._dedupe import _fingerprints_of, _FingerprintSet
from ._outputs import CommonLines, OutputRecord, blocks, parse_block
from .errors import ConfigError, MergeError
from .journal import FileSink
from .merge import MAX_LINE_BYTES, ResultFormat, ResultShape, open_results
from .records import InputKind
from .storage import S3Uri

if TYPE_CHECKING:
    from .aws import Aws

CHUNK = 2 << 20
_SIDES = (".errors.jsonl", ".corrupt.jsonl", ".duplicates.jsonl")  # beside the result


@dataclass(frozen=True, slots=True)
class Collected:
    objects: int
    lines: int
    results: int
    errors: int
    corrupt: int
    duplicates: int
    result: str


async def _sources(location: str, aws: Aws | None) -> list[str]:
    if location.startswith("s3://"):
        if aws is None:
            raise ConfigError("--from s3://… needs AWS access")
        where = S3Uri.parse(location, what="--from").as_prefix()
        found = [
            f"s3://{where.bucket}/{item.key}"
            async for item in aws.s3.list_objects(where.bucket, where.key)
            if item.key.endswith(".out")
        ]
    else:
        folder = Path(location)
        if not await anyio.Path(folder).is_dir():
            raise ConfigError(f"--from {location}: not a folder (or give s3://bucket/prefix/)")
        found = sorted([str(p) async for p in anyio.Path(folder).rglob("*.out")])
    if not found:
        raise ConfigError(f"--from {location}: no *.out objects there")
    return found


async def _chunks(source: str, aws: Aws | None) -> AsyncGenerator[bytes, None]:
    if source.startswith("s3://"):
        assert aws is not None
        uri = S3Uri.parse(source)
        async with contextlib.aclosing(aws.s3.read_chunks(uri.bucket, uri.key, CHUNK)) as body:
            async for chunk in body:
                yield chunk
        return
    async with await anyio.open_file(source, "rb") as handle:
        while chunk := await handle.read(CHUNK):
            yield chunk


async def _lines(source: str, aws: Aws | None) -> AsyncGenerator[bytes, None]:
    rest = b""
    async with contextlib.aclosing(_chunks(source, aws)) as chunks:
        async for chunk in chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line
    if rest:
        yield rest


def sniff(line: bytes) -> tuple[InputKind, ResultShape | None]:
    """The input kind (and result shape) of an output line, from its keys."""
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise MergeError("the first output line is not JSON: give --input-kind") from None
    echoed = obj.get("input") if isinstance(obj, dict) else None
    keys = set(echoed) if isinstance(echoed, dict) else set(obj if isinstance(obj, dict) else ())
    output = obj.get("output") if isinstance(obj, dict) else None
    segment = isinstance(output, dict) and bool({"usersList", "recommendedUsers"} & set(output))
    shape = ResultShape.SEGMENTS if segment else None
    if "itemAttributes" in keys:
        return InputKind.ITEM_ATTRIBUTES, ResultShape.SEGMENTS
    if "userId" in keys:
        return (InputKind.RANKING if "itemList" in keys else InputKind.USER), shape
    if "itemId" in keys:
        return InputKind.ITEM, shape
    raise MergeError("cannot tell the input kind from the first output line: give --input-kind")


async def collect(
    location: str,
    out: str,
    aws: Aws | None,
    *,
    kind: InputKind | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    raw: bool = False,
    separator: str = "|",
) -> Collected:
    sources = await _sources(location, aws)
    shape: ResultShape | None = None
    if kind is None:
        # Closed here, not left to the garbage collector: closing its file takes a worker
        # thread, which one started after the event loop's last task would keep the
        # interpreter from exiting.
        first = None
        async with contextlib.aclosing(_lines(sources[0], aws)) as lines_of:
            async for line in lines_of:
                if line.strip():
                    first = line
                    break
        if first is None:
            raise MergeError(f"{sources[0]} is empty: give --input-kind")
        kind, shape = sniff(first)
    result = Path(out)
    sides = [result.with_name(result.name + side) for side in _SIDES]
    if not overwrite and (existing := [str(path) for path in sides if path.exists()]):
        raise ConfigError(
            f"{', '.join(existing)} already exist beside --out {out} (an earlier merge's): pass "
            "--overwrite to replace them with this merge's, or choose another --out"
        )
    results_file = open_results(
        result,
        kind,
        fmt=ResultFormat(fmt) if fmt else None,
        overwrite=overwrite,
        raw=raw,
        separator=separator,
        shape=shape,
    )
    lines = found = corrupt = duplicates = 0
    seen = _FingerprintSet()  # the IDs with a result written
    pending = result.with_name(f".{result.name}.errors.pending")
    async with (
        _removed_after(pending),
        results_file as results,
        FileSink(sides[0]) as error_sink,
        FileSink(sides[1]) as corrupt_sink,
        FileSink(sides[2]) as duplicate_sink,
        FileSink(pending) as pending_sink,
    ):
        for source in sources:
            number = 0  # lines read so far
            read = blocks(_chunks(source, aws), MAX_LINE_BYTES)
            async with contextlib.aclosing(read) as source_blocks:
                async for block in source_blocks:
                    parsed = await anyio.to_thread.run_sync(
                        parse_block, number, block, kind, MAX_LINE_BYTES
                    )
                    number += parsed.count
                    lines += parsed.lines
                    corrupt += len(parsed.bad)
                    if parsed.bad:
                        await corrupt_sink.write(
                            b"".join(
                                orjson.dumps({"object": source, "line": at, "reason": reason})
                                + b"\n"
                                for at, reason in parsed.bad
                            )
                        )
                    failed = [record for record in parsed.records if record.error is not None]
                    if failed:
                        await pending_sink.write(
                            b"".join(
                                orjson.dumps({"id": r.key, "error": r.error, "object": source})
                                + b"\n"
                                for r in failed
                            )
                        )
                    usable = [record for record in parsed.records if record.error is None]
                    at = [
                        i
                        for i, r in zip(parsed.record_at.tolist(), parsed.records, strict=True)
                        if r.error is None
                    ]
                    kept, common, repeated = _first_seen(
                        seen, usable, at, parsed.common, parsed.common_at
                    )
                    if repeated:
                        duplicates += len(repeated)
                        await duplicate_sink.write(
                            b"".join(
                                orjson.dumps({"id": key, "object": source, "why": "result again"})
                                + b"\n"
                                for key in repeated
                            )
                        )
                    found += len(kept) + len(common)
                    await results.write(kept)
                    await results.write_common(common)
        await pending_sink.close()  # every error is in it: read it back, a batch at a time
        errors = 0
        settle = _PendingErrors(pending, seen)
        try:
            while (batch := await anyio.to_thread.run_sync(settle.next_batch)) is not None:
                first_errors, again, repeats = batch
                errors += first_errors.count(b"\n")
                await error_sink.write(first_errors)
                if repeats:
                    duplicates += repeats
                    await duplicate_sink.write(again)
        finally:
            settle.close()
    where = str(await anyio.Path(result).absolute())
    return Collected(len(sources), lines, found, errors, corrupt, duplicates, where)


@contextlib.asynccontextmanager
async def _removed_after(path: Path) -> AsyncIterator[None]:
    """`path` is removed when the block ends, however it ends."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.Path(path).unlink(missing_ok=True)


def _first_seen(
    seen: _FingerprintSet,
    records: list[OutputRecord],
    record_at: list[int],
    common: CommonLines,
    common_at: Any,
) -> tuple[list[OutputRecord], CommonLines, list[str]]:
    """Of a block's usable lines, those whose ID has no result yet (the first of a repeat
    within the block wins: lines are taken in their order), and the IDs of the others."""
    keys = [record.key.encode() for record in records] + common.keys()
    if not keys:
        return records, common, []
    import numpy as np

    order = np.argsort(np.array([*record_at, *common_at.tolist()], np.int64), kind="stable")
    fps = _fingerprints_of([keys[i] for i in order.tolist()])
    dup = seen.add(fps)
    if dup is None:
        return records, common, []
    repeated = np.zeros(len(keys), bool)
    repeated[order] = np.frombuffer(dup, np.uint8).astype(bool)
    count = len(records)
    kept = [
        record
        for record, again in zip(records, repeated[:count].tolist(), strict=True)
        if not again
    ]
    taken = common.take(np.flatnonzero(~repeated[count:]))
    return kept, taken, [keys[i].decode() for i in np.flatnonzero(repeated).tolist()]


class _PendingErrors:
    """The error lines waiting in `pending`, settled `BATCH` lines at a time (millions of them
    are never all in memory): an ID's first error is kept unless a result was written for it;
    the others are duplicates, listed with why."""

    BATCH = 65_536

    def __init__(self, pending: Path, seen: _FingerprintSet) -> None:
        self._handle = pending.open("rb")
        self._seen = seen  # done with for results: adding to it is harmless
        self._erred = _FingerprintSet()

    def next_batch(self) -> tuple[bytes, bytes, int] | None:
        """(error lines kept, duplicate lines, how many) of the next lines; None at the end."""
        import numpy as np

        lines = list(itertools.islice(self._handle, self.BATCH))
        if not lines:
            return None
        entries = [orjson.loads(line) for line in lines]
        fps = _fingerprints_of([str(entry["id"]).encode() for entry in entries])
        again = np.zeros(len(lines), np.bool_)  # an earlier error of the same ID
        if (found := self._erred.add(fps)) is not None:
            again = np.frombuffer(found, np.bool_)
        first = np.flatnonzero(~again)
        answered = np.zeros(len(lines), np.bool_)  # a first error of an ID with a result
        if len(first) and (found := self._seen.add(np.ascontiguousarray(fps[first]))) is not None:
            answered[first] = np.frombuffer(found, np.bool_)
        kept = b"".join(lines[i] for i in np.flatnonzero(~again & ~answered).tolist())
        listed = []
        for i in np.flatnonzero(again | answered).tolist():
            why = "error again" if again[i] else "error, but a result was written"
            entry = entries[i]
            listed.append(
                orjson.dumps({"id": entry["id"], "object": entry["object"], "why": why}) + b"\n"
            )
        return kept, b"".join(listed), len(listed)

    def close(self) -> None:
        self._handle.close()
