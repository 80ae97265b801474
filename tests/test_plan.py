"""The planner: fewest jobs the limits allow, split to fill the quota only when it pays."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.config import Limits, Timing
from fanout.errors import ConfigError
from fanout.plan import InputEstimate, Plan, make_plan
from fanout.records import RecordBatch
from fanout.shard import PartFile, ShardSealed, cut_shards

LIMITS = Limits()
TIMING = Timing()


def cut_counts(
    lines: list[bytes], plan: Plan, limits: Limits, file_records: int
) -> tuple[int, int]:
    """The job shards and part files `cut_shards` makes of `lines` with the plan's layout."""
    batch = RecordBatch(b"".join(lines), np.cumsum([len(line) for line in lines], dtype=np.int64))

    async def batches() -> AsyncIterator[RecordBatch]:
        yield batch

    async def count() -> tuple[int, int]:
        layout = plan.layout(limits, file_records)
        items = [item async for item in cut_shards(batches(), layout)]
        shards = sum(isinstance(item, ShardSealed) for item in items)
        return shards, sum(isinstance(item, PartFile) for item in items)

    return anyio.run(count)


def test_small_input_is_one_job() -> None:
    """An input far under every limit is one job, and the plan says why."""
    plan = make_plan(
        InputEstimate(1000, 20_000, exact=True, how="counted"), LIMITS, TIMING, 50_000_000
    )
    assert plan.shards == 1
    assert plan.waves == 1
    assert plan.parts == 1
    assert "one job" in plan.reason


def test_large_input_fills_the_quota_when_it_saves_time() -> None:
    """3 GB needs 3 jobs; 5 fill the quota and finish sooner, so the plan makes 5."""
    estimate = InputEstimate(60_000_000, 3_000_000_000, exact=True, how="counted")
    plan = make_plan(estimate, LIMITS, TIMING, 50_000_000)
    assert plan.minimum_shards == 3
    assert plan.shards == 5
    assert plan.shard_bytes == 600_000_000
    assert plan.waves == 1
    assert "fill the quota" in plan.reason


def test_no_split_when_the_saving_is_negligible() -> None:
    """A few thousand records over two jobs' worth of bytes stay at the minimum."""
    limits = Limits(max_job_bytes=1000, part_bytes=500)
    plan = make_plan(InputEstimate(60, 1500, exact=True, how="counted"), limits, TIMING, 50_000_000)
    assert plan.shards == plan.minimum_shards == 2
    assert "save under" in plan.reason


def test_file_limit_forces_more_jobs() -> None:
    """With tiny parts, the 1000-files-per-job limit sets the number of jobs: a 100,000-byte
    part holds 1666 whole 60-byte records, so 3002 parts at least, 4 jobs of 751 parts."""
    limits = Limits(part_bytes=100_000, max_concurrent_jobs=1)
    estimate = InputEstimate(5_000_000, 300_000_000, exact=True, how="counted")
    plan = make_plan(estimate, limits, TIMING, 50_000_000)
    assert plan.minimum_shards == 4
    assert plan.shards == 4
    assert plan.parts == 3004


def test_unknown_size_fills_jobs_to_the_limit() -> None:
    """stdin has no size: jobs are filled up to the per-job limit."""
    plan = make_plan(
        InputEstimate(0, 0, exact=False, how="input size unknown (stdin or a pipe)"),
        LIMITS,
        TIMING,
        50_000_000,
    )
    assert plan.shard_bytes == LIMITS.max_job_bytes
    assert "unknown" in plan.reason


def test_estimates_leave_slack() -> None:
    """An extrapolated size aims each shard a little high, so an underestimate adds no shard."""
    estimate = InputEstimate(60_000_000, 3_000_000_000, exact=False, how="extrapolated")
    plan = make_plan(estimate, LIMITS, TIMING, 50_000_000)
    assert plan.shard_bytes > 600_000_000
    assert plan.shard_bytes <= LIMITS.max_job_bytes


def test_an_input_without_ids_plans_no_job() -> None:
    """Counted and empty (nothing, or blank lines and rejects only): no job, no part, no wave,
    no time, and the plan says so rather than promise a 20-minute job."""
    plan = make_plan(InputEstimate(0, 0, exact=True, how="counted"), LIMITS, TIMING, 50_000_000)
    assert (plan.shards, plan.parts, plan.waves, plan.minutes) == (0, 0, 0, 0.0)
    assert "no IDs" in plan.reason
    assert plan.layout(LIMITS, 50_000_000).shard_bytes == LIMITS.max_job_bytes


def test_a_job_limit_below_one_record_is_refused_as_prepare_would() -> None:
    """`--max-job-bytes` under a record's size: the plan refuses it (a ConfigError saying what
    to raise) instead of planning a job per record that prepare would then refuse."""
    estimate = InputEstimate(1000, 19_000, exact=True, how="counted")
    with pytest.raises(ConfigError, match=r"--max-job-bytes 10 is less than one record.*19 bytes"):
        make_plan(estimate, Limits(max_job_bytes=10), TIMING, 50_000_000)
    assert make_plan(estimate, Limits(max_job_bytes=19), TIMING, 50_000_000).shards == 1000


@pytest.mark.parametrize(
    ("limits", "file_records", "shards", "parts"),
    [
        (Limits(max_job_files=2, part_bytes=100), 50_000_000, 25, 50),
        (Limits(max_job_bytes=1000, part_bytes=100), 3, 5, 70),
    ],
)
def test_plan_counts_whole_records_per_part(
    limits: Limits, file_records: int, shards: int, parts: int
) -> None:
    """A 100-byte part holds four 23-byte records (or the records per file): the plan's shards
    and parts are the ones the cut makes."""
    lines = [b'{"userId":"user%05d"}\n' % n for n in range(1, 201)]
    estimate = InputEstimate(200, sum(map(len, lines)), exact=True, how="counted")
    plan = make_plan(estimate, limits, TIMING, file_records)
    assert (plan.shards, plan.parts) == (shards, parts)
    assert plan.minimum_shards == shards
    assert cut_counts(lines, plan, limits, file_records) == (shards, parts)


def test_the_plan_says_when_records_not_bytes_fill_a_part() -> None:
    """THEME_GENERATION's 100 records per file (or --max-file-records) fill parts long before
    their bytes: the plan keeps that limit, and `fanout plan` prints it beside the bytes."""
    estimate = InputEstimate(1000, 17_000, exact=True, how="counted")
    themed = make_plan(estimate, LIMITS, TIMING, 100)
    assert (themed.parts, themed.file_records) == (10, 100)
    assert make_plan(estimate, LIMITS, TIMING, 50_000_000).file_records == 0


@pytest.mark.parametrize(
    ("args", "part_files", "per_shard"),
    [
        ([], "1 of ≤ 16,777,216 bytes", "about 16,890"),
        (
            ["--batch-inference-job-mode", "THEME_GENERATION", "--max-file-records", "500"],
            "10 of ≤ 16,777,216 bytes and ≤ 100 records (the limit per file of these jobs)",
            "about 16,890",
        ),
        (["--part-bytes", "1"], "1000 of ≤ 1 bytes (one record each: a record is larger)", None),
    ],
)
def test_fanout_plan_prints_what_fills_a_part(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    part_files: str,
    per_shard: str | None,
) -> None:
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{n}\n" for n in range(1000)))
    assert main(["plan", "--ids", str(ids), "--input-kind", "itemId", *args]) == 0
    rows = dict(
        re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines()
    )
    assert rows["part files"] == part_files
    if per_shard is not None:
        assert rows["bytes per shard"] == per_shard


def test_bytes_per_shard_never_exceed_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    """An estimate's slack aims shards high; the plan prints at most the input's bytes."""
    from fanout.cli import _print_plan

    plan = make_plan(InputEstimate(1000, 17_000, exact=False, how="sampled"), LIMITS, TIMING, 100)
    assert plan.shard_bytes > 17_000
    _print_plan(plan, "ids.txt")
    assert "bytes per shard  about 17,000\n" in capsys.readouterr().out


def test_filling_the_quota_counts_the_shards_the_cut_makes() -> None:
    """Nine records asked into six shards make five (two records reach each target): the plan
    says five, and times five."""
    limits = Limits(max_job_bytes=30, max_concurrent_jobs=6)
    timing = Timing(job_overhead_minutes=0, records_per_minute=1)
    lines = [b"123456789\n"] * 9
    plan = make_plan(InputEstimate(9, 90, exact=True, how="counted"), limits, timing, 50_000_000)
    assert plan.minimum_shards == 3
    assert (plan.shards, plan.parts) == (5, 5)
    assert "5 fill the quota of 6" in plan.reason
    assert cut_counts(lines, plan, limits, 50_000_000) == (5, 5)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 64),
    records=st.integers(1, 400),
    job_bytes=st.integers(0, 4000),
    job_files=st.integers(1, 8),
    part_bytes=st.integers(1, 400),
    file_records=st.integers(1, 40),
    quota=st.integers(1, 6),
    overhead=st.sampled_from([0.0, 1.0, 20.0]),
    per_minute=st.sampled_from([1.0, 250_000.0]),
    exact=st.booleans(),
)
def test_plan_matches_the_cut_of_equal_records(
    size: int,
    records: int,
    job_bytes: int,
    job_files: int,
    part_bytes: int,
    file_records: int,
    quota: int,
    overhead: float,
    per_minute: float,
    exact: bool,
) -> None:
    """For records of one size, the plan's shards and parts are exactly what `cut_shards` makes
    with the plan's layout, whichever limit binds and whether or not it fills the quota."""
    limits = Limits(
        max_job_bytes=size + job_bytes,
        max_job_files=job_files,
        part_bytes=part_bytes,
        max_concurrent_jobs=quota,
    )
    timing = Timing(job_overhead_minutes=overhead, records_per_minute=per_minute)
    lines = [b"x" * (size - 1) + b"\n"] * records
    estimate = InputEstimate(records, size * records, exact=exact, how="counted")
    plan = make_plan(estimate, limits, timing, file_records)
    assert cut_counts(lines, plan, limits, file_records) == (plan.shards, plan.parts)
    assert plan.minimum_shards <= plan.shards
    assert plan.waves == -(-plan.shards // quota)


@pytest.mark.parametrize(
    ("records", "per_job", "seed"), [(100_000, 10_000, 0), (50_000, 5_000, 1), (9_000, 900, 2)]
)
def test_ids_of_varied_length_are_cut_into_the_shards_planned(
    records: int, per_job: int, seed: int
) -> None:
    """IDs of different lengths, shuffled, counted exactly, where a job's records are what
    limits it (one file of `per_job` records): the cut makes the shards planned. Cut by bytes
    alone, a shard of longer IDs closed a few records short, and those few made one shard
    (and a wave) more: 100,000 shuffled numbers at 10,000 a job made 11, not 10."""
    rng = np.random.default_rng(seed)
    lines = [b'{"userId":"%d"}\n' % value for value in rng.permutation(records) + 1]
    limits = Limits(max_job_files=1)
    estimate = InputEstimate(records, sum(map(len, lines)), exact=True, how="counted")
    plan = make_plan(estimate, limits, TIMING, per_job)
    assert plan.shards == records // per_job
    assert cut_counts(lines, plan, limits, per_job)[0] == plan.shards
