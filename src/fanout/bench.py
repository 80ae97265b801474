"""`fanout bench`: a synthetic workload through the real pipeline, measured stage by stage.

The run is an ordinary run (its journal is under `--state-dir`, so `fanout status` works on it);
the figures come from its journal's timestamps:

* read + shard + upload: `run-started` → `prepared` (the three are streamed together), records/s
  and MB/s; upload alone: bytes over the span of `part-written` events;
* submit: `shard-ready` → `job-created` per shard (queue wait for a slot included);
* job run time: `job-created` → `ACTIVE`, and records/s per job;
* download + merge: `ACTIVE` → `shard-merged`, lines/s;
* peak RSS and CPU time of this process.

The projection says how long `--project N` users would take at the quota: fanout's own stages at
the measured rates, the jobs by the planner's cost model (`--job-overhead-minutes`,
`--records-per-minute`: the service's throughput is not published, so set them from a real run),
and which stage bounds the run.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from .config import Limits, Timing
from .plan import InputEstimate, make_plan
from .records import JobStatus


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    seconds: float  # wall time of the stage (mean per shard/job where it is per shard)
    records: int
    nbytes: int
    note: str = ""

    def row(self) -> dict[str, Any]:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        mb = self.nbytes / 1e6 / self.seconds if self.seconds > 0 and self.nbytes else 0.0
        return {
            "stage": self.name,
            "seconds": round(self.seconds, 3),
            "records": self.records,
            "records/s": round(rate),
            "MB/s": round(mb, 1),
            "note": self.note,
        }


def measure(events: list[dict[str, Any]]) -> list[Stage]:
    """The per-stage figures of one finished run, from its journal."""
    first = events[0]["t"]
    names = ("prepared", "part-written", "shard-ready", "job-created", "job-status", "shard-merged")
    by = {name: [e for e in events if e["event"] == name] for name in names}
    stages: list[Stage] = []
    for prepared in by["prepared"][:1]:
        note = "streamed together: run-started → prepared"
        records, nbytes = int(prepared["records"]), int(prepared["nbytes"])
        stages.append(Stage("read+shard+upload", prepared["t"] - first, records, nbytes, note))
    parts = by["part-written"]
    if parts:
        span = max(p["t"] for p in parts) - first
        records = sum(p["records"] for p in parts)
        nbytes = sum(p["nbytes"] for p in parts)
        stages.append(Stage("upload", span, records, nbytes, f"{len(parts)} part files"))
    ready = {e["shard"]: e for e in by["shard-ready"]}
    created: dict[int, dict[str, Any]] = {}
    for event in by["job-created"]:
        created.setdefault(event["shard"], event)  # the first attempt
    waits = [created[s]["t"] - ready[s]["t"] for s in created if s in ready]
    if waits:
        note = f"max {max(waits):.2f} s; includes waiting for a slot under the quota"
        stages.append(
            Stage("submit (ready → created)", statistics.mean(waits), len(waits), 0, note)
        )
    active = {
        e["shard"]: e for e in by["job-status"] if JobStatus.parse(e["status"]) is JobStatus.ACTIVE
    }
    latest = {e["shard"]: e for e in by["job-created"]}
    runs = [(active[s]["t"] - latest[s]["t"], ready[s]["records"]) for s in active if s in ready]
    if runs:
        seconds = statistics.mean(t for t, _ in runs)
        records = round(statistics.mean(r for _, r in runs))
        note = f"mean per job, {len(runs)} jobs; max {max(t for t, _ in runs):.1f} s"
        stages.append(Stage("job run time", seconds, records, 0, note))
    merges = [
        (e["t"] - active[e["shard"]]["t"], e) for e in by["shard-merged"] if e["shard"] in active
    ]
    if merges:
        seconds = statistics.mean(t for t, _ in merges)
        lines = round(statistics.mean(e["lines"] for _, e in merges))
        stages.append(
            Stage("download+merge", seconds, lines, 0, f"mean per shard, {len(merges)} shards")
        )
    return stages


def usage() -> dict[str, float]:
    """Peak RSS (MiB) and CPU seconds of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    times = os.times()
    return {
        "peak RSS MiB": round(peak * scale / 2**20, 1),
        "CPU s": round(times.user + times.system, 2),
    }


def project(
    stages: list[Stage], users: int, bytes_per_record: float, limits: Limits, timing: Timing
) -> dict[str, Any]:
    """How long `users` would take at the quota, and which stage bounds it."""
    rate = {s.name: s.records / s.seconds for s in stages if s.seconds > 0}
    prepare = users / rate["read+shard+upload"] if "read+shard+upload" in rate else 0.0
    estimate = InputEstimate(users, round(users * bytes_per_record), exact=True, how="projected")
    shards = make_plan(estimate, limits, timing, limits.max_file_records).shards
    quota = limits.max_concurrent_jobs
    per_job = math.ceil(users / shards)
    waves = math.ceil(shards / quota)
    job = timing.job_overhead_minutes * 60 + per_job / timing.records_per_minute * 60
    jobs = waves * job
    merge_rate = rate.get("download+merge", 0.0)
    last_wave = per_job * min(quota, shards) / merge_rate if merge_rate else 0.0
    total = max(prepare, jobs) + last_wave
    bound = "jobs (the service)" if jobs >= prepare else "read+shard+upload (fanout)"
    if last_wave > max(prepare, jobs):
        bound = "download+merge (fanout)"
    return {
        "users": users,
        "input bytes": round(users * bytes_per_record),
        "job shards": shards,
        "waves at the quota": waves,
        "quota": quota,
        "prepare minutes": round(prepare / 60, 1),
        "jobs minutes": round(jobs / 60, 1),
        "last merge minutes": round(last_wave / 60, 1),
        "total minutes": round(total / 60, 1),
        "bound by": bound,
        "job model": f"{timing.job_overhead_minutes:g} min + records / "
        f"{timing.records_per_minute:,.0f} per minute (--job-overhead-minutes, "
        "--records-per-minute)",
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as an aligned text table."""
    columns = list(rows[0]) if rows else []
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
