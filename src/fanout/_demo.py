"""`fanout demo`: one batch inference job end to end on an in-process emulator.

Until `fanout run` exists this is the placeholder main job the README's quick start runs: it goes
through the same public AWS APIs a user's script would (aioboto3 against the emulator's
endpoints), and it accounts for every user it sent.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import orjson

_POLL_SECONDS = 0.25


def run_demo(*, users: int, num_results: int) -> int:
    from .emulator import Emulator, EmulatorSettings

    with Emulator(EmulatorSettings(job_seconds=0.2)) as emulator:
        info = emulator.info
        summary = anyio.run(_demo, info.to_dict(), users, num_results)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    accounted = summary["users with recommendations"] + summary["users with errors"]
    return 0 if accounted == users and summary["users missing"] == 0 else 1


async def _demo(info: dict[str, Any], users: int, num_results: int) -> dict[str, Any]:
    import aioboto3

    started = time.perf_counter()
    bucket = info["bucket"]
    run = f"demo-{int(time.time() * 1000)}"
    ids = [str(i) for i in range(1, users + 1)]
    body = b"".join(orjson.dumps({"userId": user}) + b"\n" for user in ids)
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"]
    )
    async with (
        session.client("s3", endpoint_url=info["s3_endpoint"]) as s3,
        session.client("personalize", endpoint_url=info["personalize_endpoint"]) as personalize,
    ):
        await s3.put_object(
            Bucket=bucket,
            Key=f"input/{run}/users.jsonl",
            Body=body,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=info["kms_key_arn"],
            BucketKeyEnabled=True,
        )
        uploaded = time.perf_counter()
        arn = (
            await personalize.create_batch_inference_job(
                jobName=run,
                solutionVersionArn=info["solution_versions"]["user-personalization"],
                numResults=num_results,
                roleArn=info["role_arn"],
                jobInput={
                    "s3DataSource": {
                        "path": f"s3://{bucket}/input/{run}/",
                        "kmsKeyArn": info["kms_key_arn"],
                    }
                },
                jobOutput={
                    "s3DataDestination": {
                        "path": f"s3://{bucket}/output/{run}/",
                        "kmsKeyArn": info["kms_key_arn"],
                    }
                },
            )
        )["batchInferenceJobArn"]
        while True:
            job = (await personalize.describe_batch_inference_job(batchInferenceJobArn=arn))[
                "batchInferenceJob"
            ]
            if job["status"] in {"ACTIVE", "CREATE FAILED"}:
                break
            await anyio.sleep(_POLL_SECONDS)
        if job["status"] != "ACTIVE":
            print(f"fanout demo: job failed: {job.get('failureReason')}", file=sys.stderr)
        finished = time.perf_counter()

        seen: dict[str, int] = {}
        errors = 0
        recommendations = 0
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"output/{run}/")
        async for page in pages:
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith(".out"):
                    continue
                response = await s3.get_object(Bucket=bucket, Key=obj["Key"])
                async with response["Body"] as stream:
                    data = await stream.read()
                for line in data.splitlines():
                    record = orjson.loads(line)
                    user = record["input"]["userId"]
                    seen[user] = seen.get(user, 0) + 1
                    if record.get("error"):
                        errors += 1
                    else:
                        recommendations += len(record["output"]["recommendedItems"])
    missing = sum(1 for user in ids if user not in seen)
    return {
        "job": arn,
        "status": job["status"],
        "users sent": users,
        "users with recommendations": len(seen) - errors,
        "users with errors": errors,
        "users missing": missing,
        "recommendations": recommendations,
        "upload seconds": round(uploaded - started, 2),
        "job seconds": round(finished - uploaded, 2),
        "total seconds": round(time.perf_counter() - started, 2),
    }
