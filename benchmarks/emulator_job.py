"""How fast the emulator runs one big batch inference job: is it fit to be a benchmark backend?

Uploads N users (default 1,000,000) as one JSON-lines object, runs one user-personalization job
with numResults 25 on it, and prints a table: upload time, the job's compute time (time in
CREATE IN_PROGRESS; job_seconds is 0 so the state floor adds nothing), records/s, output bytes,
and the training time, on the default synthetic catalog (20,000 users). Two inputs: every line a
known user (the catalog's users repeated: the worst case, each line a personalised list), and N
distinct users of whom the first 20,000 are known (the rest cold: popular items).

    .venv/bin/python benchmarks/emulator_job.py [--users N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import boto3
import orjson

from _common import run_job
from fanout.emulator import Emulator, EmulatorSettings

TARGET_SECONDS = 60.0


def run(users: int, all_known: bool) -> dict[str, Any]:
    catalog_users = 20_000
    settings = EmulatorSettings(job_seconds=0.0, synthetic_users=catalog_users, seed=1)
    with Emulator(settings) as emulator:
        info = emulator.info
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info.region
        )
        s3 = session.client("s3", endpoint_url=info.s3_endpoint)
        personalize = session.client("personalize", endpoint_url=info.personalize_endpoint)
        ids = (i % catalog_users + 1 if all_known else i + 1 for i in range(users))
        body = b"".join(orjson.dumps({"userId": str(i)}) + b"\n" for i in ids)
        started = time.perf_counter()
        s3.put_object(Bucket=info.bucket, Key="bench/in/users.jsonl", Body=body)
        uploaded = time.perf_counter() - started
        run_job(
            personalize,
            0.1,
            jobName=f"bench-{'known' if all_known else 'distinct'}",
            solutionVersionArn=info.solution_versions["user-personalization"],
            numResults=25,
            roleArn=info.role_arn,
            jobInput={"s3DataSource": {"path": f"s3://{info.bucket}/bench/in/"}},
            jobOutput={"s3DataDestination": {"path": f"s3://{info.bucket}/bench/out/"}},
        )
        history = dict(
            (state, at) for at, state in emulator.service.job_history()[0][1]
        )  # state -> first time
        compute = history["ACTIVE"] - history["IN_PROGRESS"]
        head = s3.head_object(Bucket=info.bucket, Key="bench/out/users.jsonl.out")
        return {
            "input": "all known users" if all_known else "distinct users, 2% known",
            "lines": users,
            "training s": round(emulator.training_seconds, 2),
            "upload s": round(uploaded, 2),
            "compute s": round(compute, 2),
            "lines/s": int(users / compute),
            "output MB": round(head["ContentLength"] / 1e6, 1),
            "target <= 60 s": "met" if compute <= TARGET_SECONDS else "MISSED",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = [run(args.users, all_known=True), run(args.users, all_known=False)]
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
