"""merge_shard on real jobs: the emulator runs a shard's job over HTTP, fanout's S3 adapter reads
the outputs back, and every ID sent is accounted for exactly once, damaged outputs included."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import polars as pl
import pytest

from fanout.aws import Aws, AwsOptions
from fanout.emulator import Emulator, EmulatorInfo
from fanout.journal import FileSink
from fanout.merge import MergeOptions, MergeSinks, MergeStats, merge_shard, open_results
from fanout.records import InputKind

_runs = itertools.count()


@pytest.fixture
def aws_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorInfo]:
    """Dummy credentials and the emulator's endpoints, as a user sets them."""
    for name, value in emulator.info.environment().items():
        monkeypatch.setenv(name, value)
    yield emulator.info


def aws_options(info: EmulatorInfo) -> AwsOptions:
    return AwsOptions(
        region=info.region,
        endpoint_url=info.personalize_endpoint,
        s3_endpoint_url=info.s3_endpoint,
        max_attempts=2,
    )


async def run_shard(
    clients: Callable[..., Any],
    info: EmulatorInfo,
    recipe: str,
    parts: list[list[dict[str, Any]]],
    **extra: Any,
) -> tuple[str, list[str]]:
    """Upload `parts` as one KMS-encrypted shard, run its job to ACTIVE; return (output path,
    input part URIs), laid out as prepare lays out a run."""
    run = f"merge-{next(_runs)}-{id(_runs) % 10_000}"
    in_key = f"in/{run}/shard-00000/"
    output = f"s3://{info.bucket}/out/{run}/shard-00000/"
    uris = []
    async with clients() as (s3, personalize):
        for number, lines in enumerate(parts):
            key = f"{in_key}part-{number:05d}.jsonl"
            await s3.put_object(
                Bucket=info.bucket,
                Key=key,
                Body=b"".join(orjson.dumps(line) + b"\n" for line in lines),
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=info.kms_key_arn,
            )
            uris.append(f"s3://{info.bucket}/{key}")
        arn = (
            await personalize.create_batch_inference_job(
                jobName=run,
                solutionVersionArn=info.solution_versions[recipe],
                roleArn=info.role_arn,
                jobInput={"s3DataSource": {"path": f"s3://{info.bucket}/{in_key}"}},
                jobOutput={"s3DataDestination": {"path": output, "kmsKeyArn": info.kms_key_arn}},
                **extra,
            )
        )["batchInferenceJobArn"]
        with anyio.fail_after(60):
            while True:
                job = (await personalize.describe_batch_inference_job(batchInferenceJobArn=arn))[
                    "batchInferenceJob"
                ]
                if job["status"] in {"ACTIVE", "CREATE FAILED"}:
                    break
                await anyio.sleep(0.02)
    assert job["status"] == "ACTIVE", job.get("failureReason")
    return output, uris


async def merge_to(
    info: EmulatorInfo, folder: Path, output: str, kind: InputKind, uris: list[str], name: str
) -> MergeStats:
    """Merge one shard into `folder` (results `name`, errors.jsonl, missing.txt, corrupt.jsonl)."""
    async with (
        Aws(aws_options(info)) as aws,
        open_results(folder / name, kind) as results,
        FileSink(folder / "errors.jsonl") as errors,
        FileSink(folder / "missing.txt") as missing,
        FileSink(folder / "corrupt.jsonl") as corrupt,
    ):
        return await merge_shard(
            aws.s3,
            output,
            kind,
            uris,
            MergeSinks(results, errors, missing, corrupt),
            shard=0,
            options=MergeOptions(chunk_bytes=64 * 1024, spill_dir=folder / "spill"),
        )


def read_lines(path: Path) -> list[bytes]:
    with path.open("rb") as handle:
        return handle.read().splitlines()


def accounted(folder: Path, results: list[str]) -> tuple[list[str], list[str], list[str]]:
    errors = [str(orjson.loads(line)["id"]) for line in read_lines(folder / "errors.jsonl")]
    missing = [line.decode() for line in read_lines(folder / "missing.txt")]
    return results, errors, missing


def assert_each_once(sent: list[str], found: tuple[list[str], list[str], list[str]]) -> None:
    results, errors, missing = found
    everything = results + errors + missing
    assert len(everything) == len(set(everything)), "an ID appears twice"
    assert sorted(everything) == sorted(sent)


async def rewrite(clients: Callable[..., Any], info: EmulatorInfo, key: str, body: bytes) -> None:
    async with clients() as (s3, _):
        await s3.put_object(Bucket=info.bucket, Key=key, Body=body)


async def read_object(clients: Callable[..., Any], info: EmulatorInfo, key: str) -> bytes:
    async with clients() as (s3, _):
        response = await s3.get_object(Bucket=info.bucket, Key=key)
        async with response["Body"] as stream:
            return bytes(await stream.read())


async def test_user_personalization_shard_merges_and_reconciles(
    aws_env: EmulatorInfo, clients: Callable[..., Any], tmp_path: Path
) -> None:
    """A two-part shard (known, cold and filter-error users) merges to Parquet with each sent
    ID once in results ∪ errors ∪ missing; then a deleted .out, a corrupt and a truncated line
    are reported and their IDs listed missing."""
    info = aws_env
    users = [str(i) for i in range(1, 2401)] + [f"cold-{i}" for i in range(200)] + ["Zoë-ü"]
    lines: list[dict[str, Any]] = [
        {"userId": user, "filterValues": {"GENRE": '"Comedy","Drama"'}}
        if n % 10
        else {"userId": user}  # no value for the INCLUDE filter: an error line
        for n, user in enumerate(users)
    ]
    half = len(lines) // 2
    output, uris = await run_shard(
        clients,
        info,
        "user-personalization",
        [lines[:half], lines[half:]],
        filterArn=info.filters["fanout-genre-filter"],
        numResults=5,
    )
    clean = tmp_path / "clean"
    clean.mkdir()
    stats = await merge_to(info, clean, output, InputKind.USER, uris, "results.parquet")
    failed = [line["userId"] for line in lines if "filterValues" not in line]
    assert (stats.sent, stats.errors, stats.missing) == (len(users), len(failed), 0)
    assert stats.results == len(users) - len(failed)
    assert (stats.objects, stats.ignored_objects) == (2, 1)  # two .out files and _CHECK
    assert (stats.corrupt, stats.unexpected, stats.duplicated_in_output) == (0, 0, 0)
    frame = pl.read_parquet(clean / "results.parquet")
    assert frame.columns == ["userId", "recommendedItems", "scores"]
    assert frame.height == stats.results
    assert all(
        len(items) == len(scores)
        for items, scores in frame.select("recommendedItems", "scores").iter_rows()
    )
    found = accounted(clean, frame["userId"].to_list())
    assert sorted(found[1]) == sorted(failed)
    assert_each_once(users, found)
    assert read_lines(clean / "corrupt.jsonl") == []
    assert list((clean / "spill").iterdir()) == []

    # Damage the outputs: drop the second .out, corrupt and truncate the first.
    bucket_prefix = output.removeprefix(f"s3://{info.bucket}/")
    first = f"{bucket_prefix}part-00000.jsonl.out"
    async with clients() as (s3, _):
        await s3.delete_object(Bucket=info.bucket, Key=f"{bucket_prefix}part-00001.jsonl.out")
    body = (await read_object(clients, info, first)).splitlines()
    truncated_user = orjson.loads(body[-1])["input"]["userId"]
    body.insert(10, b'{"input":{"userId":"1"},"output":{"recommendedItems":["a"],"scores":["x"]}}')
    body[-1] = body[-1][: len(body[-1]) // 2]
    await rewrite(clients, info, first, b"\n".join(body))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    stats = await merge_to(info, damaged, output, InputKind.USER, uris, "results.jsonl")
    second_part = {line["userId"] for line in lines[half:]}
    missing = {line.decode() for line in read_lines(damaged / "missing.txt")}
    assert missing == second_part | {truncated_user}
    assert (stats.missing, stats.corrupt, stats.objects) == (len(missing), 2, 1)
    reports = [orjson.loads(line) for line in read_lines(damaged / "corrupt.jsonl")]
    assert [r["line"] for r in reports] == [11, len(body)]
    assert {r["object"] for r in reports} == {f"s3://{info.bucket}/{first}"}
    results = [str(orjson.loads(line)["userId"]) for line in read_lines(damaged / "results.jsonl")]
    assert_each_once(users, accounted(damaged, results))


async def test_related_items_shard_merges_to_csv_with_unknown_items_as_errors(
    aws_env: EmulatorInfo, clients: Callable[..., Any], tmp_path: Path
) -> None:
    """A SIMS shard keyed by itemId: unknown items are error lines, results are CSV rows; a
    truncated object leaves its unread IDs missing."""
    info = aws_env
    items = [str(i) for i in range(1, 901)] + [f"nope-{i}" for i in range(100)]
    lines = [{"itemId": item} for item in items]
    output, uris = await run_shard(clients, info, "sims", [lines], numResults=4)
    clean = tmp_path / "clean"
    clean.mkdir()
    stats = await merge_to(info, clean, output, InputKind.ITEM, uris, "results.csv")
    assert (stats.sent, stats.results, stats.errors, stats.missing) == (1000, 900, 100, 0)
    with (clean / "results.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["itemId", "recommendedItems", "scores"]
    assert all(len(row[1].split("|")) == 4 and row[2] == "" for row in rows[1:])
    found = accounted(clean, [row[0] for row in rows[1:]])
    assert all(item.startswith("nope-") for item in found[1])
    assert_each_once(items, found)

    key = output.removeprefix(f"s3://{info.bucket}/") + "part-00000.jsonl.out"
    body = await read_object(clients, info, key)
    cut = body[: len(body) // 3]
    if body[len(cut) : len(cut) + 1] == b"\n":  # a whole last line, only its \n cut: cut into it
        cut = cut[:-1]
    await rewrite(clients, info, key, cut)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    stats = await merge_to(info, damaged, output, InputKind.ITEM, uris, "results.jsonl")
    complete = [orjson.loads(line) for line in cut.split(b"\n")[:-1]]
    answered = {line["input"]["itemId"] for line in complete}
    missing = {line.decode() for line in read_lines(damaged / "missing.txt")}
    assert missing == set(items) - answered
    assert stats.corrupt == (0 if cut.endswith(b"\n") else 1)
    results = [str(orjson.loads(line)["itemId"]) for line in read_lines(damaged / "results.jsonl")]
    assert_each_once(items, accounted(damaged, results))
