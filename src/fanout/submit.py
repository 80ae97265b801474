"""The submit stage: one batch inference job per shard, under the account's quota and a rate limit.

One task owns all the state and loops:

1. **poll**, once per `poll_interval`: one paginated `ListBatchInferenceJobs` of the whole account
   (every solution version: other people's jobs share the quota). It updates our jobs' statuses
   (journalled on change), counts everybody's non-terminal jobs, and finds jobs by name;
2. **admit**: while a shard waits and fewer than `max_concurrent_jobs` jobs of the account are
   non-terminal, create the shard's job, or adopt it if a job of that name already exists (a crash
   between create and journal write must never make a second job); journal `job-created`;
3. **wait** for the next poll or for a new shard, whichever comes first, so a shard's job is
   created as soon as its upload is done and a slot is free.

Every Personalize call takes a token from a token bucket (`tps`). `RetryLater` (the rate limit,
the quota, or no answer) never fails the run: creation pauses until the next poll, listing pages
back off and retry, and only an outage longer than `max_outage` stops the run (resumable).

A job that ends `CREATE FAILED` is retried as a new attempt (`…-a2`, `…-a3`) up to `job_retries`
times when its reason looks transient; otherwise, or when attempts run out, the shard fails with
its reason and what to do. `job_timeout` stops waiting for a job that runs too long and reports
it. Time comes from a `Clock`, so tests walk jobs through their states without sleeping.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from .errors import ConfigError, FanoutError, JobExists, RetryLater, SubmitError
from .journal import EventLog
from .records import JobStatus, JobSummary, job_options
from .state import JobRecord, ShardInfo

MAX_JOB_NAME = 63
_JOB_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
MISSING_POLLS = 3  # a job absent from this many listings in a row is looked up directly

# failureReasons that no retry can fix: the input, the permissions or the options are wrong.
_PERMANENT = re.compile(
    r"invalid|insufficient privileges|access ?denied|not authorized|permission|"
    r"does not exist|not found|no files|limit for a batch job|more than \d+ records|"
    r"does not support|not valid json|kms|unsupported|malformed",
    re.IGNORECASE,
)


def job_name(prefix: str, run_id: str, shard: int, attempt: int) -> str:
    """`<prefix>-<run>-<shard>` for the first attempt, then `…-a2`, `…-a3`."""
    name = f"{prefix}-{run_id}-{shard:05d}"
    return name if attempt == 1 else f"{name}-a{attempt}"


def check_job_names(prefix: str, run_id: str, shards: int, attempts: int) -> str:
    """Refuse a prefix that would make an invalid or over-long job name, before any job exists;
    the longest name."""
    longest = job_name(prefix, run_id, max(shards - 1, 0), max(attempts, 2))
    if not _JOB_NAME.fullmatch(longest):
        raise ConfigError(
            f"--job-name {prefix!r}: job names must be letters, digits, '-' and '_', starting "
            f"with a letter or digit (fanout names jobs like {longest})"
        )
    if len(longest) > MAX_JOB_NAME:
        room = MAX_JOB_NAME - (len(longest) - len(prefix))
        raise ConfigError(
            f"--job-name {prefix!r} is too long: with run ID {run_id} job names would be "
            f"{len(longest)} characters ({longest}), over the service's {MAX_JOB_NAME}; use at "
            f"most {room} characters, or a shorter --run-id"
        )
    return longest


_RETRY_NEEDS = "once the run is merged to a file"  # what `fanout retry` takes (retry.py)


def classify_failure(reason: str) -> tuple[bool, str]:
    """(worth retrying, what to do) for a job's failureReason."""
    if _PERMANENT.search(reason):
        return False, (
            "fix the cause the reason names (input data, role permissions, KMS key, options), "
            f"then `fanout retry` ({_RETRY_NEEDS}) or start a new run"
        )
    return True, "the service reported a transient failure; `fanout resume` retries it"


class Clock(Protocol):
    """Where time comes from: the system in production, a fake in tests."""

    def now(self) -> float:
        """The time of day (epoch seconds): for what is journalled or compared with the
        service's timestamps (a job's creation, a job timeout across resumes)."""
        ...

    def elapsed(self) -> float:
        """Seconds on a clock that only goes forward, for intervals within this process (the
        rate limit, polls, an outage): a step of the time of day (NTP, a VM resumed) must not
        stall every call or cut a wait short."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        """Return when `event` is set or `seconds` have passed."""
        ...


ADOPT_SLACK = 60.0  # seconds a job's creation may seem to precede its run's start (clock skew)


class SystemClock:
    def now(self) -> float:
        return time.time()

    def elapsed(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(max(0.0, seconds)):
            await event.wait()


class TokenBucket:
    """At most `rate` calls per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"--tps must be > 0 (got {rate}); the burst must be ≥ 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock.elapsed()
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.elapsed()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self._clock.sleep((1 - self._tokens) / self._rate)


class JobService(Protocol):
    """The Personalize calls the submitter makes (`aws.BatchJobs`, or a fake in tests)."""

    async def create_job(self, request: dict[str, Any]) -> str: ...

    async def list_jobs_page(self, token: str | None) -> tuple[list[JobSummary], str | None]: ...

    async def describe_job(self, arn: str) -> JobSummary | None: ...


@dataclass(frozen=True, slots=True)
class SubmitSettings:
    """How jobs are submitted and tracked (each is a `fanout submit` option)."""

    job_name_prefix: str = "fanout"
    max_concurrent_jobs: int = 5  # the account's quota of non-terminal batch inference jobs
    tps: float = 2.0  # Personalize control-plane calls per second (not published: assumed)
    job_retries: int = 2  # new attempts after a transient CREATE FAILED
    poll_interval: float = 60.0
    job_timeout: float | None = None  # seconds; None waits as long as jobs run
    max_outage: float = 1800.0  # stop (resumably) after Personalize is unreachable this long

    def __post_init__(self) -> None:
        if self.max_concurrent_jobs < 1:
            raise ConfigError("--max-concurrent-jobs must be at least 1")
        if self.job_retries < 0:
            raise ConfigError("--job-retries must be 0 or more")
        if not self.poll_interval > 0:
            raise ConfigError("--poll-interval must be more than 0 seconds")
        if self.job_timeout is not None and not self.job_timeout > 0:
            raise ConfigError("--job-timeout must be more than 0 seconds")
        if not self.tps > 0:
            raise ConfigError("--tps must be more than 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_name_prefix": self.job_name_prefix,
            "max_concurrent_jobs": self.max_concurrent_jobs,
            "tps": self.tps,
            "job_retries": self.job_retries,
            "poll_interval": self.poll_interval,
            "job_timeout": self.job_timeout,
            "max_outage": self.max_outage,
        }


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    active: dict[int, str]  # shard -> job ARN
    failed: dict[int, str]  # shard -> reason and what to do
    timed_out: dict[int, str]  # shard -> job ARN still running


RequestFor = Callable[[ShardInfo, str], dict[str, Any]]
# Raises (a FanoutError saying why) if the shard's job must not be created.
CheckInput = Callable[[ShardInfo], Awaitable[None]]


class Submitter:
    """Creates and tracks the jobs of one run. `await Submitter(...).run(shards)`."""

    def __init__(
        self,
        *,
        run_id: str,
        service: JobService,
        journal: EventLog,
        settings: SubmitSettings,
        request_for: RequestFor,
        clock: Clock | None = None,
        jobs: dict[int, JobRecord] | None = None,
        failed: dict[int, str] | None = None,
        report: Callable[[str], None] | None = None,
        on_active: Callable[[ShardInfo], Awaitable[None]] | None = None,
        run_started: float | None = None,
        check_input: CheckInput | None = None,
    ) -> None:
        self._run_id = run_id
        self._check_input = check_input
        self._run_started = run_started  # epoch seconds: jobs made before are not this run's
        self._on_active = on_active
        self._service = service
        self._journal = journal
        self._settings = settings
        self._request_for = request_for
        self._clock = clock or SystemClock()
        self._bucket = TokenBucket(settings.tps, max(1.0, settings.tps), self._clock)
        self._report = report or (lambda message: None)
        self._started = self._clock.now()
        # Shards known to this run, and the latest job of each (resumed from the journal).
        self._shards: dict[int, ShardInfo] = {}
        self._jobs: dict[int, JobRecord] = dict(jobs or {})
        self._by_arn: dict[str, JobRecord] = {job.arn: job for job in self._jobs.values()}
        self._failed: dict[int, str] = dict(failed or {})
        self._inputs_done = False
        self._pending: deque[int] = deque()  # shards waiting for a job, oldest first
        self._creating: set[int] = set()  # shards whose job is being created
        self._group: anyio.abc.TaskGroup | None = None
        self._listing: dict[str, JobSummary] = {}  # by name, from the last poll
        self._foreign_in_flight = 0
        self._missing: dict[str, int] = {}  # ARN -> listings in a row without it
        self._waiting: dict[int, str] = {}  # shard -> why it waits, as last reported
        self._blocked = False  # the service said "not now": no creates until the next poll
        # `check_input` refused a shard: no more creates; raised once those under way are
        # journalled (cancelled mid-create, a job would run that the journal does not know)
        self._halted: FanoutError | None = None
        self._polled = False
        self._outage_since: float | None = None
        self._wake = anyio.Event()

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, shards: MemoryObjectReceiveStream[ShardInfo]) -> SubmitOutcome:
        """Submit every shard from the stream and wait until each job is terminal."""
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._receive, shards)
            await self._loop()
            group.cancel_scope.cancel()
        return self.outcome()

    async def _receive(self, shards: MemoryObjectReceiveStream[ShardInfo]) -> None:
        """Take each shard as it becomes ready and admit it at once if a slot is free: a poll
        in progress on the other task does not hold it back."""
        async with shards:
            async for shard in shards:
                await self._accept(shard)
                if self._polled:
                    await self._admit()
                self._wake.set()
        self._inputs_done = True
        self._wake.set()

    async def _loop(self) -> None:
        next_poll = self._clock.elapsed()
        while True:
            self._wake = anyio.Event()
            if self._clock.elapsed() >= next_poll:
                await self._poll()
                next_poll = self._clock.elapsed() + self._settings.poll_interval
            if self._polled:  # admission needs one listing first: adopt before creating
                await self._admit()
            if self._halted is not None and not self._creating:
                raise self._halted
            if self._finished():
                return
            await self._clock.wait(self._wake, next_poll - self._clock.elapsed())

    def _finished(self) -> bool:
        if not self._inputs_done or self._pending or self._creating:
            return False
        for shard in self._shards:
            job = self._jobs.get(shard)
            if shard in self._failed or job is None:
                continue
            if not (job.status is JobStatus.ACTIVE or job.timed_out):
                return False
        return all(shard in self._jobs or shard in self._failed for shard in self._shards)

    def shards(self) -> list[ShardInfo]:
        """Every shard this submitter was given, in order."""
        return [self._shards[number] for number in sorted(self._shards)]

    def outcome(self) -> SubmitOutcome:
        active: dict[int, str] = {}
        timed_out: dict[int, str] = {}
        for shard in sorted(self._shards):
            job = self._jobs.get(shard)
            if job is None or shard in self._failed:
                continue
            if job.status is JobStatus.ACTIVE:
                active[shard] = job.arn
            elif job.timed_out:
                timed_out[shard] = job.arn
        return SubmitOutcome(active, dict(sorted(self._failed.items())), timed_out)

    # -- shards -----------------------------------------------------------------------------------

    async def _accept(self, shard: ShardInfo) -> None:
        if shard.shard in self._shards:
            return
        self._shards[shard.shard] = shard
        job = self._jobs.get(shard.shard)
        if shard.shard in self._failed:
            return
        if job is None:
            self._pending.append(shard.shard)
        elif job.status.terminal:
            await self._job_ended(job)  # ended before a crash or a restart

    def _in_flight(self) -> int:
        ours = sum(1 for job in self._jobs.values() if not job.status.terminal)
        return self._foreign_in_flight + ours

    async def _admit(self) -> None:
        """Start creating jobs for waiting shards while slots are free.

        Each create runs as its own task, holding its slot, so a shard that becomes ready while
        others are being created does not wait for them.
        """
        while self._pending and not self._blocked and self._halted is None:
            if self._in_flight() + len(self._creating) >= self._settings.max_concurrent_jobs:
                return
            number = self._pending.popleft()
            self._creating.add(number)
            assert self._group is not None, "admission runs inside run()"
            self._group.start_soon(self._create_task, number)

    async def _create_task(self, number: int) -> None:
        try:
            created = await self._create(self._shards[number])
        finally:
            self._creating.discard(number)
        if not created:
            self._pending.appendleft(number)
        self._wake.set()

    async def _create(self, shard: ShardInfo) -> bool:
        """Create (or adopt) the shard's next job; False if the service said "not now"."""
        previous = self._jobs.get(shard.shard)
        attempt = previous.attempt + 1 if previous else 1
        name = job_name(self._settings.job_name_prefix, self._run_id, shard.shard, attempt)
        found = self._listing.get(name)
        adopted = found is not None
        if found is not None:
            if not await self._is_own(found, shard):
                return False
        else:
            if self._check_input is not None:
                try:
                    await self._check_input(shard)
                except FanoutError as exc:
                    self._halted = self._halted or exc
                    await self._journal.append("shard-refused", shard=shard.shard, reason=str(exc))
                    return True  # not waiting for a slot: the run stops
            await self._bucket.acquire()
            try:
                arn = await self._service.create_job(self._request_for(shard, name))
            except JobExists:
                found = await self._find(name)
                if found is None:  # not listed yet: look again after the next poll
                    self._blocked = True
                    return False
                if not await self._is_own(found, shard):
                    return False
                adopted = True
            except RetryLater as exc:
                self._blocked = True
                if self._waiting.get(shard.shard) != str(exc):  # said once, not every poll
                    self._waiting[shard.shard] = str(exc)
                    self._report(f"shard {shard.shard}: not created yet ({exc}); waiting")
                return False
            else:
                found = JobSummary(arn, name, "CREATE PENDING")
        job = JobRecord(
            shard=shard.shard,
            attempt=attempt,
            name=name,
            arn=found.arn,
            created=self._clock.now(),
            adopted=adopted,
            status_text=found.status_text,
            reason=found.failure_reason,
        )
        await self._journal.append(
            "job-created",
            shard=job.shard,
            attempt=attempt,
            name=name,
            arn=job.arn,
            adopted=adopted,
            status=job.status_text,
            created=job.created,
        )
        if previous is not None:
            self._by_arn.pop(previous.arn, None)
        self._jobs[shard.shard] = job
        self._by_arn[job.arn] = job
        verb = "adopted" if adopted else "created"
        self._report(f"shard {shard.shard}: {verb} job {name} ({job.status_text})")
        if job.status.terminal:
            await self._job_ended(job)
        return True

    async def _is_own(self, found: JobSummary, shard: ShardInfo) -> bool:
        """Whether a job found under one of this run's names can be adopted (a crash came
        between its creation and the journal): it must be one this run can have made, not one
        created before the run began (an earlier run's with the same run ID, whose shards it
        read) or with other options (numResults, solution version, paths…); either of those is
        a SubmitError. False if the service said "not now" to describing it (ask again after
        the next poll)."""
        await self._bucket.acquire()
        try:
            described = await self._service.describe_job(found.arn)
        except RetryLater:
            self._blocked = True
            return False
        if described is not None and described.options is not None:
            wanted = job_options(self._request_for(shard, found.name))
            differs = [
                f"{key} {described.options[key]!r}, not {value!r}"
                for key, value in wanted.items()
                if key in described.options and described.options[key] != value
            ]
            if differs:
                raise SubmitError(
                    f"a job named {found.name} already exists ({found.arn}) with other options "
                    f"than this run's ({'; '.join(differs)}): it is not this run's job. Start "
                    "this run with another --run-id (or job name prefix)"
                )
        if self._run_started is None or found.created is None:
            return True
        if found.created < self._run_started - ADOPT_SLACK:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.created))
            raise SubmitError(
                f"a job named {found.name} already exists ({found.arn}, created {when}), from "
                f"before run {self._run_id} began: it belongs to an earlier run with the same "
                "run ID and read that run's input. Start this run with another --run-id (or "
                "job name prefix)"
            )
        return True

    async def _find(self, name: str) -> JobSummary | None:
        """A job by name from a fresh listing (after `ResourceAlreadyExistsException`)."""
        jobs = await self._list_all()
        return next((job for job in jobs if job.name == name), None)

    # -- polling ----------------------------------------------------------------------------------

    async def _list_all(self) -> list[JobSummary]:
        jobs: list[JobSummary] = []
        token: str | None = None
        delay = 1.0
        while True:
            await self._bucket.acquire()
            try:
                page, token = await self._service.list_jobs_page(token)
            except RetryLater as exc:
                now = self._clock.elapsed()
                self._outage_since = self._outage_since or now
                if now - self._outage_since > self._settings.max_outage:
                    raise SubmitError(
                        f"Personalize has not answered for {now - self._outage_since:.0f} s "
                        f"({exc}); the run is saved: `fanout resume {self._run_id}` continues it"
                    ) from exc
                await self._clock.sleep(delay)
                delay = min(delay * 2, self._settings.poll_interval)
                continue
            self._outage_since = None
            jobs.extend(page)
            if not token:
                # A job created between two pages can shift the next one and show a job twice
                # (paging is undocumented): each counts once, as the later page saw it.
                return list({job.arn: job for job in jobs}.values())

    async def _poll(self) -> None:
        jobs = await self._list_all()
        self._polled = True
        self._blocked = False
        self._listing = {job.name: job for job in jobs}
        self._foreign_in_flight = sum(
            1 for job in jobs if job.arn not in self._by_arn and not job.status.terminal
        )
        seen = {job.arn: job for job in jobs}

        async def track(job: JobRecord) -> None:
            summary = seen.get(job.arn)
            if summary is None:
                summary = await self._look_up(job)
                if summary is None:
                    return
            self._missing.pop(job.arn, None)
            await self._update(job, summary)

        async with anyio.create_task_group() as group:  # their journal writes share fsyncs
            for job in list(self._jobs.values()):
                if not job.status.terminal:
                    group.start_soon(track, job)
        await self._check_timeouts()

    async def _look_up(self, job: JobRecord) -> JobSummary | None:
        """A job missing from the listing: usually just created; gone if Describe agrees."""
        count = self._missing.get(job.arn, 0) + 1
        self._missing[job.arn] = count
        if count < MISSING_POLLS:
            return None
        await self._bucket.acquire()
        try:
            summary = await self._service.describe_job(job.arn)
        except RetryLater:
            return None
        if summary is not None:
            return summary
        return JobSummary(
            job.arn,
            job.name,
            "CREATE FAILED",
            "The job is gone: the service no longer knows it (was the account or endpoint "
            "reset?). It is resubmitted as a new attempt.",
        )

    async def _update(self, job: JobRecord, summary: JobSummary) -> None:
        if summary.status_text == job.status_text and summary.failure_reason == job.reason:
            return
        job.status_text = summary.status_text
        job.reason = summary.failure_reason
        job.updated = summary.updated or self._clock.now()
        await self._journal.append(
            "job-status",
            shard=job.shard,
            attempt=job.attempt,
            arn=job.arn,
            status=job.status_text,
            reason=job.reason,
        )
        detail = f": {job.reason}" if job.reason else ""
        self._report(f"shard {job.shard}: job {job.name} {job.status_text}{detail}")
        if job.status.terminal:
            await self._job_ended(job)

    async def _job_ended(self, job: JobRecord) -> None:
        if job.shard not in self._shards:  # resumed, its shard not re-cut yet: see _accept
            return
        if job.status is JobStatus.ACTIVE:
            if self._on_active is not None:
                await self._on_active(self._shards[job.shard])
            return
        reason = job.reason or "no failureReason given"
        transient, hint = classify_failure(reason)
        if transient and job.attempt <= self._settings.job_retries:
            self._pending.appendleft(job.shard)
            return
        if transient:
            times = "once" if job.attempt == 1 else f"{job.attempt} times"
            hint = f"failed {times}; `fanout retry` sends its IDs again ({_RETRY_NEEDS})"
        self._failed[job.shard] = f"{reason} ({hint})"
        await self._journal.append(
            "shard-failed", shard=job.shard, attempt=job.attempt, arn=job.arn, reason=reason,
            hint=hint,
        )  # fmt: skip
        self._report(f"shard {job.shard}: FAILED after {job.attempt} attempt(s): {reason}")

    async def _check_timeouts(self) -> None:
        limit = self._settings.job_timeout
        if limit is None:
            return
        now = self._clock.now()
        for job in list(self._jobs.values()):
            # Measured from creation, or from this resume: a resumed run waits afresh.
            waited = now - max(job.created, self._started)
            if job.status.terminal or job.timed_out or waited < limit:
                continue
            job.timed_out = True
            await self._journal.append(
                "job-timeout", shard=job.shard, attempt=job.attempt, arn=job.arn, seconds=waited
            )
            self._report(
                f"shard {job.shard}: job {job.name} still {job.status_text} after "
                f"{waited:.0f} s (--job-timeout); not waiting for it"
            )


def outcome_lines(outcome: SubmitOutcome) -> list[str]:
    """What the end of a run says about failed and timed-out shards."""
    lines = [f"shard {shard}: {reason}" for shard, reason in outcome.failed.items()]
    lines += [
        f"shard {shard}: job {arn} still running after --job-timeout; `fanout resume` waits again"
        for shard, arn in outcome.timed_out.items()
    ]
    return lines
