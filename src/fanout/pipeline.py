"""The pipeline: the only module that knows the order of the stages.

`prepare` streams the input through source → shard → upload with bounded streams, one task group
owning every task, and records each step in the run journal:

    run-started   the settings and the plan
    part-written  shard, part, records, bytes, sha256, uri (after the upload, with its ETag)
    shard-ready   every part of the shard is uploaded: the shard can become a job
    prepared      all shards are ready; the source's counts
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from .config import Limits, S3DataConfig, Timing, UploadSettings, check_run_id
from .errors import ConfigError, InputError
from .journal import JOURNAL_NAME, FileSink, Journal, private_dir, read_events, write_private
from .plan import InputEstimate, Plan, make_plan
from .shard import PartFile, ShardSealed, cut_shards, shard_dir
from .source import InputFile, Source, SourceOptions, SourceStats, open_input
from .storage import ObjectReader, S3Uri
from .upload import LocalPartWriter, PartWriter, UploadedPart, upload_parts

if TYPE_CHECKING:  # the AWS SDK is imported only by runs that use S3
    from .aws import Aws

EXACT_COUNT_BYTES = 64 * 1024 * 1024  # inputs up to this size are counted, not extrapolated
SAMPLE_BYTES = 4 * 1024 * 1024
LOCAL_WRITERS = 2


def new_run_id() -> str:
    """`YYYYMMDD-HHMMSS-xxxx`: sortable, unique enough, short enough for job names."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass(frozen=True, slots=True)
class PrepareSettings:
    """Everything `fanout prepare` needs."""

    ids: str
    run_id: str
    state_dir: Path
    job_input: S3DataConfig | None = None  # where shards go on S3 (None with local_dir)
    job_output: S3DataConfig | None = None  # only checked: never at or under job_input
    local_dir: Path | None = None
    source: SourceOptions = field(default_factory=SourceOptions)
    limits: Limits = field(default_factory=Limits)
    timing: Timing = field(default_factory=Timing)
    upload: UploadSettings = field(default_factory=UploadSettings)
    theme_generation: bool = False

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        if self.job_input is not None and self.local_dir is not None:
            raise ConfigError("give only one of --job-input (S3) and --local-dir")
        if self.job_input is not None and self.job_output is not None:
            check_output_outside_input(self.job_input.path, self.job_output.path)

    @property
    def run_dir(self) -> Path:
        return self.state_dir / self.run_id

    @property
    def file_records(self) -> int:
        limits = self.limits
        if self.theme_generation:
            return min(limits.max_file_records, limits.theme_max_file_records)
        return limits.max_file_records

    def input_base(self) -> str:
        """Where this run's shards go: `<job-input path>/<run>/` or `<local-dir>/<run>/`."""
        if self.job_input is not None:
            return str(
                S3Uri.parse(self.job_input.path, what="--job-input path").child(self.run_id + "/")
            )
        assert self.local_dir is not None
        return str(self.local_dir / self.run_id) + os.sep


def check_output_outside_input(input_path: str, output_path: str) -> None:
    """Personalize reads its input by prefix: an output at or under it would be read back."""
    source = S3Uri.parse(input_path, what="--job-input path").as_prefix()
    destination = S3Uri.parse(output_path, what="--job-output path").as_prefix()
    if source.bucket == destination.bucket and destination.key.startswith(source.key):
        raise ConfigError(
            f"--job-output {output_path} is at or under --job-input {input_path}; jobs read "
            "their input by prefix and would read their own output. Use separate prefixes, "
            "e.g. s3://bucket/in/ and s3://bucket/out/."
        )


@dataclass(frozen=True, slots=True)
class ShardReady:
    shard: int
    parts: int
    records: int
    nbytes: int
    prefix: str  # the path the job reads (ends in /)


@dataclass(frozen=True, slots=True)
class PrepareResult:
    run_id: str
    run_dir: Path
    plan: Plan
    shards: list[ShardReady]
    stats: SourceStats
    seconds: float
    input_base: str

    def summary(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "shards_at": self.input_base,
            "shards": len(self.shards),
            "parts": sum(s.parts for s in self.shards),
            "records": stats.records,
            "bytes": sum(s.nbytes for s in self.shards),
            "lines": stats.lines,
            "blank": stats.blank,
            "duplicates": stats.duplicates,
            "rejected": stats.rejected_total,
            "rejected_by_reason": {k.value: v for k, v in stats.rejected.items() if v},
            "seconds": round(self.seconds, 3),
        }


class _NullSink:
    async def write(self, data: bytes) -> None:
        pass


async def _limited(files: AsyncIterator[InputFile], budget: int) -> AsyncIterator[InputFile]:
    """The first file only, cut after about `budget` stored bytes (for sampling)."""

    async def head(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in chunks:
            yield chunk
            seen += len(chunk)
            if seen >= budget:
                return

    async for first in files:
        yield InputFile(first.name, head(first.chunks), first.size)
        return


async def _stored_size(spec: str, store: ObjectReader | None) -> int | None:
    """Bytes of the input as stored; None for stdin. A missing input is an error now, not later."""
    if spec == "-":
        return None
    if spec.startswith("s3://"):
        if store is None:
            return None
        uri = S3Uri.parse(spec, what="--ids")
        found = [o async for o in store.list_objects(uri.bucket, uri.key)]
        if not uri.key.endswith("/"):  # one object: not its siblings that share the prefix
            found = [o for o in found if o.key == uri.key]
        if not found:
            raise InputError(f"--ids {spec}: no such object (for a folder, end it with /)")
        return sum(o.size for o in found)
    try:
        return (await anyio.Path(spec).stat()).st_size
    except OSError as exc:
        raise InputError(f"--ids {spec}: {exc.strerror}") from None


async def estimate_input(
    spec: str, store: ObjectReader | None, options: SourceOptions
) -> InputEstimate:
    """Count the input exactly if it is small (or Parquet), else extrapolate from a sample."""
    size = await _stored_size(spec, store)
    if size is None:
        return InputEstimate(0, 0, exact=False, how="input size unknown (stdin)")
    exact = (
        size <= EXACT_COUNT_BYTES
        or options.format == "parquet"
        or spec.endswith((".parquet", ".pq"))
    )
    files = open_input(spec, store, chunk_bytes=options.chunk_bytes)
    if not exact:
        files = _limited(files, SAMPLE_BYTES)
    source = Source(files, options, rejects=_NullSink(), duplicates=_NullSink())
    nbytes = 0
    try:
        async for batch in source.batches():
            nbytes += batch.nbytes
    except InputError:
        if exact:
            raise
        # A sample can end inside a gzip member: what was read before still counts.
    stats = source.stats
    if exact:
        return InputEstimate(stats.records, nbytes, exact=True, how="counted")
    scale = size / max(1, min(size, stats.bytes_in or SAMPLE_BYTES))
    return InputEstimate(
        int(stats.records * scale),
        int(nbytes * scale),
        exact=False,
        how=f"extrapolated from the first {SAMPLE_BYTES // (1024 * 1024)} MiB of {size} bytes",
    )


async def plan_input(spec: str, store: ObjectReader | None, settings: PrepareSettings) -> Plan:
    estimate = await estimate_input(spec, store, settings.source)
    return make_plan(estimate, settings.limits, settings.timing, settings.file_records)


async def prepare(settings: PrepareSettings, aws: Aws | None = None) -> PrepareResult:
    """Shard and upload the input; journal every step. Needs `aws` unless writing locally."""
    started = time.perf_counter()
    if settings.job_input is None and settings.local_dir is None:
        raise ConfigError("give one of --job-input (upload to S3) and --local-dir")
    run_dir = settings.run_dir
    if (run_dir / JOURNAL_NAME).exists() and read_events(run_dir):
        raise ConfigError(
            f"run {settings.run_id} already exists ({run_dir}); choose another --run-id, or "
            "delete that directory to prepare it again from scratch"
        )
    private_dir(run_dir)
    store = aws.s3 if aws is not None else None
    if settings.ids.startswith("s3://") and store is None:
        raise ConfigError("--ids s3://… needs AWS access; it cannot be read with --local-dir only")
    plan = await plan_input(settings.ids, store, settings)
    base = settings.input_base()

    writer: PartWriter
    concurrency = settings.upload.concurrency
    if settings.job_input is not None:
        from .aws import Encryption
        from .upload_s3 import S3PartWriter

        assert aws is not None, "prepare to S3 needs an Aws"
        writer = S3PartWriter(
            aws.s3,
            S3Uri.parse(base),
            Encryption(settings.job_input.kms_key_arn),
            settings.upload,
        )
    else:
        writer = LocalPartWriter(Path(base))
        # A local disk needs no parallel requests to be fast: fewer parts in flight, less memory.
        concurrency = min(concurrency, LOCAL_WRITERS)

    shards: list[ShardReady] = []
    async with (
        Journal.open(run_dir) as journal,
        FileSink(run_dir / "rejects.jsonl") as rejects,
        FileSink(run_dir / "duplicates.txt") as duplicates,
    ):
        await journal.append(
            "run-started",
            run_id=settings.run_id,
            ids=settings.ids,
            input_base=base,
            plan=plan.to_dict(),
            settings=_settings_record(settings),
        )
        source = Source(
            open_input(settings.ids, store, chunk_bytes=settings.source.chunk_bytes),
            settings.source,
            rejects=rejects,
            duplicates=duplicates,
        )
        layout = plan.layout(settings.limits, settings.file_records)
        tracker = _ShardTracker(base, journal, shards)
        send, receive = anyio.create_memory_object_stream[PartFile](settings.upload.queue)

        async def written(part: UploadedPart) -> None:
            await journal.append("part-written", **asdict(part))
            await tracker.written(part)

        async with anyio.create_task_group() as group:
            parts = cut_shards(source.batches(), layout, join=settings.job_input is not None)
            group.start_soon(_produce, parts, send, tracker)
            group.start_soon(upload_parts, receive, writer, concurrency, written)
        stats = source.stats
        await journal.append(
            "prepared",
            shards=len(shards),
            records=stats.records,
            nbytes=sum(s.nbytes for s in shards),
            source=_stats_record(stats),
        )
    result = PrepareResult(
        settings.run_id,
        run_dir,
        plan,
        sorted(shards, key=lambda s: s.shard),
        stats,
        time.perf_counter() - started,
        base,
    )
    write_private(
        run_dir / "summary.json", orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2)
    )
    return result


class _ShardTracker:
    """Knows when a shard is complete: sealed by the cutter and every part written."""

    def __init__(self, base: str, journal: Journal, ready: list[ShardReady]) -> None:
        self._base = base
        self._journal = journal
        self._ready = ready
        self._sealed: dict[int, ShardSealed] = {}
        self._written: dict[int, int] = {}

    async def sealed(self, seal: ShardSealed) -> None:
        self._sealed[seal.shard] = seal
        await self._check(seal.shard)

    async def written(self, part: UploadedPart) -> None:
        self._written[part.shard] = self._written.get(part.shard, 0) + 1
        await self._check(part.shard)

    async def _check(self, shard: int) -> None:
        seal = self._sealed.get(shard)
        if seal is None or self._written.get(shard, 0) != seal.parts:
            return
        del self._sealed[shard]
        ready = ShardReady(
            shard, seal.parts, seal.records, seal.nbytes, self._base + shard_dir(shard)
        )
        await self._journal.append("shard-ready", **asdict(ready))
        self._ready.append(ready)


async def _produce(
    items: AsyncIterator[PartFile | ShardSealed],
    send: MemoryObjectSendStream[PartFile],
    tracker: _ShardTracker,
) -> None:
    async with send:
        async for item in items:
            if isinstance(item, ShardSealed):
                await tracker.sealed(item)
            else:
                await send.send(item)


def _settings_record(settings: PrepareSettings) -> dict[str, Any]:
    """The settings as the journal keeps them (no secrets exist in them to leave out)."""
    return {
        "ids": settings.ids,
        "job_input": settings.job_input.model_dump(by_alias=True) if settings.job_input else None,
        "local_dir": str(settings.local_dir) if settings.local_dir else None,
        "source": {
            "format": settings.source.format,
            "id_column": settings.source.id_column,
            "kind": settings.source.kind.value,
            "dedupe": settings.source.dedupe,
            "filter_values": {k: list(v) for k, v in settings.source.filter_values.items()},
            "max_id_length": settings.source.max_id_length,
        },
        "limits": settings.limits.model_dump(),
        "timing": settings.timing.model_dump(),
        "upload": settings.upload.model_dump(),
        "theme_generation": settings.theme_generation,
    }


def _stats_record(stats: SourceStats) -> dict[str, Any]:
    return {
        "files": stats.files,
        "lines": stats.lines,
        "blank": stats.blank,
        "records": stats.records,
        "duplicates": stats.duplicates,
        "rejected": {k.value: v for k, v in stats.rejected.items()},
        "bytes_in": stats.bytes_in,
    }
