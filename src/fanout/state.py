"""A run's state, rebuilt by replaying its journal (no other state file exists).

Events and what they mean (fields beyond `t` and `event`):

    run-started     run_id, ids, input_base, plan, settings         prepare began
    part-written    shard, part, uri, etag, nbytes, records, sha256 a part file is in place
    shard-ready     shard, parts, records, nbytes, prefix           a shard can become a job
    prepared        shards, records, nbytes, source                 every shard is ready
    submit-started  request, output_base, submit                    jobs may be created
    job-created     shard, attempt, name, arn, adopted              a job exists for the shard
    job-status      shard, attempt, arn, status, reason             a job's status changed
    job-timeout     shard, attempt, arn, seconds                    fanout stopped waiting for it
    shard-failed    shard, attempt, reason, hint                    no more attempts for it
    shard-refused   shard, reason                                   its parts on S3 are not as
                                                                    uploaded (or could not be
                                                                    checked): no job, run stopped
    submitted       active, failed, timed_out                       every job is terminal
    merge-started   settings                                        results are being merged
    shard-merged    shard, sent, results, errors, missing, …        one shard's counts
    results-ready   out                                             the result is about to be
                                                                    moved into place
    merged          out, counts[, retries]                          the result set is in place
                                                                    (with those retries' results)
    retry-started   child, ids, missing_only                        errored/missing IDs resent
    retry-combining child, size                                     the child's results are being
                                                                    appended to a result of size
    retried         child, counts                                   and merged into the result

Unknown events are ignored, so an older fanout can read a newer journal's known parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .journal import MIRROR_HINT
from .records import JobStatus


@dataclass(slots=True)
class JobRecord:
    """One attempt at a shard's job, as the journal last saw it."""

    shard: int
    attempt: int
    name: str
    arn: str
    created: float  # when fanout created or adopted it (epoch seconds)
    adopted: bool = False
    status_text: str = "PENDING"
    reason: str | None = None
    updated: float | None = None
    timed_out: bool = False

    @property
    def status(self) -> JobStatus:
        return JobStatus.parse(self.status_text)

    @property
    def abandoned(self) -> bool:
        """The run stopped waiting for it (`--job-timeout`) while it still ran."""
        return self.timed_out and not self.status.terminal


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard: int
    parts: int
    records: int
    nbytes: int
    prefix: str  # the path the job reads (ends in /)


@dataclass(slots=True)
class RunState:
    """What the journal says about a run."""

    run_id: str
    started: float
    start: dict[str, Any]  # the run-started event
    parts: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    shards: dict[int, ShardInfo] = field(default_factory=dict)
    prepared: dict[str, Any] | None = None
    submit: dict[str, Any] | None = None  # the submit-started event
    jobs: dict[int, list[JobRecord]] = field(default_factory=dict)  # attempts, oldest first
    failed: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard-failed events
    refused: dict[int, str] = field(default_factory=dict)  # shard-refused, until a job
    submitted: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None  # the last merge-started event
    merged: dict[str, Any] | None = None  # its merged event, if it finished
    results_ready: bool = False  # its result may already be in place (replace it on resume)
    retried: list[dict[str, Any]] = field(default_factory=list)  # `retried` since `merged`
    retrying: dict[str, Any] | None = None  # the retry-started event of a retry not finished
    stopped: dict[str, Any] | None = None  # the error that stopped the last attempt, until more
    last_event: float = 0.0

    @classmethod
    def replay(cls, events: list[dict[str, Any]], where: str = "the run journal") -> RunState:
        if not events:
            raise ConfigError(
                f"{where} is empty: either the run stopped before it began (prepare it again: "
                f"delete its directory first) or the file was emptied ({MIRROR_HINT})"
            )
        if events[0].get("event") != "run-started":
            raise ConfigError(f"{where} does not start with run-started: not a fanout run journal")
        first = events[0]
        state = cls(run_id=str(first["run_id"]), started=float(first["t"]), start=first)
        for event in events[1:]:
            try:
                state._apply(event)
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{where}: event {event.get('event')!r} at t={event.get('t')} is malformed "
                    f"({exc!r}): the journal was edited or corrupted"
                ) from None
        return state

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        self.last_event = float(event["t"])
        self.stopped = event if kind == "stopped" else None
        if kind == "part-written":
            self.parts[(int(event["shard"]), int(event["part"]))] = event
        elif kind == "shard-ready":
            shard = int(event["shard"])
            self.shards[shard] = ShardInfo(
                shard, int(event["parts"]), int(event["records"]), int(event["nbytes"]),
                str(event["prefix"]),
            )  # fmt: skip
        elif kind == "prepared":
            self.prepared = event
        elif kind == "submit-started":
            self.submit = event
        elif kind == "job-created":
            shard = int(event["shard"])
            self.refused.pop(shard, None)
            record = JobRecord(
                shard=shard,
                attempt=int(event["attempt"]),
                name=str(event["name"]),
                arn=str(event["arn"]),
                created=float(event.get("created") or event["t"]),
                adopted=bool(event.get("adopted", False)),
                status_text=str(event.get("status") or "PENDING"),
            )
            attempts = self.jobs.setdefault(shard, [])
            attempts[:] = [a for a in attempts if a.attempt != record.attempt]
            attempts.append(record)
        elif kind in {"job-status", "job-timeout"}:
            job = self.job(int(event["shard"]))
            if job is None or job.arn != event["arn"]:
                return  # about an attempt that has since been replaced
            if kind == "job-timeout":
                job.timed_out = True
            else:
                job.status_text = str(event["status"])
                job.reason = event.get("reason")
                job.updated = float(event["t"])
        elif kind == "shard-refused":
            self.refused[int(event["shard"])] = str(event["reason"])
        elif kind == "shard-failed":
            self.failed[int(event["shard"])] = event
        elif kind == "submitted":
            self.submitted = event
        elif kind == "merge-started":
            self.merge, self.merged, self.results_ready = event, None, False
            self.retried = []
        elif kind == "results-ready":
            self.results_ready = True
        elif kind == "merged":
            self.merged, self.retried = event, []
        elif kind == "retry-started":
            self.retrying = event
        elif kind == "retried":
            self.retried.append(event)
            if self.retrying is not None and self.retrying.get("child") == event.get("child"):
                self.retrying = None

    @property
    def open_merge(self) -> dict[str, Any] | None:
        """The last merge-started event, if that merge has not finished."""
        return self.merge if self.merged is None else None

    def reconciled(self) -> dict[str, Any] | None:
        """The counts of the result as it stands: the last merge's, with what `fanout retry`
        added since (its results appended; its errors and missing IDs are the run's now)."""
        if self.merged is None:
            return None
        counts = dict(self.merged["counts"])
        for event in self.retried:
            counts["results"] = int(counts["results"]) + int(event["counts"]["results"])
            counts["errors"] = int(event["counts"]["errors"])
            counts["missing"] = int(event["counts"]["missing"])
        return counts

    def retries(self) -> list[str]:
        """The retries (`fanout retry`, their child runs) whose results the result holds: those
        a merge of the run added again (`merged`'s `retries`), and those since."""
        if self.merged is None:
            return []
        merged = [str(child) for child in self.merged.get("retries", ())]
        return merged + [str(event["child"]) for event in self.retried]

    def job(self, shard: int) -> JobRecord | None:
        """The latest attempt at the shard's job, if any."""
        attempts = self.jobs.get(shard)
        return attempts[-1] if attempts else None

    @property
    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = self.start["settings"]
        return settings

    def input_lines(self) -> dict[str, int] | None:
        """What prepare made of the input's lines (`lines`, `blank`, `rejected` for every
        reason, `duplicates`), from the prepared event; None before the run is prepared."""
        if self.prepared is None:
            return None
        source = self.prepared["source"]
        return {
            "lines": int(source["lines"]),
            "blank": int(source["blank"]),
            "rejected": sum(int(v) for v in source["rejected"].values()),
            "duplicates": int(source["duplicates"]),
        }

    def counts(self) -> dict[str, int]:
        """Shards and jobs by state, for `fanout status`."""
        by_status: dict[str, int] = {}
        for shard in self.shards:
            job = self.job(shard)
            if shard in self.failed:
                key = "failed"
            elif job is None:
                key = "waiting"
            elif job.abandoned:
                key = "timed out"
            else:
                key = {
                    JobStatus.PENDING: "pending",
                    JobStatus.IN_PROGRESS: "in progress",
                    JobStatus.ACTIVE: "active",
                    JobStatus.FAILED: "failed (retrying)",
                }[job.status]
            by_status[key] = by_status.get(key, 0) + 1
        return by_status
