"""The planner: fewest jobs the limits allow, split to fill the quota only when it pays."""

from __future__ import annotations

from fanout.config import Limits, Timing
from fanout.plan import InputEstimate, make_plan

LIMITS = Limits()
TIMING = Timing()


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
    """With tiny parts, the 1000-files-per-job limit sets the number of jobs."""
    limits = Limits(part_bytes=100_000, max_concurrent_jobs=1)
    estimate = InputEstimate(5_000_000, 300_000_000, exact=True, how="counted")
    plan = make_plan(estimate, limits, TIMING, 50_000_000)
    assert plan.minimum_shards == 3
    assert plan.shards == 3


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
