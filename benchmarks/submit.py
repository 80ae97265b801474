"""Does fanout keep the account's job quota full, and how fast does it admit a shard?

Prepares and submits one run of `--shards` shards (default 20) against `fanout emulator` (run
in its own process, as a remote service would be)
with quota `--quota` (5) and short jobs (`--job-seconds` per state, so a job takes about twice
that), polling every `--poll-interval` seconds (0.2 against 4-second jobs: the ratio of a 60 s
poll to a 20-minute job is smaller still). Shards are uploaded while jobs run (the
run is begun, then `submit` prepares and submits at once). From the service's own job times
(ListBatchInferenceJobs: created, last updated = ACTIVE) and the run journal it reports:

* **quota kept full**: the fraction of time with `quota` jobs in flight while at least `quota`
  shards are unfinished, from the moment `quota` shards were ready (before that, uploads bound
  it, not submission). Target ≥ 0.9.
* **upload→job delay**: for every job whose slot was free when its shard finished uploading, the
  time from upload-done (`shard-ready` in the journal) to the job's creation on the service.
  Target: at most one poll interval.
* **slot→job delay** (for information): for jobs that waited for a slot, the time from the slot
  opening on the service to the job's creation: fanout learns of it at the next poll, so up to
  one poll interval plus the time of a create call.

    .venv/bin/python benchmarks/submit.py [--shards 20] [--quota 5] [--job-seconds 2.0]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from _common import emulator_process, print_table
from fanout.aws import Aws, AwsOptions
from fanout.config import Limits, S3DataConfig
from fanout.journal import read_events
from fanout.pipeline import PrepareSettings, begin, submit
from fanout.records import JobSummary
from fanout.submit import SubmitSettings


def in_flight_at(intervals: list[tuple[float, float]], at: float) -> int:
    return sum(1 for start, end in intervals if start <= at < end)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(
            Path(tmp),
            "--quota",
            str(args.quota),
            "--job-seconds",
            str(args.job_seconds),
            "--seed",
            "1",
        ) as info,
    ):
        ids = Path(tmp) / "ids.txt"
        ids.write_text("".join(f"user-{i}\n" for i in range(args.shards * 1000)))
        # About 1000 IDs of ~23 bytes per shard: cap the job size to get `shards` shards.
        prepare = PrepareSettings(
            ids=str(ids),
            run_id="bench-submit",
            state_dir=Path(tmp) / "state",
            job_input=S3DataConfig(
                path=f"s3://{info['bucket']}/in/", kms_key_arn=info["kms_key_arn"]
            ),
            limits=Limits(max_job_bytes=24_000, part_bytes=8_000, max_concurrent_jobs=1),
        )
        request = {
            "solutionVersionArn": info["solution_versions"]["user-personalization"],
            "roleArn": info["role_arn"],
            "numResults": 5,
            "jobOutput": {"s3DataDestination": {"path": f"s3://{info['bucket']}/out/"}},
        }
        options = AwsOptions(
            region=info["region"],
            endpoint_url=info["personalize_endpoint"],
            s3_endpoint_url=info["s3_endpoint"],
        )
        submit_settings = SubmitSettings(
            max_concurrent_jobs=args.quota, tps=50.0, poll_interval=args.poll_interval
        )
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL_KMS=info["s3_endpoint"],  # the run's key is checked as it begins
        )

        async def go() -> tuple[float, list[JobSummary]]:
            async with Aws(options) as aws:
                await begin(prepare, aws)
                started = time.time()
                outcome = await submit(prepare.run_dir, request, submit_settings, aws)
                if outcome.submitted is None or not outcome.ok:
                    raise SystemExit(f"the run did not complete: {outcome.submitted}")
                wall = time.time() - started
                jobs, token = [], None
                while True:  # the service's own times: created, and last updated (= ACTIVE)
                    page, token = await aws.batch_jobs.list_jobs_page(token)
                    jobs += page
                    if not token:
                        return wall, jobs

        wall, jobs = anyio.run(go)
        events = read_events(prepare.run_dir)

    ready = {e["shard"]: e["t"] for e in events if e["event"] == "shard-ready"}
    shards = len(ready)
    intervals: list[tuple[float, float]] = []
    created_at: dict[int, float] = {}
    for job in jobs:
        assert job.created is not None and job.updated is not None
        intervals.append((job.created, job.updated))
        created_at[int(job.name.rsplit("-", 1)[1])] = job.created
    ends = sorted(end for _, end in intervals)
    quota = args.quota
    window_start = sorted(ready.values())[quota - 1]
    window_end = ends[shards - quota]  # from here on, fewer than `quota` shards remain
    points = sorted({window_start, window_end, *(t for iv in intervals for t in iv)})
    full = 0.0
    for left, right in itertools.pairwise(points):
        if window_start <= left < window_end and in_flight_at(intervals, left) >= quota:
            full += min(right, window_end) - left
    fraction = full / (window_end - window_start)

    # Jobs are admitted in order: a job could be created once its shard was ready, the job
    # before it had been created, and fewer than `quota` of the jobs before it were in flight.
    # Its delay counts from upload-done when that was the last condition met, else from the
    # moment a slot opened (which fanout can only learn by polling).
    upload_delays, slot_delays = [], []
    order = sorted(created_at.items(), key=lambda item: item[1])
    for index, (shard, created) in enumerate(order):
        earlier = [iv for iv in intervals if iv[0] < created]
        could = ready[shard]
        if index:
            could = max(could, order[index - 1][1])
        if in_flight_at(earlier, could) >= quota:
            could = min(end for _, end in earlier if end > could)
            slot_delays.append(max(0.0, created - could))
        else:
            upload_delays.append(max(0.0, created - could))
    job_time = sum(end - start for start, end in intervals) / len(intervals)
    return {
        "shards": shards,
        "quota": quota,
        "job s (mean)": round(job_time, 2),
        "poll s": args.poll_interval,
        "wall s": round(wall, 1),
        "quota full": round(fraction, 3),
        "full ≥ 0.9": "met" if fraction >= 0.9 else "MISSED",
        "upload→job max s": round(max(upload_delays, default=0.0), 3),
        "≤ poll": "met" if max(upload_delays, default=0.0) <= args.poll_interval else "MISSED",
        "slot→job mean s": round(sum(slot_delays) / max(1, len(slot_delays)), 3),
        "slot→job max s": round(max(slot_delays, default=0.0), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--quota", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args()
    if not 0 < args.quota < args.shards:
        parser.error(
            "--quota must be at least 1 and below --shards: what is measured is how "
            "full the quota stays while more shards wait than it admits"
        )
    print_table([measure(args)])


if __name__ == "__main__":
    main()
