"""End to end: `fanout run` against the naive flow of the AWS samples notebook, on the emulator.

One `fanout emulator` process (quota 5; each job spends `--job-seconds` in each state and
`--seconds-per-million` per million records, so job time grows with records as the service's
does) serves both, one after the other, on the same `--users` user IDs (default 1,000,000):

* **naive**, as the samples notebook does it: write one JSON-lines file (`json.dumps` per line),
  `upload_file`, one `create_batch_inference_job`, poll `describe_batch_inference_job`, download
  the `.out` files, `json.loads` every line and write the merged JSON lines;
* **fanout**: `fanout run --ids users.txt --out merged.jsonl` (its own process), which shards,
  uploads, runs up to 5 jobs at once and merges as jobs finish. Its planner is given the
  emulator's job cost model (`--job-overhead-minutes`, `--records-per-minute`), as a user gives
  it the service's.

Both poll every `--poll-interval` seconds and end in a merged JSONL with one line per user. The
table shows wall time per flow, the time jobs spent in the emulator (first job created → last job
ACTIVE, from the service's own times), and fanout's own overhead: wall time minus that. Target:
fanout ≥ 4× faster end to end.

    .venv/bin/python benchmarks/e2e.py [--users 1000000] [--seconds-per-million 120]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from _common import emulator_process, print_table, run_job

TARGET = 4.0


def clients(info: dict[str, Any]) -> tuple[Any, Any]:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"]
    )
    return (
        session.client("s3", endpoint_url=info["s3_endpoint"]),
        session.client("personalize", endpoint_url=info["personalize_endpoint"]),
    )


def job_span(personalize: Any, prefix: str) -> float:
    """First job created → last job ACTIVE, by the service's clock, for jobs named `prefix…`."""
    jobs = [
        job
        for page in personalize.get_paginator("list_batch_inference_jobs").paginate()
        for job in page["batchInferenceJobs"]
        if job["jobName"].startswith(prefix)
    ]
    start = min(job["creationDateTime"] for job in jobs)
    end = max(job["lastUpdatedDateTime"] for job in jobs)
    return float((end - start).total_seconds())


def naive(info: dict[str, Any], users: list[str], workdir: Path, poll: float) -> dict[str, Any]:
    s3, personalize = clients(info)
    bucket = info["bucket"]
    started = time.perf_counter()
    path = workdir / "naive-input.json"
    with path.open("w") as handle:
        for user in users:
            handle.write(json.dumps({"userId": user}) + "\n")
    s3.upload_file(str(path), bucket, "naive/in/input.json")
    run_job(
        personalize,
        poll,
        jobName="naive-notebook",
        solutionVersionArn=info["solution_versions"]["user-personalization"],
        roleArn=info["role_arn"],
        numResults=25,
        jobInput={"s3DataSource": {"path": f"s3://{bucket}/naive/in/input.json"}},
        jobOutput={"s3DataDestination": {"path": f"s3://{bucket}/naive/out/"}},
    )
    merged = 0
    with (workdir / "naive-merged.jsonl").open("w") as out:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="naive/out/")
        for obj in listing.get("Contents", []):
            if not obj["Key"].endswith(".out"):
                continue
            local = workdir / "naive-output.out"
            s3.download_file(bucket, obj["Key"], str(local))
            with local.open() as handle:
                for line in handle:
                    record = json.loads(line)
                    flat = {"userId": record["input"]["userId"], **record["output"]}
                    out.write(json.dumps(flat) + "\n")
                    merged += 1
    wall = time.perf_counter() - started
    span = job_span(personalize, "naive")
    return {"flow": "naive (samples notebook)", "wall": wall, "jobs": span, "lines": merged}


def fanout(
    info: dict[str, Any], ids: Path, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    _, personalize = clients(info)
    bucket = info["bucket"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": info["region"], "AWS_ENDPOINT_URL_S3": info["s3_endpoint"],
           "AWS_ENDPOINT_URL_KMS": info["s3_endpoint"],
           "AWS_ENDPOINT_URL_PERSONALIZE": info["personalize_endpoint"]}  # fmt: skip
    out = workdir / "fanout-merged.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fanout.cli", "run", "--ids", str(ids), "--out", str(out),
         "--solution-version-arn", info["solution_versions"]["user-personalization"],
         "--role-arn", info["role_arn"], "--num-results", "25", "--run-id", "bench-e2e",
         "--job-input", f"s3DataSource={{path=s3://{bucket}/fanout/in/}}",
         "--job-output", f"s3DataDestination={{path=s3://{bucket}/fanout/out/}}",
         "--state-dir", str(workdir / "state"), "--poll-interval", str(args.poll_interval),
         "--log-format", "json",
         # The planner's job cost model, set to the emulator's (as one would set it to AWS's).
         "--job-overhead-minutes", str(2 * args.job_seconds / 60),
         "--records-per-minute", str(60e6 / args.seconds_per_million)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    with out.open("rb") as handle:
        lines = sum(1 for _ in handle)
    span = job_span(personalize, "fanout-bench-e2e")
    return {"flow": "fanout run", "wall": wall, "jobs": span, "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--job-seconds", type=float, default=5.0)
    parser.add_argument("--seconds-per-million", type=float, default=120.0)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        users = [f"user-{i}" for i in range(args.users)]
        ids = workdir / "users.txt"
        ids.write_text("".join(f"{user}\n" for user in users))
        with emulator_process(
            workdir,
            "--quota",
            "5",
            "--job-seconds",
            str(args.job_seconds),
            "--seconds-per-million-records",
            str(args.seconds_per_million),
            "--seed",
            "1",
        ) as info:
            rows = [naive(info, users, workdir, args.poll_interval)]
            rows.append(fanout(info, ids, workdir, args))
    base = rows[0]["wall"]
    table = [
        {
            "flow": row["flow"],
            "users": args.users,
            "merged lines": row["lines"],
            "wall s": round(row["wall"], 1),
            "jobs in emulator s": round(row["jobs"], 1),
            "own overhead s": round(row["wall"] - row["jobs"], 1),
            "speed-up": round(base / row["wall"], 2),
        }
        for row in rows
    ]
    print_table(table)
    ratio = base / rows[1]["wall"]
    ok = ratio >= TARGET and all(row["lines"] == args.users for row in rows)
    print(f"{'PASS' if ok else 'FAIL'}  fanout {ratio:.2f}x the naive flow end to end "
          f"(target >= {TARGET}x); both merged {args.users:,} lines: "
          f"{all(row['lines'] == args.users for row in rows)}")  # fmt: skip


if __name__ == "__main__":
    main()
