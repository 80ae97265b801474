"""The planner: how many job shards, how big, how many waves, how long.

Fixed overhead per job is large (13–27 minutes even for 3 users, reference §6) and the account
runs at most Q jobs at once. So the plan makes as few jobs as the limits allow, and splits into
more only to fill a wave of Q jobs when that shortens the run by a worthwhile margin (at least
`MIN_SAVING` of the run and a minute). The estimate of run time is
`waves × (overhead + records per job / records per minute)`, from `config.Timing`.

The shards and part files it promises are what `shard.cut_shards` will make of the input
(`_cut`): parts and jobs hold whole records, so a part holds `part_bytes // record size` records
(at least one, at most the records per file), and a job at most `max_job_files` such parts. The
input is known by its record count and bytes only, so the model takes every record to be of the
same size: exact when they are, and (the size rounded up for packing) a little high otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .config import Limits, Timing
from .errors import ConfigError
from .shard import ShardLayout

MIN_SAVING = 0.05  # split beyond the minimum only if the run gets at least 5% shorter
ESTIMATE_SLACK = 1.03  # inexact sizes: aim 3% high so an underestimate adds no extra shard


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """Records and encoded bytes of an input: counted exactly, or extrapolated from its size."""

    records: int
    nbytes: int
    exact: bool
    # e.g. "counted", "extrapolated from the first 4,194,330 of 1,200,000,000 bytes"
    how: str
    skipped: tuple[str, ...] = ()  # objects under a prefix or folder left out (`source.hidden`)

    @property
    def known(self) -> bool:
        return self.records > 0 or self.exact


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's decision and its explanation (what `fanout plan` prints)."""

    records: int
    nbytes: int
    exact: bool
    estimate_how: str
    shards: int
    shard_bytes: int
    part_bytes: int
    parts: int
    quota: int
    waves: int
    minutes: float
    minimum_shards: int
    reason: str
    skipped: tuple[str, ...] = ()  # the input's objects left out (`InputEstimate.skipped`)
    # The shards are cut by records as well as bytes (`ShardLayout.records`): the records were
    # counted exactly. False in journals of runs planned before it was (they are cut again on
    # resume as they were first cut).
    by_records: bool = False
    # Records per part file when they, not `part_bytes`, fill a part (THEME_GENERATION's 100,
    # a segment job's, or --max-file-records); 0 when bytes do.
    file_records: int = 0

    def __post_init__(self) -> None:  # a list, when read back from the run journal
        object.__setattr__(self, "skipped", tuple(self.skipped))

    def layout(self, limits: Limits, file_records: int) -> ShardLayout:
        return ShardLayout(
            shard_bytes=self.shard_bytes,
            max_job_bytes=limits.max_job_bytes,
            part_bytes=self.part_bytes,
            max_job_files=limits.max_job_files,
            max_file_records=file_records,
            shards=self.shards,
            records=self.records if self.by_records else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _minutes(shards: int, records: int, quota: int, timing: Timing) -> float:
    waves = math.ceil(shards / quota)
    per_job = math.ceil(records / shards) if shards else 0
    return waves * (timing.job_overhead_minutes + per_job / timing.records_per_minute)


def _cut(
    records: int, nbytes: int, shard_bytes: int, part_bytes: int, limits: Limits, file_records: int
) -> tuple[int, int]:
    """The job shards and part files `cut_shards` makes of `records` records of `nbytes` bytes
    with a target of `shard_bytes` per shard, taking the records to be of equal size.

    A part is full at the record that would take it over `part_bytes` (one record at least) or
    at `file_records`; a shard closes at the first record that brings it to its target, before
    one that would take it over the job limit, or when its last allowed file is full. Every
    shard but the last holds the same records, in parts of the same records but its last.
    """
    nbytes = max(nbytes, 1)
    size = -(-nbytes // records)  # a record's bytes, rounded up: parts and jobs hold whole ones
    per_part = max(1, min(part_bytes // size, file_records))
    per_shard = min(
        max(1, -(-shard_bytes * records // nbytes)),  # records that reach the target
        max(1, limits.max_job_bytes // size),
        limits.max_job_files * per_part,
    )
    shards = -(-records // per_shard)
    last = records - (shards - 1) * per_shard
    parts = (shards - 1) * -(-per_shard // per_part) + -(-last // per_part)
    return shards, parts


def _no_jobs(estimate: InputEstimate, limits: Limits, part_bytes: int, reason: str) -> Plan:
    """No job planned (yet): the input's size is unknown, or it holds nothing to send. A run
    still cuts what it finds into jobs filled up to the per-job limit."""
    return Plan(
        records=0,
        nbytes=0,
        exact=estimate.exact,
        estimate_how=estimate.how,
        shards=0,
        shard_bytes=limits.max_job_bytes,
        part_bytes=part_bytes,
        parts=0,
        quota=limits.max_concurrent_jobs,
        waves=0,
        minutes=0.0,
        minimum_shards=0,
        reason=reason,
        skipped=estimate.skipped,
    )


def make_plan(estimate: InputEstimate, limits: Limits, timing: Timing, file_records: int) -> Plan:
    """Choose the number of job shards for the input (see the module docstring)."""
    quota = limits.max_concurrent_jobs
    part_bytes = min(limits.part_bytes, limits.max_job_bytes)
    if not estimate.known:
        # Unknown size (stdin): fill each job to the limit, in input order.
        reason = (
            "input size unknown: each job is filled up to the per-job limit "
            f"({limits.max_job_bytes} bytes, {limits.max_job_files} files)"
        )
        return _no_jobs(estimate, limits, part_bytes, reason)
    records, nbytes = estimate.records, estimate.nbytes
    if not records:  # counted: nothing, or blank lines and rejects only
        reason = "the input holds no IDs (blank lines and rejects only, or nothing): no job to run"
        return _no_jobs(estimate, limits, part_bytes, reason)
    if (size := -(-nbytes // records)) > limits.max_job_bytes:
        raise ConfigError(
            f"--max-job-bytes {limits.max_job_bytes} is less than one record: the input's "
            f"records are {size} bytes on average, and a job holds whole ones; raise it (the "
            "service takes up to 1 GB a job)"
        )
    slack = 1.0 if estimate.exact else ESTIMATE_SLACK

    def target(shards: int) -> int:
        return min(limits.max_job_bytes, max(1, math.ceil(nbytes * slack / shards)))

    def cut(shard_bytes: int) -> tuple[int, int]:
        return _cut(records, nbytes, shard_bytes, part_bytes, limits, file_records)

    # The fewest shards: each filled up to the job limit (a target below it only adds shards).
    minimum, _ = cut(limits.max_job_bytes)
    filled = min(max(records, 1), quota * math.ceil(minimum / quota))
    # Whole records per shard can leave the cut with fewer shards than asked for: count those.
    filled_shards, filled_parts = cut(target(filled))
    base_minutes = _minutes(minimum, records, quota, timing)
    filled_minutes = _minutes(filled_shards, records, quota, timing)
    saving = base_minutes - filled_minutes
    if filled_shards > minimum and saving >= max(1.0, MIN_SAVING * base_minutes):
        shards, shard_bytes, parts = filled_shards, target(filled), filled_parts
        reason = (
            f"{minimum} job(s) would fit the limits; {shards} fill the quota of {quota} and "
            f"finish about {saving:.0f} min sooner"
        )
    else:
        shard_bytes = target(minimum)
        shards, parts = cut(shard_bytes)  # `minimum` again: the target fits that many
        if minimum == 1:
            reason = "one job holds the whole input"
        else:
            reason = (
                f"{minimum} jobs: the fewest the per-job limits allow "
                f"({limits.max_job_bytes} bytes, {limits.max_job_files} files)"
            )
        if filled > minimum:
            reason += f"; splitting to fill the quota of {quota} would save under a minute or 5%"
    return Plan(
        by_records=estimate.exact,
        records=records,
        nbytes=nbytes,
        exact=estimate.exact,
        estimate_how=estimate.how,
        shards=shards,
        shard_bytes=shard_bytes,
        part_bytes=part_bytes,
        parts=parts,
        quota=quota,
        waves=math.ceil(shards / quota),
        minutes=_minutes(shards, records, quota, timing),
        minimum_shards=minimum,
        reason=reason,
        skipped=estimate.skipped,
        file_records=file_records if file_records < part_bytes // size else 0,
    )
