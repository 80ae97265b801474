"""The submit stage against a fake Personalize driven by a fake clock: no real sleeping."""

from __future__ import annotations

import asyncio
import heapq
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest

from fanout.errors import ConfigError, InputError, JobExists, RetryLater, SubmitError
from fanout.records import InputKind, JobSummary
from fanout.state import RunState, ShardInfo
from fanout.submit import (
    SubmitOutcome,
    SubmitSettings,
    Submitter,
    TokenBucket,
    check_job_names,
    classify_failure,
    job_name,
)

RUN = "20261127-120000-ab12"
T = TypeVar("T")


class FakeClock:
    """Virtual time: it jumps to the next deadline whenever every task is waiting.

    Run `drive()` in the same task group as the code under test (`driven()` does it).
    """

    def __init__(self) -> None:
        self.t = 1_800_000_000.0
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    def elapsed(self) -> float:
        return self.t

    def _timer(self, seconds: float) -> tuple[float, int, anyio.Event]:
        self._seq += 1
        timer = (self.t + max(0.0, seconds), self._seq, anyio.Event())
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        await self._timer(seconds)[2].wait()

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        timer = self._timer(seconds)
        try:
            async with anyio.create_task_group() as group:

                async def until(done: anyio.Event) -> None:
                    await done.wait()
                    group.cancel_scope.cancel()

                group.start_soon(until, event)
                group.start_soon(until, timer[2])
        finally:
            if timer in self._timers:  # woken early: the deadline no longer matters
                self._timers.remove(timer)
                heapq.heapify(self._timers)

    async def drive(self) -> None:
        while True:
            await _all_tasks_waiting()
            if not self._timers:
                continue
            deadline, _, event = heapq.heappop(self._timers)
            self.t = max(self.t, deadline)
            event.set()


async def _all_tasks_waiting() -> None:
    """Like `anyio.wait_all_tasks_blocked`, without its 0.1 s naps (asyncio only)."""
    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        waiters = [getattr(t, "_fut_waiter", None) for t in asyncio.all_tasks() if t is not this]
        if all(w is not None and not w.done() for w in waiters):
            return
        await asyncio.sleep(0.0002)


async def driven(clock: FakeClock, work: Callable[[], Awaitable[T]]) -> T:
    """`await work()` while `clock` drives virtual time."""
    async with anyio.create_task_group() as group:
        group.start_soon(clock.drive)
        result = await work()
        group.cancel_scope.cancel()
    return result


@dataclass
class FakeJob:
    name: str
    arn: str
    created: float
    fail: str | None = None
    runs: float = 100.0
    gone: bool = False


class FakeJobs:
    """A Personalize account: jobs go PENDING (10 s) → IN_PROGRESS (`runs` s) → ACTIVE/FAILED."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        quota: int = 5,
        page_size: int = 3,
        fail: Callable[[str], str | None] | None = None,
        throttle: Callable[[str], bool] | None = None,
        hide: Callable[[str], bool] | None = None,
    ) -> None:
        self.clock = clock
        self.quota = quota
        self.page_size = page_size
        self.fail = fail or (lambda name: None)
        self.throttle = throttle or (lambda call: False)
        self.hide = hide or (lambda name: False)
        self.jobs: dict[str, FakeJob] = {}
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []

    def status(self, job: FakeJob) -> str:
        age = self.clock.now() - job.created
        if age < 10:
            return "CREATE PENDING"
        if age < 10 + job.runs:
            return "CREATE IN_PROGRESS"
        return "CREATE FAILED" if job.fail else "ACTIVE"

    def in_flight(self, at: float) -> int:
        return sum(1 for j in self.jobs.values() if j.created <= at < j.created + 10 + j.runs)

    def max_in_flight(self) -> int:
        return max((self.in_flight(j.created) for j in self.jobs.values()), default=0)

    def add(self, name: str, *, runs: float = 100.0, fail: str | None = None) -> FakeJob:
        arn = f"arn:aws:personalize:us-east-1:123456789012:batch-inference-job/{name}"
        job = FakeJob(name, arn, self.clock.now(), fail, runs)
        self.jobs[job.arn] = job
        return job

    def summary(self, job: FakeJob) -> JobSummary:
        status = self.status(job)
        reason = job.fail if status == "CREATE FAILED" else None
        return JobSummary(job.arn, job.name, status, reason, job.created, self.clock.now())

    async def create_job(self, request: dict[str, Any]) -> str:
        self.calls["create"] += 1
        if self.throttle("create"):
            raise RetryLater("LimitExceededException: rate")
        name = request["jobName"]
        if any(j.name == name for j in self.jobs.values()):
            raise JobExists(f"Batch inference job with name {name} already exists.")
        if self.in_flight(self.clock.now()) >= self.quota:
            raise RetryLater(
                f"More than {self.quota} resources with PENDING or IN_PROGRESS status."
            )
        self.requests.append(request)
        return self.add(name, fail=self.fail(name)).arn

    async def list_jobs_page(self, token: str | None) -> tuple[list[JobSummary], str | None]:
        self.calls["list"] += 1
        if self.throttle("list"):
            raise RetryLater("LimitExceededException: rate")
        visible = [j for j in self.jobs.values() if not j.gone and not self.hide(j.name)]
        visible.sort(key=lambda j: -j.created)
        start = int(token or 0)
        page = visible[start : start + self.page_size]
        more = start + self.page_size < len(visible)
        return [self.summary(j) for j in page], str(start + self.page_size) if more else None

    async def describe_job(self, arn: str) -> JobSummary | None:
        self.calls["describe"] += 1
        job = self.jobs.get(arn)
        return None if job is None or job.gone else self.summary(job)


class MemoryLog:
    """The journal's interface, in memory: no worker threads for the virtual clock to outrun."""

    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.events = events if events is not None else []

    async def append(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"t": 0.0, "event": event, **fields}
        self.events.append(record)
        return record


def shards(count: int) -> list[ShardInfo]:
    return [ShardInfo(i, 1, 100, 1000, f"s3://b/in/{RUN}/shard-{i:05d}/") for i in range(count)]


def request_for(shard: ShardInfo, name: str) -> dict[str, Any]:
    return {"jobName": name, "jobInput": {"s3DataSource": {"path": shard.prefix}}}


async def submit(
    log: MemoryLog,
    service: FakeJobs,
    clock: FakeClock,
    count: int,
    state: RunState | None = None,
    run_started: float | None = None,
    report: Callable[[str], None] | None = None,
    **settings: Any,
) -> tuple[SubmitOutcome, list[dict[str, Any]]]:
    options: dict[str, Any] = {"poll_interval": 5.0, "tps": 100.0, **settings}
    send, receive = anyio.create_memory_object_stream[ShardInfo](count or 1)
    async with send:
        for shard in shards(count):
            await send.send(shard)
    jobs = {s: state.job(s) for s in state.jobs} if state else {}
    submitter = Submitter(
        run_id=RUN,
        service=service,
        journal=log,
        settings=SubmitSettings(**options),
        request_for=request_for,
        clock=clock,
        jobs={s: j for s, j in jobs.items() if j is not None},
        failed={s: e["reason"] for s, e in state.failed.items()} if state else None,
        run_started=run_started,
        report=report,
    )
    outcome = await driven(clock, lambda: submitter.run(receive))
    return outcome, log.events


def created(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "job-created"]


async def test_every_shard_gets_one_job_within_the_quota() -> None:
    clock = FakeClock()
    service = FakeJobs(clock, quota=10)
    outcome, events = await submit(MemoryLog(), service, clock, 8, max_concurrent_jobs=2)
    assert sorted(outcome.active) == list(range(8))
    assert not outcome.failed and not outcome.timed_out
    assert service.max_in_flight() == 2  # fanout's own limit, below the service's 10
    assert service.calls["create"] == 8
    names = [e["name"] for e in created(events)]
    assert names == [job_name("fanout", RUN, i, 1) for i in range(8)]
    assert all(e["adopted"] is False for e in created(events))
    statuses = [e["status"] for e in events if e["event"] == "job-status" and e["shard"] == 0]
    assert statuses == ["CREATE IN_PROGRESS", "ACTIVE"]


async def test_other_peoples_jobs_count_against_the_quota() -> None:
    clock = FakeClock()
    service = FakeJobs(clock, quota=10)
    foreign = service.add("someone-elses-job", runs=300)
    outcome, _ = await submit(MemoryLog(), service, clock, 6, max_concurrent_jobs=2)
    assert len(outcome.active) == 6
    assert service.max_in_flight() == 2
    ours = [j for j in service.jobs.values() if j is not foreign]
    foreign_end = foreign.created + 10 + foreign.runs
    for job in ours:
        if job.created < foreign_end:  # while the other job ran, we had one slot, not two
            assert sum(1 for o in ours if o.created <= job.created < o.created + 110) == 1


class RepeatingJobs(FakeJobs):
    """A listing whose second page repeats the first (pagination is undocumented: a job
    created between two pages can shift the next one, reference §4.3)."""

    async def list_jobs_page(self, token: str | None) -> tuple[list[JobSummary], str | None]:
        page, _ = await super().list_jobs_page(None)
        return page, None if token else "again"


async def test_a_job_listed_twice_counts_once() -> None:
    clock = FakeClock()
    service = RepeatingJobs(clock, quota=10, page_size=100)
    foreign = service.add("someone-elses-job", runs=1000)
    outcome, _ = await submit(MemoryLog(), service, clock, 4, max_concurrent_jobs=3)
    assert len(outcome.active) == 4
    ours = [j for j in service.jobs.values() if j is not foreign]
    # One slot of three is the other job's, however often the listing shows it: two are ours.
    assert max(sum(1 for o in ours if o.created <= j.created < o.created + 110) for j in ours) == 2


async def test_limit_exceeded_means_wait_not_fail() -> None:
    clock = FakeClock()
    service = FakeJobs(clock, quota=2)
    said: list[str] = []
    outcome, _ = await submit(
        MemoryLog(), service, clock, 6, report=said.append, max_concurrent_jobs=5
    )
    assert len(outcome.active) == 6
    assert service.max_in_flight() == 2
    assert service.calls["create"] > 6  # some were refused and retried later
    waits = [line for line in said if "not created yet" in line]
    assert waits and len(waits) == len(set(waits))  # each shard says why it waits once


async def test_throttled_calls_are_retried() -> None:
    clock = FakeClock()
    rng = random.Random(3)
    service = FakeJobs(clock, throttle=lambda call: rng.random() < 0.5)
    outcome, events = await submit(MemoryLog(), service, clock, 5)
    assert len(outcome.active) == 5
    assert len(created(events)) == 5


async def test_transient_failures_are_retried_as_new_attempts() -> None:
    clock = FakeClock()

    def fail(name: str) -> str | None:
        if name.endswith("-00001") or name.endswith("-00002") or name.endswith("-00002-a2"):
            return "Internal server error. Please try again."
        return None

    outcome, events = await submit(MemoryLog(), FakeJobs(clock, fail=fail), clock, 3)
    assert sorted(outcome.active) == [0, 1, 2]
    attempts = {(e["shard"], e["attempt"]) for e in created(events)}
    assert attempts == {(0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)}
    assert job_name("fanout", RUN, 2, 3).endswith("-00002-a3")


async def test_permanent_failure_is_reported_not_retried() -> None:
    clock = FakeClock()
    reason = "Insufficient privileges for the KMS key arn:aws:kms:us-east-1:1:key/x"
    service = FakeJobs(clock, fail=lambda name: reason if name.endswith("-00000") else None)
    outcome, events = await submit(MemoryLog(), service, clock, 2)
    assert list(outcome.active) == [1]
    assert reason in outcome.failed[0] and "permissions" in outcome.failed[0]
    assert next(e for e in events if e["event"] == "shard-failed")["shard"] == 0
    assert len(created(events)) == 2


async def test_retries_run_out() -> None:
    clock = FakeClock()
    service = FakeJobs(clock, fail=lambda name: "Internal error")
    outcome, events = await submit(MemoryLog(), service, clock, 1, job_retries=1)
    assert (
        "failed 2 times; `fanout retry` sends its IDs again (once the run is merged to a "
        in (outcome.failed[0])
    )
    assert [e["attempt"] for e in created(events)] == [1, 2]


async def test_a_job_created_before_a_crash_is_adopted() -> None:
    clock = FakeClock()
    service = FakeJobs(clock)
    service.add(job_name("fanout", RUN, 0, 1))  # created, then the process died
    outcome, events = await submit(MemoryLog(), service, clock, 2)
    assert len(outcome.active) == 2
    assert service.calls["create"] == 1  # only shard 1's
    assert [e["adopted"] for e in created(events)] == [True, False]
    assert len(service.jobs) == 2


@pytest.mark.parametrize("listed", [True, False])
async def test_a_job_of_the_same_name_from_before_the_run_began_is_not_adopted(
    listed: bool,
) -> None:
    """A job under one of the run's names created before the run began (a minute of clock
    skew allowed) is an earlier run's with the same run ID, which read that run's input: the
    run stops with a SubmitError saying so instead of taking its results as its own."""
    clock = FakeClock()
    service = FakeJobs(clock, hide=lambda name: not listed)
    service.add(job_name("fanout", RUN, 0, 1))
    if not listed:  # found after ResourceAlreadyExists, in a listing that shows it
        original = service.list_jobs_page

        async def list_page(token: str | None) -> tuple[list[JobSummary], str | None]:
            service.hide = lambda name: not service.calls["create"]
            return await original(token)

        service.list_jobs_page = list_page  # type: ignore[method-assign]
    started = clock.now() + 3600
    with pytest.raises(BaseExceptionGroup) as raised:
        await submit(MemoryLog(), service, clock, 1, run_started=started)
    assert raised.group_contains(SubmitError, match=r"from before run .* began: .*another --run")
    outcome, events = await submit(MemoryLog(), service, clock, 1, run_started=clock.now())
    assert created(events)[0]["adopted"] is True and list(outcome.active) == [0]


@pytest.mark.parametrize("path", ["same", "other"])
async def test_a_job_of_the_same_name_with_other_options_is_not_adopted(path: str) -> None:
    """A job under one of the run's names is described before it is adopted (a throttled
    Describe is asked again later): one that reads another input (or was made with another
    numResults, solution version…) is not this run's job, and the run stops saying so; one made
    with the run's own options is adopted."""
    clock = FakeClock()
    service = FakeJobs(clock)
    service.add(job_name("fanout", RUN, 0, 1))
    read = shards(1)[0].prefix if path == "same" else "s3://b/in/elsewhere/"
    plain = service.describe_job

    async def describe(arn: str) -> JobSummary | None:
        if service.calls["describe"] == 0:  # throttled once: asked again after a poll
            service.calls["describe"] += 1
            raise RetryLater("LimitExceededException: rate")
        found = await plain(arn)
        return None if found is None else replace(found, options={"jobInput": read})

    service.describe_job = describe  # type: ignore[method-assign]
    if path == "same":
        outcome, events = await submit(MemoryLog(), service, clock, 1)
        assert created(events)[0]["adopted"] is True and list(outcome.active) == [0]
        return
    with pytest.raises(BaseExceptionGroup) as raised:
        await submit(MemoryLog(), service, clock, 1)
    assert raised.group_contains(SubmitError, match=r"with other options .*elsewhere")


async def test_already_exists_adopts_even_when_the_listing_lags() -> None:
    clock = FakeClock()
    hidden = {"on": True}
    service = FakeJobs(clock, hide=lambda name: hidden["on"])
    service.add(job_name("fanout", RUN, 0, 1))

    original = service.list_jobs_page

    async def list_page(token: str | None) -> tuple[list[JobSummary], str | None]:
        if service.calls["create"]:
            hidden["on"] = False
        return await original(token)

    service.list_jobs_page = list_page  # type: ignore[method-assign]
    outcome, events = await submit(MemoryLog(), service, clock, 1)
    assert list(outcome.active) == [0]
    assert len(service.jobs) == 1
    assert created(events)[0]["adopted"] is True


async def test_a_job_that_runs_too_long_is_reported() -> None:
    clock = FakeClock()
    service = FakeJobs(clock)
    service.add("x")  # keeps the clock honest: unrelated
    original = service.add

    def slow_add(name: str, *, runs: float = 100.0, fail: str | None = None) -> FakeJob:
        return original(name, runs=10_000 if name.endswith("-00001") else runs, fail=fail)

    service.add = slow_add  # type: ignore[method-assign]
    outcome, events = await submit(MemoryLog(), service, clock, 2, job_timeout=500)
    assert list(outcome.active) == [0]
    assert list(outcome.timed_out) == [1]
    assert [e["shard"] for e in events if e["event"] == "job-timeout"] == [1]


async def test_a_lost_job_is_resubmitted() -> None:
    clock = FakeClock()
    service = FakeJobs(clock)
    original = service.list_jobs_page

    async def list_page(token: str | None) -> tuple[list[JobSummary], str | None]:
        for job in service.jobs.values():
            if job.name.endswith("-00000") and clock.now() - job.created > 20:
                job.gone = True  # the endpoint forgot it
        return await original(token)

    service.list_jobs_page = list_page  # type: ignore[method-assign]
    outcome, events = await submit(MemoryLog(), service, clock, 1)
    assert list(outcome.active) == [0]
    assert [e["attempt"] for e in created(events)] == [1, 2]
    assert service.calls["describe"] >= 1
    reasons = [e["reason"] for e in events if e["event"] == "job-status" and e["reason"]]
    assert any("gone" in r for r in reasons)


class Crash(Exception):
    pass


async def test_resume_after_a_crash_between_create_and_journal() -> None:
    clock = FakeClock()
    service = FakeJobs(clock, quota=10)
    original = service.create_job

    async def create_then_crash(request: dict[str, Any]) -> str:
        arn = await original(request)
        if len(service.jobs) == 3:
            raise Crash  # the job exists; the journal will never hear of it
        return arn

    service.create_job = create_then_crash  # type: ignore[method-assign]
    log = MemoryLog()
    await log.append("run-started", run_id=RUN, settings={})
    with pytest.raises(BaseExceptionGroup) as raised:
        await submit(log, service, clock, 6, max_concurrent_jobs=3)
    assert raised.group_contains(Crash)
    state = RunState.replay(log.events)
    assert sorted(state.jobs) == [0, 1]

    service.create_job = original  # type: ignore[method-assign]
    outcome, events = await submit(MemoryLog(), service, clock, 6, state=state)
    assert sorted(outcome.active) == list(range(6))
    names = Counter(j.name for j in service.jobs.values())
    assert len(names) == 6 and set(names.values()) == {1}
    adopted = [e["shard"] for e in created(events) if e["adopted"]]
    assert adopted == [2]


async def test_a_shard_arriving_later_is_submitted_at_once() -> None:
    clock = FakeClock()
    service = FakeJobs(clock)
    send, receive = anyio.create_memory_object_stream[ShardInfo](10)
    arrived: dict[int, float] = {}

    async def produce() -> None:
        async with send:
            for shard in shards(3):
                await clock.sleep(37.0)
                arrived[shard.shard] = clock.now()
                await send.send(shard)

    async with anyio.create_task_group() as group:
        group.start_soon(clock.drive)
        group.start_soon(produce)
        submitter = Submitter(
            run_id=RUN,
            service=service,
            journal=MemoryLog(),
            settings=SubmitSettings(poll_interval=30.0, tps=100.0),
            request_for=request_for,
            clock=clock,
        )
        outcome = await submitter.run(receive)
        group.cancel_scope.cancel()
    assert len(outcome.active) == 3
    for job in service.jobs.values():
        shard = int(job.name[-5:])
        assert job.created - arrived[shard] <= 30.0  # at most one poll interval


async def test_token_bucket_spaces_calls() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 2.0, clock)
    start = clock.now()

    async def take() -> None:
        for _ in range(10):
            await bucket.acquire()

    await driven(clock, take)
    assert clock.now() - start == pytest.approx(4.0)  # 2 at once, then one every 0.5 s


class SteppedClock(FakeClock):
    """Virtual time whose time of day is stepped back (NTP, a VM resumed) by `step` seconds."""

    step = 0.0

    def now(self) -> float:
        return self.t - self.step


async def test_a_step_back_of_the_time_of_day_does_not_stall_calls() -> None:
    """The rate limit measures intervals on a clock that only goes forward: with the time of
    day stepped back 300 s, the next call waited 300.5 s (helper-35), now the usual 0.5 s."""
    clock = SteppedClock()
    bucket = TokenBucket(2.0, 1.0, clock)

    async def take() -> float:
        await bucket.acquire()
        clock.step = 300.0
        start = clock.t
        await bucket.acquire()
        return clock.t - start

    assert await driven(clock, take) == pytest.approx(0.5)


def test_job_names_are_checked_before_anything_is_created() -> None:
    check_job_names("fanout", RUN, 100, 3)
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", job_name("nightly_x", RUN, 3, 2))
    with pytest.raises(ConfigError, match=r"too long.*at most"):
        check_job_names("a" * 40, RUN, 10, 3)
    with pytest.raises(ConfigError, match="letters, digits"):
        check_job_names("-bad", RUN, 10, 3)
    with pytest.raises(ConfigError, match="letters, digits"):
        check_job_names("has space", RUN, 10, 3)


@pytest.mark.parametrize(
    ("reason", "transient"),
    [
        ("Internal server error. Please try again.", True),
        ("Service unavailable", True),
        ("Insufficient privileges for the KMS key x", False),
        ("Invalid S3 output path s3://b/in/out/", False),
        ("Input data at s3://b/in/ has 1001 files; the limit for a batch job is 1000.", False),
        ("Input file k has more than 100 records, the limit per file", False),
        ("Access Denied", False),
    ],
)
def test_failure_reasons_are_classified(reason: str, transient: bool) -> None:
    worth, hint = classify_failure(reason)
    assert worth is transient
    # `fanout retry` refuses an unmerged run or a dataset: the hint says what it takes
    assert transient or "`fanout retry` (once the run is merged to a file)" in hint


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="poll-interval"):
        SubmitSettings(poll_interval=0)
    with pytest.raises(ConfigError, match="max-concurrent-jobs"):
        SubmitSettings(max_concurrent_jobs=0)
    with pytest.raises(ConfigError, match="job-timeout"):
        SubmitSettings(job_timeout=-1)


def test_theme_generation_is_refused_outside_its_regions() -> None:
    """THEME_GENERATION runs in us-east-1, us-west-2 and ap-northeast-1 only (reference §3):
    a Similar-Items solution version elsewhere is refused before anything is uploaded."""
    from fanout.aws import SolutionVersionInfo
    from fanout.preflight import check_recipe

    def version(region: str) -> SolutionVersionInfo:
        arn = f"arn:aws:personalize:{region}:111122223333:solution/sims/abc"
        recipe = "arn:aws:personalize:::recipe/aws-similar-items"
        return SolutionVersionInfo(arn, "ACTIVE", recipe, "RELATED_ITEMS")

    assert check_recipe(version("us-west-2"), None, "THEME_GENERATION") is InputKind.ITEM
    with pytest.raises(ConfigError, match="THEME_GENERATION runs only in us-east-1"):
        check_recipe(version("eu-west-1"), None, "THEME_GENERATION")
    assert check_recipe(version("eu-west-1"), None, "BATCH_INFERENCE") is InputKind.ITEM


def test_filter_values_are_checked_against_the_filters_placeholders() -> None:
    """Each value names a placeholder; an INCLUDE clause's need values (unless lines may carry
    their own); an EXCLUDE clause's may be left out."""
    from fanout.preflight import check_filter_values

    arn = "arn:aws:personalize:us-east-1:111122223333:filter/f"
    both = "INCLUDE ItemID WHERE Items.GENRE IN ($GENRE) | EXCLUDE ItemID WHERE Items.ID IN ($SEEN)"
    check_filter_values(arn, both, {"GENRE"}, per_line=False)
    check_filter_values(arn, both, {"GENRE", "SEEN"}, per_line=False)
    check_filter_values(arn, both, set(), per_line=True)  # JSON lines may give them per line
    with pytest.raises(ConfigError, match=r"includes by \$GENRE"):
        check_filter_values(arn, both, {"SEEN"}, per_line=False)
    with pytest.raises(ConfigError, match=r"no \$genre placeholder"):
        check_filter_values(arn, both, {"genre"}, per_line=True)
    with pytest.raises(ConfigError, match="there is no --filter-arn"):
        check_filter_values(None, "", {"GENRE"}, per_line=True)
    check_filter_values(None, "", set(), per_line=False)


async def test_a_shard_refused_by_its_input_check_stops_the_run_after_the_creates_under_way() -> (
    None
):
    """`check_input` refuses shard 1 while shard 0's job is being created: no other job is
    started, but shard 0's create finishes and is journalled before the run stops (cancelled
    mid-create, its job would run unknown to the journal)."""
    clock = FakeClock()

    class SlowJobs(FakeJobs):
        async def create_job(self, request: dict[str, Any]) -> str:
            await clock.sleep(3)  # the request is on its way when shard 1 is refused
            await anyio.lowlevel.checkpoint()  # its answer comes back (a cancel could land)
            return await super().create_job(request)

    async def check_input(shard: ShardInfo) -> None:
        if shard.shard == 1:
            await clock.sleep(1)
            raise InputError("shard 1: its input on S3 changed after the upload")

    service, log = SlowJobs(clock), MemoryLog()
    send, receive = anyio.create_memory_object_stream[ShardInfo](4)
    async with send:
        for shard in shards(4):
            await send.send(shard)
    submitter = Submitter(
        run_id=RUN,
        service=service,
        journal=log,
        settings=SubmitSettings(poll_interval=5.0, tps=100.0, max_concurrent_jobs=2),
        request_for=request_for,
        clock=clock,
        check_input=check_input,
    )
    with pytest.raises(BaseExceptionGroup) as raised:
        await driven(clock, lambda: submitter.run(receive))
    assert raised.group_contains(InputError, match="shard 1: its input")
    assert [job.name for job in service.jobs.values()] == [job_name("fanout", RUN, 0, 1)]
    assert [e["shard"] for e in created(log.events)] == [0]
    refused = [e for e in log.events if e["event"] == "shard-refused"]
    assert [(e["shard"], e["reason"]) for e in refused] == [
        (1, "shard 1: its input on S3 changed after the upload")
    ]
