"""Live progress on a terminal: one status line, redrawn as the run's events come in.

    read 1,200,000 · uploaded 31 MB · jobs 2 pending, 3 running, 4 done (wave 2/3)
    · merged 800,000 · ETA 4 min        (one line on the terminal)

Messages (`message`) print above it. Only for a terminal; elsewhere the CLI writes one line, or
one JSON event, per message.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from .records import JobStatus

REDRAW_SECONDS = 0.25


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._started = time.monotonic()
        self._drawn = 0.0
        self._records = 0
        self._bytes = 0
        self._planned_records = 0
        self._planned_shards = 0
        self._quota = 0
        self._jobs: dict[int, JobStatus] = {}
        self._created = 0
        self._merged = 0
        self._width = 0

    def event(self, record: dict[str, Any]) -> None:
        """A journal event: update the counters, redraw now and then."""
        kind = record.get("event")
        if kind == "run-started":
            plan = record.get("plan") or {}
            self._planned_records = int(plan.get("records") or 0)
            self._planned_shards = int(plan.get("shards") or 0)
            self._quota = int(plan.get("quota") or 0)
        elif kind == "part-written":
            self._records += int(record["records"])
            self._bytes += int(record["nbytes"])
        elif kind == "job-created":
            self._created += 1
            self._jobs[int(record["shard"])] = JobStatus.parse(str(record.get("status") or ""))
        elif kind == "job-status":
            self._jobs[int(record["shard"])] = JobStatus.parse(str(record["status"]))
        elif kind == "shard-merged":
            self._merged += int(record.get("results", 0)) + int(record.get("errors", 0))
        now = time.monotonic()
        if now - self._drawn >= REDRAW_SECONDS:
            self._draw(now)

    def message(self, text: str) -> None:
        self._clear()
        print(f"fanout: {text}", file=self._stream, flush=True)
        self._draw(time.monotonic())

    def close(self) -> None:
        self._clear()

    def line(self) -> str:
        by = {status: 0 for status in JobStatus}
        for status in self._jobs.values():
            by[status] += 1
        parts = [f"read {self._records:,}", f"uploaded {self._bytes / 1e6:,.0f} MB"]
        if self._jobs:
            jobs = (
                f"jobs {by[JobStatus.PENDING]} pending, {by[JobStatus.IN_PROGRESS]} running, "
                f"{by[JobStatus.ACTIVE]} done"
            )
            if by[JobStatus.FAILED]:
                jobs += f", {by[JobStatus.FAILED]} failed"
            if self._quota and self._planned_shards:
                wave = max(1, math.ceil(self._created / self._quota))
                jobs += f" (wave {wave}/{math.ceil(self._planned_shards / self._quota)})"
            parts.append(jobs)
        if self._merged:
            parts.append(f"merged {self._merged:,}")
            total = self._planned_records or self._records
            elapsed = time.monotonic() - self._started
            if 0 < self._merged < total:
                left = elapsed * (total - self._merged) / self._merged
                parts.append(f"ETA {left / 60:.0f} min" if left >= 60 else f"ETA {left:.0f} s")
        return " · ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line()
        self._clear()
        self._stream.write(text)
        self._stream.flush()
        self._width = len(text)
        self._drawn = now

    def _clear(self) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._width = 0
