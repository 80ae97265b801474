"""The pipeline: the only module that knows the order of the stages.

`prepare` streams the input through source → shard → upload with bounded streams, one task group
owning every task; `submit` adds submit → poll, fed by the shards as they become ready; `resume`
replays the journal (`state.py` lists its events) and continues whatever was unfinished:

* preparing: the input is read again and cut again (sharding is deterministic); parts the journal
  already has are checked against their sha256 and not uploaded again, a part that differs means
  the input changed and stops the run; unfinished multipart uploads of the run are aborted;
* submitting: the journal's jobs are tracked again, and a job created just before the crash is
  adopted by name (see `submit.py`).

Only one process works on a run at a time: the journal is locked while it is open. Once jobs are
submitted, the journal is mirrored to `<job-output path><run>/_fanout/journal.jsonl` (SSE-KMS),
so `fanout resume RUN --job-output …` works on a machine that never saw the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from ._formats import _PARQUET_MAGIC, _declared_format
from .config import Limits, S3DataConfig, Timing, UploadSettings, check_run_id
from .errors import ConfigError, FanoutError, InputError, MergeError
from .journal import (
    JOURNAL_NAME,
    EventLog,
    FileSink,
    Journal,
    busy,
    is_locked,
    parse_events,
    private_dir,
    read_events,
    write_private,
)
from .plan import InputEstimate, Plan, make_plan
from .preflight import check_request
from .records import MAX_ITEM_LIST, InputKind, JobType
from .shard import PartChunk, PartFile, ShardSealed, cut_shards, part_name, shard_dir, stream_parts
from .source import (
    InputFile,
    Source,
    SourceOptions,
    SourceStats,
    _head,
    _is_parquet,
    directory_files,
    hidden,
    open_input,
    s3_objects,
)
from .state import JobRecord, RunState, ShardInfo
from .storage import ObjectInfo, ObjectReader, S3Uri, empty_segment
from .submit import SubmitOutcome, SubmitSettings, Submitter, check_job_names, job_name
from .upload import LocalParts, PartWriter, UploadedPart, upload_parts

if TYPE_CHECKING:  # the AWS SDK only by runs that use S3, the merge only by runs that merge
    from .aws import Aws, S3Store
    from .merge import InputOrder, MergeSinks, MergeStats, Reconciliation

EXACT_COUNT_BYTES = 64 * 1024 * 1024  # inputs up to this size are counted, not extrapolated
SAMPLE_BYTES = 4 * 1024 * 1024
_Part = TypeVar("_Part", PartFile, PartChunk)


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
    job_type: JobType = "inference"  # "segment": batch segment jobs (their per-file limits)

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
        if self.job_type == "segment":
            per_file = (
                limits.segment_attribute_file_records
                if self.source.kind is InputKind.ITEM_ATTRIBUTES
                else limits.segment_item_file_records
            )
            return min(limits.max_file_records, per_file)
        if self.theme_generation:
            return min(limits.max_file_records, limits.theme_max_file_records)
        return limits.max_file_records

    def input_base(self) -> str:
        """Where this run's shards go: `<job-input path>/<run>/` or `<local-dir>/<run>/`."""
        if self.job_input is not None:
            return str(run_prefix(self.job_input.path, self.run_id, "--job-input"))
        assert self.local_dir is not None
        return str(self.local_dir / self.run_id) + os.sep


def check_output_outside_input(input_path: str, output_path: str) -> None:
    """Personalize reads its input by prefix: an output at or under it would be read back."""
    source = S3Uri.parse(input_path, what="--job-input path").as_prefix()
    destination = S3Uri.parse(output_path, what="--job-output path").as_prefix()
    if source.holds(destination):
        raise ConfigError(
            f"--job-output {output_path} is at or under --job-input {input_path}; jobs read "
            "their input by prefix and would read their own output. Use separate prefixes, "
            "e.g. s3://bucket/in/ and s3://bucket/out/."
        )
    if destination.holds(source):
        raise ConfigError(
            f"--job-input {input_path} is under --job-output {output_path}; the merge reads "
            "every output under a job's prefix there, and a run's input could be taken for "
            "another's output. Use separate prefixes, e.g. s3://bucket/in/ and s3://bucket/out/."
        )


def check_dataset_outside_jobs(out: str, request: Mapping[str, Any], whose: str = "") -> None:
    """An S3 result dataset must not overlap the job `request`'s input or output prefixes: a
    job reads its input by prefix (it would read the result files as input), and the merge
    reads every `.out` under a job's output."""
    dataset = S3Uri.parse(out, what="--out").as_prefix()
    job_paths = [
        (f"{whose}--job-input", str(request["jobInput"]["s3DataSource"]["path"])),
        (f"{whose}--job-output", str(request["jobOutput"]["s3DataDestination"]["path"])),
    ]
    for option, path in job_paths:
        place = S3Uri.parse(path, what=f"{option} path").as_prefix()
        if place.holds(dataset) or dataset.holds(place):
            raise ConfigError(
                f"--out {out} overlaps {option} {path}: jobs read their input by prefix and "
                "the merge reads their outputs by prefix, so results there would be read back. "
                "Give the results a prefix of their own, e.g. s3://bucket/results/"
            )


def check_writes_outside_ids(settings: PrepareSettings, out: str | None = None) -> None:
    """A folder or prefix given as `--ids` must not hold what the run writes (its shards, the
    jobs' output, its state, its result `out`): the next run over it would read them back as
    IDs. A place under it with a `_` or `.` name is left out of the input (`source.hidden`),
    so it may be there."""
    ids = settings.ids
    places: list[tuple[str, str]] = []
    local_out = out if out is not None and not out.startswith("s3://") else None
    if ids.startswith("s3://"):
        source = S3Uri.parse(ids, what="--ids")
        if source.key and not source.key.endswith("/"):
            return  # one object
        paths = [
            (option, config.path)
            for option, config in (
                ("--job-input", settings.job_input),
                ("--job-output", settings.job_output),
            )
            if config is not None
        ]
        if out is not None and out.startswith("s3://"):
            paths.append(("--out", out))
        for option, path in paths:
            place = S3Uri.parse(path, what=f"{option} path").as_prefix()
            if source.holds(place):
                places.append((option, place.key[len(source.key) :]))
    elif ids != "-" and local_out is not None and Path(local_out).resolve() == Path(ids).resolve():
        raise ConfigError(
            f"--out {out} is the input file --ids {ids}: the results would replace the IDs "
            "(with --overwrite) before a resume could read them again. Write them elsewhere"
        )
    elif ids != "-" and os.path.isdir(ids):
        root = Path(ids).resolve()
        for option, local in (
            ("--local-dir", settings.local_dir),
            ("--state-dir", settings.state_dir),
            ("--out", Path(local_out) if local_out is not None else None),
        ):
            where = Path(local).resolve() if local is not None else None
            if where is not None and (where == root or root in where.parents):
                places.append((option, "" if where == root else where.relative_to(root).as_posix()))
    for option, below in places:
        if not hidden(below):
            raise ConfigError(
                f"{option} is inside the input folder --ids {ids}: the next run over it would "
                f"read this run's files as IDs. Put it outside {ids}, or under a name starting "
                "with _ or . there (input folders leave those out)"
            )


@dataclass(frozen=True, slots=True)
class PrepareResult:
    run_id: str
    run_dir: Path
    plan: Plan
    shards: list[ShardInfo]
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


async def _limited(
    files: AsyncIterator[InputFile], budget: int, parquet: bool
) -> AsyncIterator[InputFile]:
    """The first file only, cut after about `budget` stored bytes (for sampling); whole if it is
    Parquet (`parquet`, or by its magic bytes), which cannot be read in part."""

    async def head(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        seen, start = 0, b""
        async for chunk in chunks:
            yield chunk
            seen += len(chunk)
            start = (start + chunk)[:4] if len(start) < 4 else start
            if seen >= budget and not (parquet or start == _PARQUET_MAGIC):
                return

    async for first in files:  # no size: a sample must not size the dedupe set for the whole file
        yield InputFile(first.name, head(first.chunks), None, sample=True)
        return


@dataclass(frozen=True, slots=True)
class _Stored:
    """The input as stored: its bytes (None for stdin or a pipe, which can be read only once),
    whether it is a folder (an S3 prefix or a local directory) and what under it is left out
    (`source.hidden`)."""

    size: int | None
    folder: bool = False
    skipped: tuple[str, ...] = ()


async def _stored(spec: str, store: ObjectReader | None) -> _Stored:
    """How `spec` is stored. A missing input is an error now, not later."""
    if spec == "-":
        return _Stored(None)
    if spec.startswith("s3://"):
        if store is None:
            return _Stored(None)
        found = await s3_objects(spec, store)
        return _Stored(sum(o.size for o in found.objects), found.folder, found.left)
    try:
        info = await anyio.Path(spec).stat()
    except OSError as exc:
        raise InputError(f"--ids {spec}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        files, skipped = await anyio.to_thread.run_sync(directory_files, spec)
        return _Stored(sum(size for _, size in files), True, tuple(skipped))
    return _Stored(info.st_size if stat.S_ISREG(info.st_mode) else None)


async def estimate_input(
    spec: str,
    store: ObjectReader | None,
    options: SourceOptions,
    stored: _Stored | None = None,
    *,
    whole: bool = False,
) -> InputEstimate:
    """Count the input exactly if it is small (or one Parquet file on S3 or stdin), else
    extrapolate from a sample: its first 4 MiB; the first file of a prefix of Parquet files; or
    the first 4 MiB of records of a large local Parquet file, by the rows its footer counts.
    An input of unknown size (stdin, a pipe) can be read only once: it is counted to its end
    with `whole` (`fanout plan`, which reads it for nothing else), else not read at all."""
    if stored is None:
        stored = await _stored(spec, store)
    size, skipped = stored.size, stored.skipped
    if size is None and not whole:
        return InputEstimate(0, 0, exact=False, how="input size unknown (stdin or a pipe)")
    parquet = options.format == "parquet" or spec.endswith((".parquet", ".pq"))
    rows = None
    if size is not None and size > EXACT_COUNT_BYTES and not stored.folder and "://" not in spec:
        rows = await anyio.to_thread.run_sync(_parquet_rows, spec, options.format)
    exact = (
        size is None
        or size <= EXACT_COUNT_BYTES
        or (parquet and not stored.folder and rows is None)
    )
    files = open_input(spec, store, chunk_bytes=options.chunk_bytes)
    if not exact and rows is None:
        files = _limited(files, SAMPLE_BYTES, parquet)
    source = Source(files, options, rejects=_NullSink(), duplicates=_NullSink())
    nbytes = 0
    try:
        async with contextlib.aclosing(source.batches()) as batches:
            async for batch in batches:
                nbytes += batch.nbytes
                if rows is not None and nbytes >= SAMPLE_BYTES:
                    break
    except InputError:
        if exact:
            raise
        # A sample that is not the input's start (a broken file): estimated from what was read.
    stats = source.stats
    if exact:
        how = "counted" if size is not None else "counted to its end (stdin or a pipe)"
        return InputEstimate(stats.records, nbytes, exact=True, how=how, skipped=skipped)
    assert size is not None
    if rows is not None:
        scale = rows / max(1, stats.lines)
        how = f"extrapolated from the first {stats.lines:,} of {rows:,} rows (Parquet footer)"
    else:
        sampled = min(size, stats.bytes_in or SAMPLE_BYTES)
        scale = size / max(1, sampled)
        how = f"extrapolated from the first {sampled:,} of {size:,} bytes"
    return InputEstimate(
        int(stats.records * scale), int(nbytes * scale), exact=False, how=how, skipped=skipped
    )


def _parquet_rows(path: str, fmt: str) -> int | None:
    """The rows the footer of the local Parquet file `path` counts; None if it is not Parquet
    (as the source tells: by `fmt`, its name, else its magic bytes) or its footer cannot be
    read (the count says why)."""
    try:
        if not _is_parquet(_declared_format(path, fmt), _head(path)):
            return None
    except OSError:
        return None
    try:
        import pyarrow.parquet as pq

        rows: int = pq.ParquetFile(path).metadata.num_rows
    except Exception:  # not readable (or no pyarrow): counting it says why
        return None
    return rows


async def plan_input(
    spec: str,
    store: ObjectReader | None,
    settings: PrepareSettings,
    stored: _Stored | None = None,
    *,
    whole: bool = False,
) -> Plan:
    """The plan for `spec` (`stored`: how it is stored, if the caller looked already; `whole`:
    read an input of unknown size to its end, see `estimate_input`)."""
    estimate = await estimate_input(spec, store, settings.source, stored, whole=whole)
    return make_plan(estimate, settings.limits, settings.timing, settings.file_records)


async def begin(
    settings: PrepareSettings,
    aws: Aws | None = None,
    submission: tuple[dict[str, Any], SubmitSettings, MergeSettings | None] | None = None,
) -> Plan:
    """Start a run: check the settings, plan it, and journal `run-started` (nothing uploaded).

    `prepare` continues with the shards; `submit` and `resume` prepare and submit at once.
    `submission` (`fanout run`: the job request, submit and merge settings) is journalled with
    `run-started`, under the same lock: a run killed right after it began is resumed as the
    run it is (jobs created, results merged), not as one that was only to be prepared.
    """
    if settings.job_input is None and settings.local_dir is None:
        raise ConfigError("give one of --job-input (upload to S3) and --local-dir")
    check_writes_outside_ids(settings)
    run_dir = settings.run_dir
    if (run_dir / JOURNAL_NAME).exists() and read_events(run_dir):
        if is_locked(run_dir / JOURNAL_NAME):  # begun by a process still at work on it
            raise busy(settings.run_id, run_dir / JOURNAL_NAME)
        raise ConfigError(
            f"run {settings.run_id} already exists ({run_dir}): `fanout resume "
            f"{settings.run_id}` continues it; or choose another --run-id, or delete that "
            "directory to prepare it again from scratch"
        )
    created = not run_dir.exists()
    private_dir(run_dir)
    store = aws.s3 if aws is not None else None
    try:
        if settings.ids.startswith("s3://") and store is None:
            raise ConfigError(
                "--ids s3://… needs AWS access; it cannot be read with --local-dir only"
            )
        stored = await _stored(settings.ids, store)  # listed once: planned and journalled
        plan = await plan_input(settings.ids, store, settings, stored)
        if submission is None:
            await check_destination(settings, aws)
        else:
            await check_destination(settings, aws, submission[0], submission[1].job_name_prefix)
    except BaseException:
        if created:  # refused before it began: leave no empty run behind
            with contextlib.suppress(OSError):
                os.rmdir(run_dir)
        raise
    started = {
        "run_id": settings.run_id,
        "ids": _portable(settings.ids),
        "input_base": settings.input_base(),
        "plan": plan.to_dict(),
        "settings": _settings_record(settings),
        "input_bytes": stored.size,  # a resume reads the input again: it must be this size
    }
    events: list[tuple[str, Mapping[str, Any]]] = [("run-started", started)]
    if submission is not None:
        state = RunState.replay([{"t": time.time(), "event": "run-started", **started}])
        events += _submission_events(state, *submission)[1]
    async with Journal.open(run_dir) as journal:
        await journal.append_all(events)  # together: a run begun is begun as what it is
    return plan


async def check_destination(
    settings: PrepareSettings,
    aws: Aws | None,
    request: Mapping[str, Any] | None = None,
    job_name_prefix: str = "fanout",
) -> None:
    """Before a run begins: nothing is where its shards go, nor (with the job `request`) where
    its jobs write, nor a job under its first job name. Without a request, also that the
    bucket is there and the KMS key usable (else the run would stop at its first upload, begun
    and unable to go on); a request has been through `preflight`, which checks those."""
    store = aws.s3 if aws is not None else None
    if settings.job_input is not None and request is None:
        assert aws is not None
        where = S3Uri.parse(settings.input_base())
        await aws.s3.check_bucket(where.bucket, where.key)
        if settings.job_input.kms_key_arn:
            await aws.check_kms_key(settings.job_input.kms_key_arn)
    await _check_unused(settings.input_base(), store)
    if request is None:
        return
    output = ((request.get("jobOutput") or {}).get("s3DataDestination") or {}).get("path")
    if output:
        await _check_unused(str(run_prefix(output, settings.run_id, "--job-output")), store)
    if aws is not None:
        await _check_no_job_named(settings, aws, request, job_name_prefix)


async def _check_no_job_named(
    settings: PrepareSettings, aws: Aws, request: Mapping[str, Any], prefix: str
) -> None:
    """ConfigError if the new run's first job name is taken: the run ID was used before in this
    account (job names are kept for ever), and a job of that name made just before the run
    began (within the clock skew allowed) would be adopted as this run's, its results merged."""
    parts = str(request.get("solutionVersionArn", "")).split(":")
    if len(parts) < 6:
        return
    name = job_name(prefix, settings.run_id, 0, 1)
    noun = "batch-segment-job" if settings.job_type == "segment" else "batch-inference-job"
    arn = ":".join([*parts[:5], f"{noun}/{name}"])  # the solution version's region, account
    found = await aws.jobs(settings.job_type).describe_job(arn)
    if found is not None:
        raise ConfigError(
            f"a job named {name} already exists ({found.status_text}): run ID "
            f"{settings.run_id} was used before in this account, and the service keeps its "
            "jobs' names; choose another --run-id"
        )


def run_prefix(path: str, run_id: str, option: str) -> S3Uri:
    """A run's own prefix under the `option` path: `<path>/<run>/`."""
    return S3Uri.parse(path, what=f"{option} path").child(run_id + "/")


async def _check_unused(base: str, store: S3Store | None) -> None:
    """ConfigError if a new run's prefix (or local directory) `base` holds anything: a job
    reads every object under its input prefix, and the merge every output under the run's, so
    what an earlier run of the same ID left there would be taken for this run's."""
    if base.startswith("s3://"):
        assert store is not None
        uri = S3Uri.parse(base)
        async with contextlib.aclosing(store.list_objects(uri.bucket, uri.key)) as objects:
            found = await anext(objects, None)
        if found is not None:
            raise ConfigError(
                f"{base} already holds objects (s3://{uri.bucket}/{found.key}, …), perhaps "
                "left by an earlier run of this ID; a new run needs it empty: choose another "
                f"--run-id, or remove them (`aws s3 rm --recursive {base}`)"
            )
    elif await anyio.to_thread.run_sync(_holds_anything, base):
        raise ConfigError(
            f"{Path(base)} already holds files, perhaps left by an earlier run of this ID; a new "
            "run needs it empty: choose another --run-id, or remove that directory"
        )


def _holds_anything(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except (FileNotFoundError, NotADirectoryError):
        return False


async def prepare(settings: PrepareSettings, aws: Aws | None = None) -> PrepareResult:
    """Shard and upload the input; journal every step. Needs `aws` unless writing locally."""
    started = time.perf_counter()
    plan = await begin(settings, aws)
    async with Journal.open(settings.run_dir) as journal, journal.stop_recorded():
        shards, stats = await _prepare(settings, plan, journal, aws, None, _ignore_shard)
    return _prepared(settings, plan, shards, stats, time.perf_counter() - started)


def _prepared(
    settings: PrepareSettings,
    plan: Plan,
    shards: list[ShardInfo],
    stats: SourceStats,
    seconds: float,
) -> PrepareResult:
    result = PrepareResult(
        settings.run_id,
        settings.run_dir,
        plan,
        sorted(shards, key=lambda s: s.shard),
        stats,
        seconds,
        settings.input_base(),
    )
    write_private(
        settings.run_dir / "summary.json",
        orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2),
    )
    return result


async def _ignore_shard(shard: ShardInfo) -> None:
    pass


OnReady = Callable[[ShardInfo], Awaitable[None]]


async def _prepare(
    settings: PrepareSettings,
    plan: Plan,
    journal: EventLog,
    aws: Aws | None,
    done: RunState | None,
    on_ready: OnReady,
    book: _PartBook | None = None,
) -> tuple[list[ShardInfo], SourceStats]:
    """Source → shard → upload, journalled; `done` is what an earlier attempt already did.
    Each part written goes into `book` too, if given."""
    base = settings.input_base()
    store = aws.s3 if aws is not None else None
    known = done.parts if done is not None else {}
    shards: list[ShardInfo] = []
    run_dir = settings.run_dir
    async with (
        FileSink(run_dir / "rejects.jsonl") as rejects,
        FileSink(run_dir / "duplicates.txt") as duplicates,
    ):
        source = Source(
            open_input(settings.ids, store, chunk_bytes=settings.source.chunk_bytes),
            settings.source,
            rejects=rejects,
            duplicates=duplicates,
        )
        layout = plan.layout(settings.limits, settings.file_records)
        already = set(done.shards) if done is not None else set()

        async def ready(shard: ShardInfo) -> None:
            if shard.shard not in already:
                await journal.append("shard-ready", **asdict(shard))
            shards.append(shard)
            await on_ready(shard)

        tracker = _ShardTracker(base, ready)

        async def written(part: UploadedPart) -> None:
            event = known.get((part.shard, part.part))
            if event is None:
                await journal.append("part-written", **asdict(part))
            else:
                part = _as_before(part, event)
            if book is not None:
                book.add(asdict(part))
            await tracker.written(part)

        if settings.job_input is None:
            # A local disk needs no parallel requests to be fast: each part is written as it is
            # cut (on the writer's thread), and a batch is let go once written.
            async with (
                contextlib.aclosing(source.batches()) as batches,
                LocalParts(Path(base), verify_only=known) as local,
                anyio.create_task_group() as group,
            ):
                group.start_soon(_report_written, local, written)
                await _produce(stream_parts(batches, layout), local.write, tracker)
                await local.finish()
        else:
            from .aws import Encryption
            from .upload_s3 import S3PartWriter

            assert aws is not None, "prepare to S3 needs an Aws"
            # Unfinished multipart uploads under the run's prefix: a crashed run's (resumed),
            # or one whose state directory was deleted to start it again. They hold no object
            # (the prefix was found empty) but S3 keeps, and bills, their parts until aborted.
            await aws.s3.abort_uploads(S3Uri.parse(base))
            writer: PartWriter = S3PartWriter(
                aws.s3,
                S3Uri.parse(base),
                Encryption(settings.job_input.kms_key_arn),
                settings.upload,
            )
            if known:
                writer = _SkipWritten(writer, known)
            parts, receive = anyio.create_memory_object_stream[PartFile](settings.upload.queue)
            async with (
                contextlib.aclosing(source.batches()) as batches,
                anyio.create_task_group() as group,
            ):
                cut = cut_shards(batches, layout, join=True)
                group.start_soon(_produce_into, cut, parts, tracker)
                group.start_soon(
                    upload_parts, receive, writer, settings.upload.concurrency, written
                )
    stats = source.stats
    await journal.append(
        "prepared",
        shards=len(shards),
        records=stats.records,
        nbytes=sum(s.nbytes for s in shards),
        source=_stats_record(stats),
    )
    return shards, stats


async def _report_written(
    local: LocalParts, on_written: Callable[[UploadedPart], Awaitable[None]]
) -> None:
    async for part in local.written():
        await on_written(part)


def _as_before(part: UploadedPart, event: Mapping[str, Any]) -> UploadedPart:
    """The part as an earlier attempt of the run journaled it, if it has the same bytes."""
    if event["sha256"] != part.sha256:
        raise InputError(
            f"the input changed since the run started: shard {part.shard} part {part.part} "
            "no longer has the bytes that were uploaded. Resume needs the same input and "
            "settings; start a new run for new input."
        )
    return UploadedPart(**{name: event[name] for name in UploadedPart.__slots__})


class _PartBook:
    """The parts the journal records for each shard: what its job is to read, all of it and
    nothing else."""

    def __init__(self, parts: Mapping[tuple[int, int], Mapping[str, Any]]) -> None:
        self._shards: dict[int, dict[int, Mapping[str, Any]]] = {}
        for event in parts.values():
            self.add(event)

    def add(self, part: Mapping[str, Any]) -> None:
        self._shards.setdefault(int(part["shard"]), {})[int(part["part"])] = part

    def of(self, shard: int) -> list[Mapping[str, Any]]:
        return [part for _, part in sorted(self._shards.get(shard, {}).items())]


async def _check_input(
    s3: S3Store,
    run_id: str,
    shard: ShardInfo,
    parts: Sequence[Mapping[str, Any]],
    kms_key: str | None = None,
) -> None:
    """Raise InputError unless the shard's prefix on S3 holds exactly the parts the journal
    records, as they were uploaded: checked before its job is created.

    A job reads every object under its prefix, so a part missing, changed or added since the
    upload would give results that cannot be reconciled with the run's input, and the merge
    would list as missing IDs that are not the input's. The run stops instead, before it
    creates more jobs (those created go on; `fanout resume` checks again). One listing; a part
    whose ETag differs (S3 may give one that differs for the same bytes) is compared by the
    SHA-256 checksum S3 holds for it."""
    try:
        problems = await _input_problems(s3, S3Uri.parse(shard.prefix), parts, kms_key)
    except FanoutError as exc:  # S3 failed after botocore's retries
        raise InputError(
            f"shard {shard.shard}: could not check its input on S3 before creating its job: "
            f"{exc}. `fanout resume {run_id}` checks again"
        ) from exc
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(
            f"shard {shard.shard}: its input on S3 changed after the upload, so its job was "
            f"not created: {'; '.join(problems[:3])}{more}. Put its parts back as they were "
            "(the journal has each part's size and SHA-256, and S3 each part's SHA-256 as its "
            "checksum; SSE-KMS with the run's key) and remove any other object under its "
            f"prefix, then run `fanout resume {run_id}`; or start a new run (another --run-id) "
            "for this input"
        )


async def _input_problems(
    s3: S3Store, prefix: S3Uri, parts: Sequence[Mapping[str, Any]], kms_key: str | None
) -> list[str]:
    """How the objects under `prefix` differ from `parts` (see `_check_input`); a part put
    there again (another ETag) must be under the run's KMS key too."""
    listed = {obj.key: obj async for obj in s3.list_objects(prefix.bucket, prefix.key)}
    problems = [
        f"s3://{prefix.bucket}/{key} is not one of its parts"
        for key in sorted(listed.keys() - {S3Uri.parse(part["uri"]).key for part in parts})
    ]
    for part in parts:
        uri = S3Uri.parse(part["uri"])
        found = listed.get(uri.key)
        if found is None:
            problems.append(f"{uri} is missing")
        elif found.size != part["nbytes"]:
            problems.append(f"{uri} holds {found.size:,} bytes, not {part['nbytes']:,}")
        elif found.etag != part["etag"]:
            head = await s3.head(uri.bucket, uri.key, checksums=True)
            if head is None:
                problems.append(f"{uri} is missing")
            elif not await _same_sha256(s3, uri, head, part["sha256"]):
                problems.append(f"{uri} has other bytes than were uploaded")
            elif kms_key and (
                head.get("ServerSideEncryption") != "aws:kms" or head.get("SSEKMSKeyId") != kms_key
            ):
                problems.append(f"{uri} is not encrypted with the run's KMS key {kms_key}")
    return problems


async def _same_sha256(s3: S3Store, uri: S3Uri, head: Mapping[str, Any], sha256: str) -> bool:
    """Whether the object (`head`: its HEAD, with checksums) has the SHA-256 `sha256` (hex): by
    the whole-object SHA-256 checksum S3 holds for it if it has one, else (an object uploaded
    in parts has a checksum of its parts' checksums, or none) by reading it."""
    from .aws import sha256_checksum

    held = head.get("ChecksumSHA256")
    whole = "-" not in str(head.get("ETag", "")) and head.get("ChecksumType") != "COMPOSITE"
    if held and whole:  # one PUT: its checksum is the whole object's (a multipart ETag ends -N)
        return bool(held == sha256_checksum(sha256))
    digest = hashlib.sha256()
    async for chunk in s3.read_chunks(uri.bucket, uri.key, 8 * 1024 * 1024):
        await anyio.to_thread.run_sync(digest.update, chunk)
    return digest.hexdigest() == sha256


class _SkipWritten:
    """A resumed run's S3 writer: parts the journal has are hashed (`_as_before` checks them),
    not uploaded again."""

    def __init__(self, writer: PartWriter, known: Container[tuple[int, int]]) -> None:
        self._writer = writer
        self._known = known

    async def write(self, part: PartFile) -> UploadedPart:
        if (part.shard, part.part) not in self._known:
            return await self._writer.write(part)
        sha256 = await anyio.to_thread.run_sync(part.sha256)
        return UploadedPart(part.shard, part.part, "", "", part.nbytes, part.records, sha256)


class _ShardTracker:
    """Knows when a shard is complete: sealed by the cutter and every part written."""

    def __init__(self, base: str, ready: OnReady) -> None:
        self._base = base
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
        await self._ready(
            ShardInfo(shard, seal.parts, seal.records, seal.nbytes, self._base + shard_dir(shard))
        )


async def _produce(
    items: AsyncIterator[_Part | ShardSealed],
    send: Callable[[_Part], Awaitable[None]],
    tracker: _ShardTracker,
) -> None:
    async for item in items:
        if isinstance(item, ShardSealed):
            await tracker.sealed(item)
        else:
            await send(item)


async def _produce_into(
    items: AsyncIterator[PartFile | ShardSealed],
    stream: MemoryObjectSendStream[PartFile],
    tracker: _ShardTracker,
) -> None:
    async with stream:
        await _produce(items, stream.send, tracker)


def _settings_record(settings: PrepareSettings) -> dict[str, Any]:
    """The settings as the journal keeps them (no secrets exist in them to leave out)."""
    return {
        "ids": _portable(settings.ids),
        "job_input": settings.job_input.model_dump(by_alias=True) if settings.job_input else None,
        "local_dir": str(settings.local_dir.absolute()) if settings.local_dir else None,
        "source": {
            "format": settings.source.format,
            "id_column": settings.source.id_column,
            "kind": settings.source.kind.value,
            "dedupe": settings.source.dedupe,
            "filter_values": {k: list(v) for k, v in settings.source.filter_values.items()},
            "max_id_length": settings.source.max_id_length,
            "max_item_list": settings.source.max_item_list,
            "chunk_bytes": settings.source.chunk_bytes,
            "placeholders": settings.source.placeholders,
        },
        "limits": settings.limits.model_dump(),
        "timing": settings.timing.model_dump(),
        "upload": settings.upload.model_dump(),
        "theme_generation": settings.theme_generation,
        "job_type": settings.job_type,
    }


def _portable(spec: str) -> str:
    """A local input as an absolute path, so a resume from another directory finds it."""
    if spec == "-" or spec.startswith("s3://"):
        return spec
    return str(Path(spec).absolute())


def _tuple_or_none(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _settings_from_record(state: RunState, state_dir: Path, ids: str | None) -> PrepareSettings:
    """The settings a run was prepared with, from its journal (to prepare it again).

    `ids` replaces the recorded input (moved, or stdin, which cannot be read twice); the
    parts' sha256 in the journal make sure it is the same input.
    """
    record = state.settings
    source = record["source"]
    spec = ids or record["ids"]
    if spec == "-" and ids is None:
        raise ConfigError(
            f"run {state.run_id} read its IDs from stdin and stopped before they were all "
            f"uploaded; stdin cannot be read again: pipe the same input to `fanout resume "
            f"{state.run_id} --ids -`, or start a new run"
        )
    if not spec.startswith("s3://") and spec != "-" and not Path(spec).exists():
        raise InputError(
            f"run {state.run_id} must read its input again to finish preparing, but {spec} "
            "does not exist here: give its location with `fanout resume RUN --ids SRC`"
        )
    return PrepareSettings(
        ids=spec,
        run_id=state.run_id,
        state_dir=state_dir,
        job_input=S3DataConfig.model_validate(record["job_input"]) if record["job_input"] else None,
        local_dir=Path(record["local_dir"]) if record["local_dir"] else None,
        source=SourceOptions(
            format=source["format"],
            id_column=source["id_column"],
            kind=InputKind(source["kind"]),
            dedupe=source["dedupe"],
            filter_values=source["filter_values"],
            max_id_length=source["max_id_length"],
            max_item_list=source.get("max_item_list", MAX_ITEM_LIST),
            **({"chunk_bytes": source["chunk_bytes"]} if "chunk_bytes" in source else {}),
            placeholders=_tuple_or_none(source.get("placeholders")),
        ),
        limits=Limits.model_validate(record["limits"]),
        timing=Timing.model_validate(record["timing"]),
        upload=UploadSettings.model_validate(record["upload"]),
        theme_generation=record["theme_generation"],
        job_type=record.get("job_type", "inference"),
    )


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


# -- submit and resume ----------------------------------------------------------------------------

MIRROR_SECONDS = 10.0
MIRROR_DEADLINE = 20.0  # one copy of the journal to S3 is given up after this many seconds
MIRROR_KEY = "_fanout/" + JOURNAL_NAME


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """What every job of a run shares: create-batch-inference-job's parameters without jobName.

    `jobInput` carries the run's input key, `jobOutput` the output base; each job reads
    `<job-input path><run>/shard-NNNNN/` and writes `<job-output path><run>/shard-NNNNN/`.
    """

    request: dict[str, Any]

    @property
    def output(self) -> S3DataConfig:
        return S3DataConfig.model_validate(self.request["jobOutput"]["s3DataDestination"])

    def output_base(self, run_id: str) -> S3Uri:
        return run_prefix(self.output.path, run_id, "--job-output")

    def for_shard(self, run_id: str, shard: ShardInfo, name: str) -> dict[str, Any]:
        request = dict(self.request)
        source = dict(request["jobInput"]["s3DataSource"])
        destination = dict(request["jobOutput"]["s3DataDestination"])
        source["path"] = shard.prefix
        destination["path"] = str(self.output_base(run_id).child(shard_dir(shard.shard)))
        request["jobName"] = name
        request["jobInput"] = {"s3DataSource": source}
        request["jobOutput"] = {"s3DataDestination": destination}
        return request


@dataclass(frozen=True, slots=True)
class MergeSettings:
    """Where and how a run's results are written (`--out` and its options)."""

    out: str
    fmt: str | None = None  # jsonl, csv or parquet; None: from the name
    overwrite: bool = False
    raw: bool = False  # the service's lines verbatim (JSON lines only)
    separator: str = "|"  # joins lists in CSV
    concurrency: int = 4  # shards merged at once (each is read, parsed and written in turn)
    order: str = "completion"  # or "input": the input's order (`merge.InputOrder`)

    @property
    def result_format(self) -> str:
        """`fmt`, or the format the name of `out` says."""
        from .merge import ResultFormat

        return self.fmt or ResultFormat.for_path(Path(self.out)).value

    def __post_init__(self) -> None:
        if self.fmt not in {None, "jsonl", "csv", "parquet"}:
            raise ConfigError(f"--format {self.fmt}: use jsonl, csv or parquet")
        if self.order not in {"completion", "input"}:
            raise ConfigError(f"--order {self.order}: use completion or input")
        if self.dataset:
            if not self.out.endswith("/"):
                raise ConfigError(
                    f"--out {self.out}: an S3 result is a Parquet dataset, a folder: end it "
                    "with / (e.g. s3://bucket/results/)"
                )
            if self.fmt not in {None, "parquet"} or self.raw or self.separator != "|":
                raise ConfigError(
                    f"--out {self.out}: an S3 result is Parquet only (no --raw, --separator)"
                )
            S3Uri.parse(self.out, what="--out")
            if (why := empty_segment(self.out)) is not None:
                raise ConfigError(f"--out {why}")
        else:  # journalled: a resume or retry from another directory finds the same file
            object.__setattr__(self, "out", str(Path(self.out).absolute()))
            from ._writers import ResultFormat, result_format

            # Before the run starts: found at the merge, a resume could never get past it.
            fmt = ResultFormat(self.fmt) if self.fmt else None
            result_format(Path(self.out), fmt, self.raw, self.separator)
        if self.concurrency < 1:
            raise ConfigError("merge concurrency must be at least 1")

    @property
    def dataset(self) -> bool:
        """An S3 Parquet dataset (one file per shard), not one local file."""
        return self.out.startswith("s3://")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run_id: str
    run_dir: Path
    state: RunState  # as it was when this process started on the run
    submitted: SubmitOutcome | None
    seconds: float
    merged: Reconciliation | None = None
    result: str | None = None  # where the merged results are
    retries: tuple[str, ...] = ()  # the retries (`fanout retry`) whose results `merged` adds
    earlier_results: int = 0  # `fanout retry`: results already in the result file before it
    reports_dir: Path | None = None  # `fanout retry`: the run whose errors.jsonl and
    # missing.txt now hold what still fails (else run_dir's)
    kept_errors: int = 0  # `fanout retry --missing-only`: error lines not sent again, kept
    # in errors.jsonl (`merged` counts what was sent)

    @property
    def ok(self) -> bool:
        sub = self.submitted
        return sub is not None and not sub.failed and not sub.timed_out

    @property
    def complete(self) -> bool:
        """Every ID sent has a result: no failed shard (or its IDs recommended by a retry),
        no error line, none missing."""
        merged = self.merged
        if merged is None or merged.errors or merged.missing or self.kept_errors:
            return False
        return self.ok or bool(self.retries)


def _job_input_of(state: RunState) -> S3DataConfig:
    record = state.settings.get("job_input")
    if not record:
        raise ConfigError(
            f"run {state.run_id} was prepared with --local-dir: its shards are not on S3, so no "
            "job can read them. Prepare it again with --job-input s3DataSource={path=s3://…}."
        )
    return S3DataConfig.model_validate(record)


def job_type_of(state: RunState) -> JobType:
    job_type: JobType = state.settings.get("job_type", "inference")
    return job_type


def make_template(state: RunState, request: dict[str, Any]) -> JobTemplate:
    """Check the job options against the run and build its template (no jobName)."""
    missing = [
        name for name in ("solutionVersionArn", "roleArn", "jobOutput") if not request.get(name)
    ]
    if missing:
        from .awsargs import cli_name

        names = ", ".join(cli_name(name) for name in missing)
        raise ConfigError(f"missing {names}: every job needs them (or give --cli-input-json)")
    job_input = _job_input_of(state)
    given = request.get("jobInput")
    if given:
        path = S3DataConfig.model_validate(given["s3DataSource"]).path
        if S3Uri.parse(path).as_prefix() != S3Uri.parse(job_input.path).as_prefix():
            raise ConfigError(
                f"--job-input {path} is not where run {state.run_id} was prepared "
                f"({job_input.path}); leave --job-input out, the run knows it"
            )
    output = S3DataConfig.model_validate(request["jobOutput"]["s3DataDestination"])
    check_output_outside_input(job_input.path, output.path)
    theme = request.get("batchInferenceJobMode") == "THEME_GENERATION"
    if job_type_of(state) == "inference" and theme != bool(state.settings.get("theme_generation")):
        raise ConfigError(
            "--batch-inference-job-mode must be the same as when the run was prepared "
            f"(THEME_GENERATION limits files to 100 records): the run was prepared "
            f"{'with' if state.settings.get('theme_generation') else 'without'} it"
        )
    template = {key: value for key, value in request.items() if key != "jobName"}
    template["jobInput"] = {"s3DataSource": job_input.model_dump(by_alias=True, exclude_none=True)}
    return JobTemplate(template)


async def submit(
    run_dir: Path,
    request: dict[str, Any],
    settings: SubmitSettings,
    aws: Aws,
    report: Callable[[str], None] | None = None,
    merge: MergeSettings | None = None,
    listener: Callable[[dict[str, Any]], None] | None = None,
    ids: str | None = None,
) -> RunOutcome:
    """Create and track the jobs of a run (preparing what is left of it first, if anything),
    and merge each job's output as it turns ACTIVE when `merge` is given. `listener` sees every
    journal event (live progress); `ids` is the input, if given again (stdin, which `begin`
    left unread for the run to read once)."""
    read_events(run_dir)  # no such run: say so, and create nothing
    async with Journal.open(run_dir) as journal, journal.stop_recorded():
        journal.listener = listener
        if listener is not None:
            for event in read_events(run_dir):
                listener(event)
        state = RunState.replay(read_events(run_dir), str(run_dir / JOURNAL_NAME))
        template = await _start_submission(journal, state, request, settings, merge)
        return await _drive(run_dir, journal, aws, template, settings, report, ids)


async def _start_submission(
    journal: Journal,
    state: RunState,
    request: dict[str, Any],
    settings: SubmitSettings,
    merge: MergeSettings | None,
) -> JobTemplate:
    """Journal `submit-started` (and `merge-started`), unless the run already has them; the
    job template."""
    template, events = _submission_events(state, request, settings, merge)
    if events:
        await journal.append_all(events)
    return template


def _submission_events(
    state: RunState,
    request: dict[str, Any],
    settings: SubmitSettings,
    merge: MergeSettings | None,
) -> tuple[JobTemplate, list[tuple[str, Mapping[str, Any]]]]:
    """The job template, and the `submit-started` and `merge-started` events the run does not
    have yet (checked: a run submitted with other job options is refused)."""
    template = make_template(state, request)
    events: list[tuple[str, Mapping[str, Any]]] = []
    if state.submit is not None:
        if state.submit["request"] != template.request:
            raise ConfigError(
                f"run {state.run_id} was already submitted with other job options: "
                f"`fanout resume {state.run_id}` continues it as it was"
            )
    else:
        longest = check_job_names(
            settings.job_name_prefix,
            state.run_id,
            max(state.start["plan"]["shards"], len(state.shards), 1),
            settings.job_retries + 1,
        )
        check_request(template.request, state.run_id, longest, job_type_of(state))
        events.append(
            ("submit-started", {"request": template.request, "submit": settings.to_dict()})
        )
    begun = state.open_merge  # `begin` journalled it
    if merge is not None and not (begun and begun["settings"] == merge.to_dict()):
        events.append(("merge-started", {"settings": merge.to_dict()}))
    return template, events


async def resume(
    run_dir: Path,
    aws: Aws | None,
    overrides: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
    ids: str | None = None,
    merge: MergeSettings | None = None,
    listener: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Continue a run from its journal: finish preparing, submitting and merging, whatever is
    left (a merge that did not finish is done again).

    `overrides` may change `poll_interval` and `job_timeout`; `ids` gives the input again;
    `merge` (re-)merges the results (`fanout merge RUN`).
    """
    read_events(run_dir)  # no such run: say so, and create nothing
    async with Journal.open(run_dir) as journal, journal.stop_recorded():
        journal.listener = listener
        if listener is not None:
            for event in read_events(run_dir):
                listener(event)
        state = RunState.replay(read_events(run_dir), str(run_dir / JOURNAL_NAME))
        if merge is None and state.merge and state.merged and _timed_out(state):
            # Merged without the shards whose jobs it stopped waiting for (--job-timeout):
            # this resume waits for them again, so their results must be merged in too.
            again = MergeSettings(**state.merge["settings"])
            merge = dataclasses.replace(again, out=state.merged["out"], overwrite=True)
        retried = _retried(run_dir) if merge is not None else []
        if merge is not None:
            if state.retrying is not None:  # its results would go into the old result file
                from .retry import finish_command

                raise ConfigError(
                    f"run {state.run_id} has a retry that did not finish "
                    f"({state.retrying['child']}): finish it with "
                    f"`{finish_command(state.run_id, state.retrying)}` first, then merge the run "
                    "again"
                )
            if state.submit is None:
                raise ConfigError(
                    f"run {state.run_id} has no jobs yet: `fanout submit` creates them; merge "
                    "comes after"
                )
            _check_retries_fit(state.run_id, retried, merge)
            _check_fits_parent(run_dir, state.run_id, merge)
            if merge.dataset:
                check_dataset_outside_jobs(merge.out, state.submit["request"], "the run's ")
            if state.open_merge is not None:  # a merge left unfinished: what it left behind
                unfinished = MergeSettings(**state.open_merge["settings"])
                if not unfinished.dataset:
                    _remove_temporaries(Path(unfinished.out), state.run_id)
            await journal.append("merge-started", settings=merge.to_dict())
        if state.submit is None:
            return await _drive(run_dir, journal, aws, None, None, report, ids)
        if aws is None:
            raise ConfigError("resuming a submitted run needs AWS access")
        template = JobTemplate(state.submit["request"])
        recorded = dict(state.submit["submit"])
        recorded.update({k: v for k, v in (overrides or {}).items() if v is not None})
        settings = SubmitSettings(**recorded)
        outcome = await _drive(run_dir, journal, aws, template, settings, report, ids)
        if merge is None and outcome.merged is None and state.merged is not None:
            return _as_merged(outcome, state)
        if merge is None or outcome.merged is None or not retried:
            return outcome
        outcome = await _with_retries(run_dir, journal, outcome, merge, retried)
        await _mirror_of(state, journal.path, aws, report).flush()  # `merged`, written after
        return outcome


def _as_merged(outcome: RunOutcome, state: RunState) -> RunOutcome:
    """A resume with nothing left to merge: the run's result as its journal has it, with what
    its retries added, so that the resume says what the result holds (and exits 0 when its
    retries recovered every failed shard's IDs) rather than only that shards had failed."""
    from .merge import Reconciliation

    counts = state.reconciled()
    assert state.merged is not None and counts is not None
    out = str(state.merged["out"])
    if not out.startswith("s3://") and not Path(out).is_file():
        raise MergeError(
            f"run {state.run_id} was merged to {out}, which is gone: `fanout merge "
            f"{state.run_id} --out {out}` writes it again"
        )
    return dataclasses.replace(
        outcome, merged=Reconciliation(**counts), result=out, retries=tuple(state.retries())
    )


async def _checked_role(aws: Aws, role_arn: str) -> str:
    """`role_arn` if it is an IAM role ARN that IAM knows (ConfigError if not)."""
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", role_arn):
        raise ConfigError(
            f"--role-arn {role_arn!r} is not an IAM role ARN: give arn:aws:iam::ACCOUNT:role/NAME"
        )
    await aws.check_role(role_arn)
    return role_arn


# A finished retry (`fanout retry`): its `retried` event in the run's journal (child, counts)
# and the state of its child run.
_Retry = tuple[dict[str, Any], RunState]


def _retried(run_dir: Path) -> list[_Retry]:
    """The run's finished retries, in order."""
    done = [e for e in read_events(run_dir) if e["event"] == "retried"]
    return [(e, RunState.replay(read_events(run_dir.parent / e["child"]))) for e in done]


def _remove_temporaries(out: Path, run_id: str) -> None:
    """What a merge of run `run_id` killed before it finished left beside its result `out`:
    its temporary file and the input-order files it held, named for the run (another run's
    merge to the same file may be writing its own there). The caller holds the run journal's
    lock, so no other merge of this run is alive."""
    name = glob.escape(out.name)
    for stale in out.parent.glob(f".{name}.{run_id}.*.tmp"):
        stale.unlink(missing_ok=True)
    for stale in out.parent.glob(f".{name}.{_ORDER}.{run_id}.*"):
        shutil.rmtree(stale, ignore_errors=True)


_ORDER = "order"  # input-order folders beside a result: `.<result>.order.<run>.<random>`


def _check_retries_fit(run_id: str, retried: list[_Retry], merge: Any) -> None:
    """A run merged again after `fanout retry` gets its retries' results appended: they must
    be of the format it is merged to (a retry's are in the format the run was first merged to)."""
    from .merge import ResultFormat

    if not retried:
        return
    if merge.dataset:
        raise ConfigError(
            f"run {run_id} was retried ({', '.join(e['child'] for e, _ in retried)}): its "
            "retries' results cannot be added to an S3 dataset; merge it to a file"
        )
    fmt = merge.result_format
    for event, state in retried:
        assert state.merged is not None
        theirs = Path(state.merged["out"])
        if (kind := ResultFormat.for_path(theirs).value) != fmt:
            raise ConfigError(
                f"run {run_id} was retried ({event['child']}), whose results are {kind}: "
                f"merge it again to a {kind} file, so that they are added to it"
            )
        if not theirs.is_file():  # checked now: found missing half-way, the merge would stop
            raise ConfigError(  # with the result holding the run's own jobs' results only
                f"run {run_id} was retried ({event['child']}), and that retry's results, "
                f"{theirs}, are gone: write them again with `fanout merge {event['child']} "
                f"--out {theirs}`, then merge run {run_id} again"
            )


def _check_fits_parent(run_dir: Path, run_id: str, merge: Any) -> None:
    """A retry's run (`RUN-rN`) merged again is what its parent's merges add to the parent's
    result: to a file of another format (or a dataset) they could add it no more."""
    from .merge import ResultFormat
    from .retry import parent_of

    parent_id = parent_of(run_dir)
    if parent_id is None:
        return
    merged = RunState.replay(read_events(run_dir.parent / parent_id)).merged
    if merged is None:
        return
    kind = ResultFormat.for_path(Path(merged["out"])).value
    if merge.dataset or merge.result_format != kind:
        raise ConfigError(
            f"run {run_id} is a retry of run {parent_id}, whose result is {kind}: its results "
            f"are added to that result (and again whenever {parent_id} is merged), so merge it "
            f"to a {kind} file"
        )


async def _with_retries(
    run_dir: Path,
    journal: Journal,
    outcome: RunOutcome,
    merge: Any,
    retried: list[_Retry],
) -> RunOutcome:
    """The run's result merged again, with its retries' results appended, in order, and the
    last retry's errors and missing IDs as the run's: the result `fanout retry` had made (a
    merge of the run's own jobs alone would list as missing what its retries recommended)."""
    from . import retry as retrying

    assert outcome.merged is not None
    out = Path(merge.out)
    fmt = merge.result_format
    results = outcome.merged.results
    for event, state in retried:
        assert state.merged is not None
        theirs = Path(state.merged["out"])
        try:
            await anyio.to_thread.run_sync(retrying.combine, out, theirs, fmt)
        except MergeError as exc:
            raise MergeError(
                f"{exc}. {out} holds the results of the run's own jobs and of the retries "
                f"before {event['child']} only: write {theirs} again (`fanout merge "
                f"{event['child']} --out {theirs}`), then merge run {outcome.run_id} again"
            ) from exc
        results += int(state.merged["counts"]["results"])
    # The run's errors and missing IDs are those the last retry left: its own, and the errors
    # a --missing-only retry kept (not sent again), as its `retried` event counts them.
    child, last = retried[-1][0]["child"], retried[-1][0]["counts"]
    kept = retrying.kept_errors(run_dir, child)
    retrying.replace_reports(run_dir, run_dir.parent / child, kept if kept.exists() else None)
    merged = dataclasses.replace(
        outcome.merged, results=results, errors=int(last["errors"]), missing=int(last["missing"])
    )
    retries = [event["child"] for event, _ in retried]
    await journal.append("merged", out=str(out), counts=asdict(merged), retries=retries)
    return dataclasses.replace(outcome, merged=merged, retries=tuple(retries))


def _timed_out(state: RunState) -> list[int]:
    """The shards whose jobs the run stopped waiting for (`--job-timeout`) while they ran."""
    return [shard for shard in state.jobs if (job := state.job(shard)) and job.abandoned]


def needs_aws(state: RunState, ids: str | None = None) -> bool:
    """Whether continuing the run talks to AWS (S3 input or shards, or jobs)."""
    settings = state.settings
    spec = ids or str(settings.get("ids", ""))
    return bool(state.submit or settings.get("job_input") or spec.startswith("s3://"))


async def _drive(
    run_dir: Path,
    journal: Journal,
    aws: Aws | None,
    template: JobTemplate | None,
    settings: SubmitSettings | None,
    report: Callable[[str], None] | None,
    ids: str | None = None,
) -> RunOutcome:
    started = time.perf_counter()
    state = RunState.replay(read_events(run_dir), str(journal.path))
    send, receive = anyio.create_memory_object_stream[ShardInfo](max(1, len(state.shards)) + 1024)
    outcome: SubmitOutcome | None = None
    mirror = None
    merging = state.open_merge is not None and template is not None
    book = _PartBook(state.parts)
    kms_key = _job_input_of(state).kms_key_arn if template is not None else None
    if template is not None and aws is not None:
        mirror = _mirror_of(state, journal.path, aws, report)

    async def prepare_rest() -> None:
        async with send:
            if state.prepared is not None:
                for shard in sorted(state.shards.values(), key=lambda s: s.shard):
                    await send.send(shard)
                return
            prepare_settings = _settings_from_record(state, run_dir.parent, ids)
            if aws is None and needs_aws(state, ids):
                raise ConfigError(f"run {state.run_id} needs AWS access to finish preparing")
            await _check_same_input(state, prepare_settings.ids, aws.s3 if aws else None)
            resumed = bool(state.parts)  # some parts were written before: a resume
            if resumed and state.start.get("input_bytes") is None and report is not None:
                report(
                    f"warning: run {state.run_id} reads its input from a pipe, whose size the "
                    "journal does not know: fanout checks that it begins with the lines already "
                    "sent, not that it is the whole input the run began with; compare the "
                    "summary's input lines with your export's"
                )
            plan = Plan(**state.start["plan"])
            await _prepare(prepare_settings, plan, journal, aws, state, send.send, book)

    async with contextlib.AsyncExitStack() as stack:
        stack.callback(send.close)  # however the run ends, no stream is left open
        stack.callback(receive.close)
        merger: _RunMerger | None = None
        if merging:
            assert state.merge is not None and template is not None and aws is not None
            merger = await _RunMerger.open(stack, state, run_dir, template, aws, journal, report)
            stack.callback(merger.close)
        try:  # (a stop journalled inside, so that the mirror flushed after has it too)
            async with journal.stop_recorded(), anyio.create_task_group() as outer:
                if mirror is not None:
                    outer.start_soon(mirror.run)
                async with anyio.create_task_group() as group:
                    group.start_soon(prepare_rest)
                    if merger is not None:
                        group.start_soon(merger.run)
                    if template is not None and settings is not None and aws is not None:
                        submitter = Submitter(
                            run_id=state.run_id,
                            service=aws.jobs(job_type_of(state)),
                            journal=journal,
                            settings=settings,
                            request_for=lambda shard, name: template.for_shard(
                                state.run_id, shard, name
                            ),
                            jobs=_waited_afresh(state),
                            failed={n: event["reason"] for n, event in state.failed.items()},
                            report=report,
                            on_active=merger.active if merger is not None else None,
                            run_started=state.started,
                            check_input=lambda shard: _check_input(
                                aws.s3, state.run_id, shard, book.of(shard.shard), kms_key
                            ),
                        )
                        outcome = await submitter.run(receive)
                        await journal.append(
                            "submitted",
                            active=len(outcome.active),
                            failed=len(outcome.failed),
                            timed_out=len(outcome.timed_out),
                        )
                        if merger is not None:
                            await merger.finish(submitter.shards(), outcome)
                    else:
                        async with receive:
                            async for _ in receive:
                                pass
                outer.cancel_scope.cancel()  # the mirror's loop: everything else is done
        finally:
            if mirror is not None:
                await mirror.flush()
        merged = merger.reconcile(run_dir) if merger is not None else None
        if merger is not None:
            await merger.complete()
            # The result is moved into place when this block ends: a crash between that and
            # `merged` must not make the next resume refuse "its" file as someone else's.
            await journal.append("results-ready", out=merger.out)
    if merger is not None and merged is not None:
        await journal.append("merged", out=merger.out, counts=asdict(merged))
        if mirror is not None:
            await mirror.flush()
    return RunOutcome(
        state.run_id,
        run_dir,
        state,
        outcome,
        time.perf_counter() - started,
        merged,
        merger.out if merger is not None else None,
    )


async def _check_same_input(state: RunState, spec: str, store: ObjectReader | None) -> None:
    """Refuse to finish preparing from an input of another size than the run started with:
    the parts already written are checked by their hash, but an input cut short after them
    (a truncated export) would otherwise make fewer shards, and its users would be lost."""
    recorded = state.start.get("input_bytes")
    if recorded is None:
        return  # stdin or a pipe, or a journal from before the size was recorded
    size = (await _stored(spec, store)).size
    if size is not None and size != recorded:
        raise InputError(
            f"the input changed since the run started: {spec} holds {size:,} bytes, the run "
            f"began with {recorded:,}; resume with the same input (--ids SRC), or start a new "
            "run for the new one"
        )


def _waited_afresh(state: RunState) -> dict[int, JobRecord]:
    """The latest job of each shard, for the submitter to track: one the run stopped waiting
    for (`--job-timeout`) and that is still running is waited for again, under this run's
    timeout (a resume may give a longer one)."""
    jobs = {n: job for n in state.jobs if (job := state.job(n))}
    for job in jobs.values():
        if job.abandoned:
            job.timed_out = False
    return jobs


def dataset_file(run_id: str, shard: int) -> str:
    """A result dataset's file for one shard: the run is in the name, so that a resumed merge
    knows its own files from another run's."""
    return f"part-{run_id}-{shard:05d}.parquet"


_CLAIM = "_fanout-"  # a run's claim on a result dataset: `_fanout-<run>`


def dataset_claim(run_id: str) -> str:
    """The object a run keeps in a result dataset while it merges into it: another run's merge
    to the same prefix sees that the dataset is taken (it would mix both runs' rows)."""
    return _CLAIM + run_id


async def _dataset_files(aws: Aws, where: S3Uri) -> list[str]:
    """The keys directly under the dataset prefix that fanout writes: part files, claims,
    `_SUCCESS`."""
    prefix = where.as_prefix().key
    return [
        item.key
        async for item in aws.s3.list_objects(where.bucket, prefix)
        if "/" not in (name := item.key[len(prefix) :])
        and (
            name == "_SUCCESS"
            or name.startswith(_CLAIM)
            or (name.startswith("part-") and name.endswith(".parquet"))
        )
    ]


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _other_runs(keys: list[str], run_id: str) -> list[str]:
    """Of a dataset's files, those of other runs: their part files and claims (a `_SUCCESS`
    marker alone may be this run's own, from a merge before)."""
    names = {key: key.rsplit("/", 1)[-1] for key in keys}
    return [
        key
        for key, name in names.items()
        if name not in ("_SUCCESS", dataset_claim(run_id))
        and not name.startswith(f"part-{run_id}-")
    ]


async def _prepare_dataset(
    aws: Aws, where: S3Uri, run_id: str, overwrite: bool, encryption: Any
) -> None:
    """An S3 result folder must hold no other run's dataset, finished or being merged, unless
    --overwrite (which deletes only what fanout writes there: part-*.parquet, _SUCCESS and
    claims). This run's own files (a merge cut short by a crash) are replaced. Then the run
    claims the folder until its `_SUCCESS` is written."""
    found = await _dataset_files(aws, where)
    others = _other_runs(found, run_id)
    if others and not overwrite:
        names = [key.rsplit("/", 1)[-1] for key in others]
        claims = [name.removeprefix(_CLAIM) for name in names if name.startswith(_CLAIM)]
        now = f"; run {', '.join(claims)} is merging into it now" if claims else ""
        raise ConfigError(
            f"--out {where} already holds another run's result dataset ({len(others)} "
            f"files{now}): pass --overwrite to replace it, or choose another prefix"
        )
    if found:
        await aws.s3.delete_objects(where.bucket, found)
    claim = where.as_prefix().child(dataset_claim(run_id))
    await aws.s3.put_object(claim.bucket, claim.key, b"", encryption)


class _InputsOnly:
    """An object reader that sees no job outputs: a shard without an ACTIVE job sent nothing
    back, whatever a failed attempt may have left under its output prefix."""

    def __init__(self, reader: ObjectReader, outputs: S3Uri) -> None:
        self._reader = reader
        self._outputs = outputs

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        if bucket == self._outputs.bucket and prefix.startswith(self._outputs.key):
            return
        async for found in self._reader.list_objects(bucket, prefix):
            yield found

    def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        return self._reader.read_chunks(bucket, key, chunk_size)


class _RunMerger:
    """Merges each shard's outputs into the run's result set as its job turns ACTIVE, and the
    shards that never got one as all missing, then reconciles the whole run."""

    def __init__(
        self,
        state: RunState,
        template: JobTemplate,
        aws: Aws,
        journal: EventLog,
        sinks: MergeSinks,
        settings: MergeSettings,
        report: Callable[[str], None] | None,
    ) -> None:
        self._state = state
        self._template = template
        self._aws = aws
        self._journal = journal
        self._sinks = sinks
        self._settings = settings
        self._report = report or (lambda message: None)
        self._kind = InputKind(state.settings["source"]["kind"])
        self._send, self._receive = anyio.create_memory_object_stream[tuple[ShardInfo, bool]](
            math.inf
        )
        self._queued: set[int] = set()
        self.stats: dict[int, MergeStats] = {}
        self.out = settings.out if settings.dataset else str(Path(settings.out).absolute())
        self._scratch = (
            Path(tempfile.mkdtemp(prefix="fanout-dataset-")) if settings.dataset else None
        )
        self._order: InputOrder | None = None
        if settings.order == "input" and not settings.dataset:
            from .merge import InputOrder

            # Results held back for their turn: beside the result file, which needs that room.
            out = Path(self.out)
            prefix = f".{out.name}.{_ORDER}.{state.run_id}."
            held = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
            self._order = InputOrder(sinks.results, self._kind, held)

    @classmethod
    async def open(
        cls,
        stack: contextlib.AsyncExitStack,
        state: RunState,
        run_dir: Path,
        template: JobTemplate,
        aws: Aws,
        journal: EventLog,
        report: Callable[[str], None] | None,
    ) -> _RunMerger:
        from .merge import MergeSinks, ResultFormat, ResultShape, open_results

        assert state.merge is not None
        settings = MergeSettings(**state.merge["settings"])
        kind = InputKind(state.settings["source"]["kind"])
        segments = job_type_of(state) == "segment"
        results: Any = None
        if settings.dataset:
            from .aws import Encryption

            where = S3Uri.parse(settings.out)
            # (Past results-ready too: the run's own files are known by their names.)
            encryption = Encryption(template.output.kms_key_arn)
            await _prepare_dataset(aws, where, state.run_id, settings.overwrite, encryption)
        else:
            _remove_temporaries(Path(settings.out), state.run_id)
            results = await stack.enter_async_context(
                open_results(
                    settings.out,
                    kind,
                    shape=ResultShape.SEGMENTS if segments else None,
                    fmt=ResultFormat(settings.fmt) if settings.fmt else None,
                    overwrite=settings.overwrite or state.results_ready,
                    raw=settings.raw,
                    separator=settings.separator,
                    owner=state.run_id,
                )
            )
        errors = await stack.enter_async_context(FileSink(run_dir / "errors.jsonl"))
        missing = await stack.enter_async_context(FileSink(run_dir / "missing.txt"))
        corrupt = await stack.enter_async_context(FileSink(run_dir / "corrupt.jsonl"))
        sinks = MergeSinks(results, errors, missing, corrupt)
        return cls(state, template, aws, journal, sinks, settings, report)

    def close(self) -> None:
        self._send.close()
        self._receive.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self._order is not None:
            shutil.rmtree(self._order.folder, ignore_errors=True)

    async def active(self, shard: ShardInfo) -> None:
        """The shard's job is ACTIVE: merge its outputs (the submitter's `on_active`)."""
        await self._queue(shard, outputs=True)

    async def _queue(self, shard: ShardInfo, *, outputs: bool) -> None:
        if shard.shard not in self._queued:
            self._queued.add(shard.shard)
            await self._send.send((shard, outputs))

    async def finish(self, shards: list[ShardInfo], outcome: SubmitOutcome) -> None:
        """Every job is terminal: shards without an ACTIVE job are merged as all missing."""
        async with self._send:
            for shard in shards:
                if shard.shard not in outcome.active:
                    await self._queue(shard, outputs=False)

    async def run(self) -> None:
        limiter = anyio.CapacityLimiter(self._settings.concurrency)
        async with self._receive, anyio.create_task_group() as group:
            async for shard, outputs in self._receive:
                group.start_soon(self._merge, shard, outputs, limiter)

    async def _merge(self, shard: ShardInfo, outputs: bool, limiter: anyio.CapacityLimiter) -> None:
        from .merge import MergeOptions, merge_shard

        async with limiter:
            run_id = self._state.run_id
            base = str(self._state.start["input_base"])
            parts = [base + part_name(shard.shard, part) for part in range(shard.parts)]
            prefix = self._template.output_base(run_id).child(shard_dir(shard.shard))
            reader: ObjectReader = self._aws.s3 if outputs else _InputsOnly(self._aws.s3, prefix)
            ordered = None if self._order is None else self._order.lines_for(shard.shard)
            if self._scratch is not None:
                stats = await self._merge_to_dataset(shard, reader, str(prefix), parts)
            else:
                stats = await merge_shard(
                    reader, str(prefix), self._kind, parts, self._sinks, shard=shard.shard,
                    options=MergeOptions().for_input(shard.nbytes), ordered=ordered,
                )  # fmt: skip
        read = stats.sent + stats.duplicated_in_input
        if read != shard.records:
            raise MergeError(
                f"shard {shard.shard}: its input parts ({shard.prefix}) hold {read:,} records "
                f"now, {shard.records:,} when they were written: they were changed since, and "
                "its job read the changed ones, so its results cannot be reconciled with this "
                "run's input. Start a new run (another --run-id) for this input"
            )
        if self._order is not None and ordered is not None:  # written in turn, outside the
            await self._order.merged(shard.shard, ordered)  # limit on merges at once
        self.stats[shard.shard] = stats
        await self._journal.append("shard-merged", **asdict(stats))
        self._report(
            f"shard {shard.shard}: merged {stats.results:,} results, {stats.errors:,} errors, "
            f"{stats.missing:,} missing" + ("" if outputs else " (no ACTIVE job)")
        )

    async def _merge_to_dataset(
        self, shard: ShardInfo, reader: ObjectReader, prefix: str, parts: list[str]
    ) -> MergeStats:
        """One shard into its own Parquet file, uploaded to the dataset with SSE-KMS."""
        from .aws import Encryption
        from .merge import (
            MergeOptions,
            OrderedLines,
            ResultFormat,
            ResultShape,
            merge_shard,
            open_results,
        )

        assert self._scratch is not None
        name = dataset_file(self._state.run_id, shard.shard)
        local = self._scratch / name
        segments = job_type_of(self._state) == "segment"
        async with open_results(
            local,
            self._kind,
            fmt=ResultFormat.PARQUET,
            overwrite=True,
            shape=ResultShape.SEGMENTS if segments else None,
        ) as results:
            sinks = dataclasses.replace(self._sinks, results=results)
            held = self._scratch / f"order-{shard.shard:05d}"  # each file in input order
            ordered = OrderedLines(held) if self._settings.order == "input" else None
            try:
                if ordered is not None:
                    held.mkdir()
                stats = await merge_shard(
                    reader, prefix, self._kind, parts, sinks, shard=shard.shard,
                    options=MergeOptions().for_input(shard.nbytes), ordered=ordered,
                )  # fmt: skip
                if ordered is not None:
                    await ordered.write_to(results, self._kind)
            finally:
                if ordered is not None:
                    ordered.close()
                    shutil.rmtree(held, ignore_errors=True)
        destination = S3Uri.parse(self.out).child(name)
        key = self._template.output.kms_key_arn
        await self._aws.s3.upload_file(local, destination.bucket, destination.key, Encryption(key))
        await anyio.Path(local).unlink(missing_ok=True)
        return stats

    async def complete(self) -> None:
        """A dataset gets its `_SUCCESS` marker once every shard's file is in place."""
        if self._scratch is None:
            return
        from .aws import Encryption

        where = S3Uri.parse(self.out)
        others = _other_runs(await _dataset_files(self._aws, where), self._state.run_id)
        if others:  # begun at about the same moment as this one: both passed the first check
            raise MergeError(
                f"--out {where}: another run wrote to this dataset while run "
                f"{self._state.run_id} merged into it ({_some(others)}), so it mixes "
                f"both runs' rows and gets no _SUCCESS: merge this run again to a prefix of its "
                f"own (`fanout merge {self._state.run_id} --out s3://…/`)"
            )
        marker = where.child("_SUCCESS")
        key = self._template.output.kms_key_arn
        await self._aws.s3.put_object(marker.bucket, marker.key, b"", Encryption(key))
        claim = where.as_prefix().child(dataset_claim(self._state.run_id))
        await self._aws.s3.delete_objects(claim.bucket, [claim.key])

    def reconcile(self, run_dir: Path) -> Reconciliation:
        """The run's totals, checked against prepare's counts of the input."""
        from .merge import Reconciliation

        if self._order is not None:
            self._order.check_written()
        totals = Reconciliation.of(self.stats.values())
        counted = RunState.replay(read_events(run_dir)).input_lines()
        if counted is None:
            raise MergeError("the run is not fully prepared, so it cannot be reconciled")
        totals.check(**counted)
        return totals


class _Mirror:
    """Copies the journal to S3 every `MIRROR_SECONDS` while it grows, and once at the end."""

    def __init__(
        self,
        path: Path,
        aws: Aws,
        uri: S3Uri,
        encryption: Any,
        report: Callable[[str], None] | None,
    ) -> None:
        self._path = path
        self._aws = aws
        self._uri = uri
        self._encryption = encryption
        self._report = report or (lambda message: None)
        self._sent = -1
        self._warned = ""  # the last warning given, so a failure that lasts warns once

    async def run(self) -> None:
        while True:
            await self.flush()
            await anyio.sleep(MIRROR_SECONDS)

    async def flush(self) -> None:
        """Copy the journal if it grew; a failure is a warning (once while it lasts), never an
        error: the local journal is the one that counts. Not cancelled part way (a run being
        stopped still mirrors its last events), but given up after `MIRROR_DEADLINE` seconds:
        S3 not answering must not hold a stopping run for botocore's retries (minutes)."""
        failure = ""
        with anyio.move_on_after(MIRROR_DEADLINE, shield=True) as scope:
            try:
                data = await anyio.Path(self._path).read_bytes()
                if len(data) == self._sent:
                    return
                await self._aws.s3.put_object(
                    self._uri.bucket, self._uri.key, data, self._encryption
                )
            except (FanoutError, OSError) as exc:
                failure = str(exc)
        if scope.cancelled_caught:
            failure = f"S3 did not answer within {MIRROR_DEADLINE:g} s"
        if failure:
            warning = f"warning: could not mirror the journal to {self._uri}: {failure}"
            if warning != self._warned:
                self._report(warning)
            self._warned = warning
            return
        self._sent, self._warned = len(data), ""


def _mirror_of(
    state: RunState, path: Path, aws: Aws, report: Callable[[str], None] | None
) -> _Mirror:
    """The S3 mirror of a submitted run's journal at `path`: `<job-output path><run>/_fanout/`,
    encrypted with the output's key, or the input's."""
    from .aws import Encryption

    assert state.submit is not None
    template = JobTemplate(state.submit["request"])
    key = template.output.kms_key_arn or _job_input_of(state).kms_key_arn
    uri = template.output_base(state.run_id).child(MIRROR_KEY)
    return _Mirror(path, aws, uri, Encryption(key), report)


async def fetch_journal(aws: Aws, output_path: str, run_id: str) -> bytes:
    """The mirrored journal of a run from `<job-output path><run>/_fanout/journal.jsonl`."""
    uri = run_prefix(output_path, run_id, "--job-output").child(MIRROR_KEY)
    chunks = [chunk async for chunk in aws.s3.read_chunks(uri.bucket, uri.key, 1 << 20)]
    return b"".join(chunks)


async def load_state(
    run_dir: Path, aws: Aws | None = None, job_output: str | None = None
) -> RunState:
    """A run's state from its local journal, or from the S3 mirror when `job_output` is given
    (whichever has more events: the run may have gone on elsewhere)."""
    local: list[dict[str, Any]] = []
    if (run_dir / JOURNAL_NAME).exists():
        local = read_events(run_dir)
    if job_output is None or aws is None:
        if not local:
            read_events(run_dir)  # raises the "no run journal" error
        return RunState.replay(local, str(run_dir / JOURNAL_NAME))
    remote = parse_events(await fetch_journal(aws, job_output, run_dir.name), "the S3 journal")
    events = remote if len(remote) > len(local) else local
    return RunState.replay(events, str(run_dir / JOURNAL_NAME))


async def adopt_remote_journal(run_dir: Path, aws: Aws, job_output: str) -> None:
    """Copy the S3 journal into `run_dir` when it has more than the local one (or there is
    none), so `resume` continues from the latest state on any machine."""
    local = read_events(run_dir) if (run_dir / JOURNAL_NAME).exists() else []
    data = await fetch_journal(aws, job_output, run_dir.name)
    if len(parse_events(data, "the S3 journal")) > len(local):
        private_dir(run_dir)
        write_private(run_dir / JOURNAL_NAME, data if data.endswith(b"\n") else data + b"\n")


async def retry(
    run_dir: Path,
    aws: Aws,
    report: Callable[[str], None] | None = None,
    *,
    role_arn: str | None = None,
    missing_only: bool = False,
    overrides: dict[str, Any] | None = None,
) -> RunOutcome | None:
    """Send the run's errored and missing IDs again as a run of their own (`<run>-rN`), then
    append its results to the run's result file. None if there is nothing to retry.
    `role_arn` replaces the run's service role for the retry's jobs; `overrides` its
    `poll_interval` and `job_timeout` (as `resume` takes them). With `missing_only`, the
    errored IDs are not sent again (an error such as an item not in the training data comes
    back the same): they stay in errors.jsonl, and in the counts.

    A retry that was interrupted (its child run not yet appended) is finished first, not
    started again: its child is resumed, and its results appended once (`retry-combining`
    notes the result's size before, so a crash between appending and journalling it does
    not append them twice)."""
    from . import retry as retrying
    from .merge import Reconciliation

    read_events(run_dir)  # no such run: say so, and create nothing
    async with Journal.open(run_dir) as journal:  # the run's lock: one retry of it at a time
        events = read_events(run_dir)
        state = RunState.replay(events, str(run_dir / JOURNAL_NAME))
        retrying.check_retryable(state, run_dir)
        assert state.merge is not None and state.merged is not None and state.submit is not None
        mirror = _mirror_of(state, journal.path, aws, report)  # `status --job-output` reads it
        out = Path(state.merged["out"])
        recorded = MergeSettings(**state.merge["settings"])
        fmt = dataclasses.replace(recorded, out=str(out)).result_format
        unfinished = retrying.unfinished(events)
        if unfinished is not None and bool(unfinished.get("missing_only")) != missing_only:
            begun_as = "with" if unfinished.get("missing_only") else "without"
            raise ConfigError(
                f"retry {unfinished['child']} of run {state.run_id} was started {begun_as} "
                "--missing-only: finish it the same way "
                f"(`{retrying.finish_command(state.run_id, unfinished)}`), then retry again as "
                "you like"
            )
        child = unfinished["child"] if unfinished else retrying.child_run_id(state, run_dir.parent)
        child_dir = run_dir.parent / child
        begun = unfinished is not None and retrying.begun(child_dir)
        kept = retrying.kept_errors(run_dir, child) if missing_only else None
        request = dict(state.submit["request"])
        if role_arn is not None:
            request["roleArn"] = await _checked_role(aws, role_arn)
        submitted_child = RunState.replay(read_events(child_dir)).submit if begun else None
        if submitted_child is not None:
            if role_arn is not None and submitted_child["request"].get("roleArn") != role_arn:
                raise ConfigError(
                    f"retry {child} of run {state.run_id} was started with role "
                    f"{submitted_child['request'].get('roleArn')} and has jobs already: finish "
                    f"it with `fanout retry {state.run_id}` (no --role-arn), then retry again "
                    "with the new role for what still fails"
                )
            outcome = await resume(child_dir, aws, overrides, report)
        else:
            ids_path = run_dir / f"retry-{child}.jsonl"
            if not begun:
                ids = retrying.retry_ids(run_dir, errors=not missing_only)
                if not ids:
                    return None
                retrying.write_ids(ids_path, ids, InputKind(state.settings["source"]["kind"]))
                if kept is not None and unfinished is None:
                    retrying.keep_errors(run_dir, kept)
            parent = _settings_from_record(state, run_dir.parent, str(ids_path))
            settings = dataclasses.replace(
                parent,
                run_id=child,
                ids=str(ids_path),
                source=dataclasses.replace(parent.source, format="jsonl", id_column=None),
            )
            child_out = settings.run_dir / ("results" + "".join(out.suffixes[-2:]))
            merge = dataclasses.replace(recorded, out=str(child_out), overwrite=True, fmt=fmt)
            if unfinished is None:
                await journal.append(
                    "retry-started", child=child, ids=len(ids), missing_only=missing_only
                )
                await mirror.flush()
            if not begun:
                await begin(settings, aws)
            given = {k: v for k, v in (overrides or {}).items() if v is not None}
            submitted = SubmitSettings(**{**state.submit["submit"], **given})
            outcome = await submit(settings.run_dir, request, submitted, aws, report, merge)
        finished = RunState.replay(read_events(child_dir)).merged
        if finished is None:
            return outcome
        child_out = Path(finished["out"])
        combining = retrying.combining(read_events(run_dir), child)
        size = (await anyio.Path(out).stat()).st_size
        if combining is None or size == combining:
            if combining is None:
                await journal.append("retry-combining", child=child, size=size)
            try:
                await anyio.to_thread.run_sync(retrying.combine, out, child_out, fmt)
            except MergeError as exc:
                again = retrying.finish_command(state.run_id, {"missing_only": missing_only})
                message = f"{exc}. Put that right, then finish the retry: `{again}`"
                raise MergeError(message) from exc
        retrying.replace_reports(run_dir, child_dir, kept)
        counts = outcome.merged or Reconciliation(**finished["counts"])
        kept_errors = retrying.error_lines(kept) if kept is not None else 0
        # The errors not sent again are still the run's: its journal counts them so.
        run_counts = dataclasses.replace(counts, errors=counts.errors + kept_errors)
        await journal.append("retried", child=child, counts=asdict(run_counts))
        await mirror.flush()
        earlier = int(state.merged.get("counts", {}).get("results", 0)) + sum(
            int(event["counts"].get("results", 0))
            for event in events
            if event.get("event") == "retried" and event.get("child") != child
        )
        return dataclasses.replace(
            outcome,
            merged=counts,
            result=str(out),
            earlier_results=earlier,
            reports_dir=run_dir,
            kept_errors=kept_errors,
        )
