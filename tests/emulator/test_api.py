"""The emulator's Personalize and S3 endpoints driven with aioboto3 over HTTP, as a user would."""

from __future__ import annotations

import base64
import hashlib
import itertools
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import pytest
from botocore.exceptions import ClientError

from fanout._shapes import ServiceModel
from fanout.emulator import Emulator, EmulatorInfo, EmulatorSettings

_names = itertools.count()
SHAPES = ServiceModel("personalize")

NO_RETRY = {"mode": "standard", "max_attempts": 1}


def unique(prefix: str = "job") -> str:
    return f"{prefix}-{next(_names)}-{id(_names) % 10_000}"


async def put_lines(
    s3: Any, info: EmulatorInfo, key: str, lines: list[object], **extra: Any
) -> None:
    body = b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )
    await s3.put_object(Bucket=info.bucket, Key=key, Body=body, **extra)


def job_request(
    info: EmulatorInfo, name: str, recipe: str, prefix: str, **extra: Any
) -> dict[str, Any]:
    return {
        "jobName": name,
        "solutionVersionArn": info.solution_versions[recipe],
        "roleArn": info.role_arn,
        "jobInput": {"s3DataSource": {"path": f"s3://{info.bucket}/{prefix}/in/"}},
        "jobOutput": {"s3DataDestination": {"path": f"s3://{info.bucket}/{prefix}/out/"}},
        **extra,
    }


async def wait_terminal(personalize: Any, arn: str, segment: bool = False) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            if segment:
                job = (await personalize.describe_batch_segment_job(batchSegmentJobArn=arn))[
                    "batchSegmentJob"
                ]
            else:
                job = (await personalize.describe_batch_inference_job(batchInferenceJobArn=arn))[
                    "batchInferenceJob"
                ]
            if job["status"] in {"ACTIVE", "CREATE FAILED"}:
                return dict(job)
            await anyio.sleep(0.02)


async def read_outputs(s3: Any, info: EmulatorInfo, prefix: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    listing = await s3.list_objects_v2(Bucket=info.bucket, Prefix=f"{prefix}/out/")
    for obj in listing.get("Contents", []):
        response = await s3.get_object(Bucket=info.bucket, Key=obj["Key"])
        async with response["Body"] as stream:
            data = await stream.read()
        found[obj["Key"]] = [orjson.loads(line) for line in data.splitlines() if line]
    return found


async def run_job(
    clients: Callable[..., Any], info: EmulatorInfo, recipe: str, lines: list[object], **extra: Any
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Upload `lines`, run one job of `recipe` on them, return (describe body, outputs by key)."""
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/part-00000.jsonl", lines)
        request = job_request(info, unique(), recipe, prefix, **extra)
        arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
        job = await wait_terminal(personalize, arn)
        outputs = await read_outputs(s3, info, prefix)
    return job, outputs


def raw_call(
    info: EmulatorInfo, operation: str, body: object, *, signed: bool = True
) -> tuple[int, Any]:
    """POST one JSON 1.1 request by hand and return (status, parsed body) without botocore."""
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"AmazonPersonalize.{operation}",
    }
    if signed:
        headers["Authorization"] = (
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/personalize/aws4_request"
        )
    request = urllib.request.Request(
        info.personalize_endpoint + "/", data=orjson.dumps(body), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
            assert response.headers["x-amzn-RequestId"]
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


# -- jobs really run ------------------------------------------------------------------------------


async def test_user_personalization_job_writes_one_line_per_user(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """A job reads KMS-encrypted input, writes one scored line per user, shuffled, and _CHECK."""
    info = emulator.info
    users = [str(i) for i in range(1, 301)] + ["never-seen-user"]
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(
            s3,
            info,
            f"{prefix}/in/users.jsonl",
            [{"userId": u} for u in users],
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=info.kms_key_arn,
        )
        request = job_request(info, unique(), "user-personalization", prefix, numResults=7)
        request["jobOutput"]["s3DataDestination"]["kmsKeyArn"] = info.kms_key_arn
        arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
        prefix_arn = f"arn:aws:personalize:{info.region}:{info.account_id}:batch-inference-job/"
        assert arn == prefix_arn + request["jobName"]
        job = await wait_terminal(personalize, arn)
        assert job["status"] == "ACTIVE", job.get("failureReason")
        head = await s3.head_object(Bucket=info.bucket, Key=f"{prefix}/out/users.jsonl.out")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == info.kms_key_arn
        outputs = await read_outputs(s3, info, prefix)
    assert set(outputs) == {f"{prefix}/out/users.jsonl.out", f"{prefix}/out/_CHECK"}
    lines = outputs[f"{prefix}/out/users.jsonl.out"]
    assert sorted(line["input"]["userId"] for line in lines) == sorted(users)
    assert [line["input"]["userId"] for line in lines] != users, "output must not keep input order"
    for line in lines:
        assert line["error"] is None
        items, scores = line["output"]["recommendedItems"], line["output"]["scores"]
        assert len(items) == len(scores) == 7
        assert scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores)


async def test_scores_use_java_number_format(emulator: Emulator) -> None:
    """Small scores are written as the real service writes them (e.g. 3.773E-4)."""
    from fanout.emulator._jobs import _java_numbers

    assert _java_numbers(b'{"scores":[0.0152238,0.0003773,0.00005,-0.0001,1e-7]}') == (
        b'{"scores":[0.0152238,3.773E-4,5.0E-5,-1.0E-4,1E-7]}'
    )


async def test_popularity_count_has_no_scores_and_same_items(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """Popularity-Count gives every user the same items and no scores."""
    job, outputs = await run_job(
        clients, emulator.info, "popularity-count", [{"userId": "1"}, {"userId": "2"}], numResults=5
    )
    assert job["status"] == "ACTIVE"
    lines = next(v for k, v in outputs.items() if k.endswith(".out"))
    assert lines[0]["output"] == lines[1]["output"]
    assert set(lines[0]["output"]) == {"recommendedItems"}


async def test_personalized_ranking_appends_unknown_items(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """Personalized ranking re-ranks itemList with scores; unknown items come last."""
    job, outputs = await run_job(
        clients,
        emulator.info,
        "personalized-ranking",
        [{"userId": "3", "itemList": ["no-such-item", "1", "2", "3"]}],
    )
    assert job["status"] == "ACTIVE"
    (line,) = next(v for k, v in outputs.items() if k.endswith(".out"))
    assert line["input"]["itemList"] == ["no-such-item", "1", "2", "3"]
    assert sorted(line["output"]["recommendedItems"]) == sorted(["no-such-item", "1", "2", "3"])
    assert line["output"]["recommendedItems"][-1] == "no-such-item"
    assert len(line["output"]["scores"]) == 4


async def test_themes_on_similar_items(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """THEME_GENERATION on Similar-Items writes a theme and relevance scores per item."""
    job, outputs = await run_job(
        clients,
        emulator.info,
        "similar-items",
        [{"itemId": "1"}, {"itemId": "2"}],
        numResults=5,
        batchInferenceJobMode="THEME_GENERATION",
        themeGenerationConfig={"fieldsForThemeGeneration": {"itemName": "TITLE"}},
    )
    assert job["status"] == "ACTIVE", job.get("failureReason")
    assert job["batchInferenceJobMode"] == "THEME_GENERATION"
    for line in next(v for k, v in outputs.items() if k.endswith(".out")):
        output = line["output"]
        assert isinstance(output["theme"], str) and output["theme"]
        assert len(output["itemsThemeRelevanceScores"]) == len(output["recommendedItems"]) == 5


async def test_theme_generation_limits_records_per_file(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """More than 100 records in one file fails a THEME_GENERATION job."""
    job, _ = await run_job(
        clients,
        emulator.info,
        "similar-items",
        [{"itemId": str(i)} for i in range(1, 103)],
        batchInferenceJobMode="THEME_GENERATION",
        themeGenerationConfig={"fieldsForThemeGeneration": {"itemName": "TITLE"}},
    )
    assert job["status"] == "CREATE FAILED"
    assert "100" in job["failureReason"]


async def test_related_items_unknown_item_is_an_error_line(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """SIMS gives related items without scores, and an error line for an unknown item."""
    job, outputs = await run_job(
        clients, emulator.info, "sims", [{"itemId": "5"}, {"itemId": "nope"}], numResults=4
    )
    assert job["status"] == "ACTIVE"
    by_item = {
        line["input"]["itemId"]: line
        for line in next(v for k, v in outputs.items() if k.endswith(".out"))
    }
    assert len(by_item["5"]["output"]["recommendedItems"]) == 4
    assert "scores" not in by_item["5"]["output"]
    assert by_item["nope"]["output"] == {"recommendedItems": []}
    assert "nope" in by_item["nope"]["error"]


async def test_filter_values_restrict_items(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """A filter with a $GENRE placeholder keeps only items of the genres each line asks for."""
    info = emulator.info
    genres = emulator.service.model.catalog.item_attributes["GENRES"]
    index = emulator.service.model.catalog.item_index
    job, outputs = await run_job(
        clients,
        info,
        "user-personalization",
        [
            {"userId": "10", "filterValues": {"GENRE": '"Comedy"'}},
            {"userId": "11", "filterValues": {"GENRE": '"Horror","Drama"'}},
            {"userId": "12", "filterValues": {"GENRE": "Horror"}},
            {"userId": "13"},
        ],
        filterArn=info.filters["fanout-genre-filter"],
        numResults=10,
    )
    assert job["status"] == "ACTIVE"
    by_user = {
        line["input"]["userId"]: line
        for line in next(v for k, v in outputs.items() if k.endswith(".out"))
    }
    for user, wanted in (("10", {"Comedy"}), ("11", {"Horror", "Drama"})):
        items = by_user[user]["output"]["recommendedItems"]
        assert items
        assert all(wanted & set(genres[index[i]].split("|")) for i in items)
    assert by_user["12"]["error"], "an unquoted filter value is an error line"
    assert by_user["13"]["error"], "INCLUDE filter without its value is an error line"


async def test_invalid_lines_become_error_lines(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """Malformed JSON, a missing userId, a numeric or over-long ID each give an error line."""
    lines: list[object] = [
        b"{not json",
        {"itemId": "1"},
        {"userId": 42},
        {"userId": "x" * 257},
        {"userId": "1"},
    ]
    job, outputs = await run_job(clients, emulator.info, "user-personalization", lines)
    assert job["status"] == "ACTIVE"
    out = next(v for k, v in outputs.items() if k.endswith(".out"))
    assert len(out) == 5
    errors = [line for line in out if line["error"] is not None]
    assert len(errors) == 4
    assert all(line["output"] == {"recommendedItems": []} for line in errors)
    assert any(
        "Required fields for the provided recipe are userId" in line["error"] for line in errors
    )


async def test_prefix_without_slash_reads_sibling_prefixes(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """An input path without a trailing / matches sibling prefixes, as S3 prefixes do."""
    info = emulator.info
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/a/one.jsonl", [{"userId": "1"}])
        await put_lines(s3, info, f"{prefix}/in/ab/two.jsonl", [{"userId": "2"}])
        await put_lines(s3, info, f"{prefix}/in/b/three.jsonl", [{"userId": "3"}])
        request = job_request(info, unique(), "user-personalization", prefix)
        request["jobInput"]["s3DataSource"]["path"] = f"s3://{info.bucket}/{prefix}/in/a"
        arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
        assert (await wait_terminal(personalize, arn))["status"] == "ACTIVE"
        outputs = await read_outputs(s3, info, prefix)
    assert sorted(outputs) == sorted(
        f"{prefix}/out/{name}" for name in ("one.jsonl.out", "two.jsonl.out", "_CHECK")
    )


async def test_inputs_with_one_base_name_fail_rather_than_overwrite(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """Two input files with the same base name would write one `.out` (base-name naming): the
    job fails naming both, rather than one output overwriting the other; with relative naming
    each keeps its path."""
    info = emulator.info
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/a/users.jsonl", [{"userId": "1"}])
        await put_lines(s3, info, f"{prefix}/in/b/users.jsonl", [{"userId": "2"}])
        request = job_request(info, unique(), "user-personalization", prefix)
        arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
        job = await wait_terminal(personalize, arn)
        assert job["status"] == "CREATE FAILED"
        assert f"{prefix}/in/a/users.jsonl and {prefix}/in/b/users.jsonl" in job["failureReason"]

        emulator.settings.output_naming = "relative"
        try:
            request = job_request(info, unique(), "user-personalization", prefix)
            arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
            assert (await wait_terminal(personalize, arn))["status"] == "ACTIVE"
        finally:
            emulator.settings.output_naming = "basename"
        outputs = await read_outputs(s3, info, prefix)
    assert sorted(outputs) == sorted(
        f"{prefix}/out/{name}" for name in ("a/users.jsonl.out", "b/users.jsonl.out", "_CHECK")
    )


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        ("empty", "Input data not found"),
        ("nested-output", "Invalid S3 output path"),
        ("too-many-files", "files"),
        ("no-output-bucket", "Failed to write to the output location s3://no-such-bkt/"),
    ],
)
async def test_jobs_fail_with_a_reason(
    emulator: Emulator, clients: Callable[..., Any], layout: str, reason: str
) -> None:
    """Missing input, output inside input and too many files end CREATE FAILED with a reason."""
    info = emulator.info
    prefix = unique("p")
    request = job_request(info, unique(), "user-personalization", prefix)
    async with clients() as (s3, personalize):
        if layout == "nested-output":
            await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
            request["jobOutput"]["s3DataDestination"]["path"] = (
                f"s3://{info.bucket}/{prefix}/in/out/"
            )
        if layout == "no-output-bucket":  # it said "Internal error in the fanout emulator"
            await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
            request["jobOutput"]["s3DataDestination"]["path"] = "s3://no-such-bkt/o/"
        if layout == "too-many-files":
            for i in range(3):
                await put_lines(s3, info, f"{prefix}/in/{i}.jsonl", [{"userId": "1"}])
        old = emulator.settings.max_input_files
        emulator.settings.max_input_files = 2
        try:
            arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
            job = await wait_terminal(personalize, arn)
        finally:
            emulator.settings.max_input_files = old
    assert job["status"] == "CREATE FAILED"
    assert reason in job["failureReason"]


async def test_injected_failures(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """With fail_rate 1 every job ends CREATE FAILED with a failureReason."""
    emulator.settings.fail_rate = 1.0
    try:
        job, _ = await run_job(clients, emulator.info, "user-personalization", [{"userId": "1"}])
    finally:
        emulator.settings.fail_rate = 0.0
    assert job["status"] == "CREATE FAILED"
    assert "try again" in job["failureReason"]


# -- segment jobs ---------------------------------------------------------------------------------


async def test_segment_jobs_return_user_lists(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """Item-Affinity and Item-Attribute-Affinity jobs write usersList segments."""
    info = emulator.info
    async with clients() as (s3, personalize):
        for recipe, line in (
            ("item-affinity", {"itemId": "1"}),
            ("item-attribute-affinity", {"itemAttributes": 'ITEMS.GENRES = "Comedy"'}),
        ):
            prefix = unique("p")
            await put_lines(s3, info, f"{prefix}/in/q.jsonl", [line])
            request = job_request(info, unique(), recipe, prefix, numResults=30)
            arn = (await personalize.create_batch_segment_job(**request))["batchSegmentJobArn"]
            job = await wait_terminal(personalize, arn, segment=True)
            assert job["status"] == "ACTIVE", job.get("failureReason")
            outputs = await read_outputs(s3, info, prefix)
            (result,) = outputs[f"{prefix}/out/q.jsonl.out"]
            assert result["input"] == line
            assert len(result["output"]["usersList"]) == 30
            assert result["error"] is None


async def test_segment_job_rejects_inference_recipe(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """A segment job on a non-segmentation recipe (and vice versa) is InvalidInputException."""
    info = emulator.info
    async with clients() as (_, personalize):
        with pytest.raises(ClientError) as caught:
            await personalize.create_batch_segment_job(
                **job_request(info, unique(), "user-personalization", "x")
            )
        assert error_code(caught.value) == "InvalidInputException"
        with pytest.raises(ClientError) as caught:
            await personalize.create_batch_inference_job(
                **job_request(info, unique(), "item-affinity", "x")
            )
        assert error_code(caught.value) == "InvalidInputException"
        with pytest.raises(ClientError) as caught:
            await personalize.create_batch_inference_job(
                **job_request(info, unique(), "trending-now", "x")
            )
        assert error_code(caught.value) == "InvalidInputException"


# -- control-plane errors -------------------------------------------------------------------------


async def test_create_errors(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """Reused names, bad names, unknown ARNs, too many tags and bad numResults are refused."""
    info = emulator.info
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
        name = unique()
        await personalize.create_batch_inference_job(
            **job_request(info, name, "user-personalization", prefix)
        )
        cases: list[tuple[dict[str, Any], str, str]] = [
            (
                job_request(info, name, "user-personalization", prefix),
                "ResourceAlreadyExistsException",
                name,
            ),
            (
                job_request(info, "j" * 64, "user-personalization", prefix),
                "InvalidInputException",
                "63",
            ),
            (
                job_request(info, "-starts-with-dash", "user-personalization", prefix),
                "InvalidInputException",
                "pattern",
            ),
            (
                {
                    **job_request(info, unique(), "user-personalization", prefix),
                    "solutionVersionArn": info.solution_versions["sims"] + "0",
                },
                "ResourceNotFoundException",
                "solution version",
            ),
            (
                job_request(
                    info,
                    unique(),
                    "user-personalization",
                    prefix,
                    filterArn=info.filters["fanout-genre-filter"] + "x",
                ),
                "ResourceNotFoundException",
                "filter",
            ),
            (
                job_request(
                    info,
                    unique(),
                    "user-personalization",
                    prefix,
                    tags=[{"tagKey": f"k{i}", "tagValue": "v"} for i in range(51)],
                ),
                "TooManyTagsException",
                "50",
            ),
            (
                job_request(info, unique(), "user-personalization", prefix, numResults=501),
                "InvalidInputException",
                "500",
            ),
            (
                job_request(
                    info,
                    unique(),
                    "sims",
                    prefix,
                    batchInferenceJobMode="THEME_GENERATION",
                    themeGenerationConfig={"fieldsForThemeGeneration": {"itemName": "TITLE"}},
                ),
                "InvalidInputException",
                "Similar-Items",
            ),
            (
                {
                    **job_request(info, unique(), "user-personalization", prefix),
                    "roleArn": f"arn:aws:iam::{info.account_id}:role/missing",
                },
                "InvalidInputException",
                "role",
            ),
            (
                {
                    **job_request(info, unique(), "user-personalization", prefix),
                    "roleArn": info.role_arn.replace(info.account_id, "999999999999"),
                },
                "InvalidInputException",
                "not in this account",
            ),
            (
                {
                    **job_request(info, unique(), "user-personalization", prefix),
                    "roleArn": info.role_arn.replace(":role/", ":role/service-role/"),
                },
                "InvalidInputException",
                "does not exist",
            ),
            (
                job_request(
                    info,
                    unique(),
                    "user-personalization",
                    prefix,
                    tags=[{"tagKey": "a", "tagValue": "b"}, {"tagKey": "a", "tagValue": "c"}],
                ),
                "InvalidInputException",
                "Duplicate tag keys",
            ),
        ]
        for request, code, text in cases:
            with pytest.raises(ClientError) as caught:
                await personalize.create_batch_inference_job(**request)
            assert error_code(caught.value) == code, request
            assert text in caught.value.response["Error"]["Message"]
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

        themes = job_request(
            info,
            unique(),
            "similar-items",
            prefix,
            batchInferenceJobMode="THEME_GENERATION",
            themeGenerationConfig={"fieldsForThemeGeneration": {"itemName": "TITLE"}},
        )
        emulator.settings.theme_regions = ["us-west-2"]  # not this emulator's region
        try:
            with pytest.raises(ClientError) as caught:
                await personalize.create_batch_inference_job(**themes)
        finally:
            emulator.settings.theme_regions = ["us-east-1", "us-west-2", "ap-northeast-1"]
        assert "THEME_GENERATION is not available in us-east-1" in str(caught.value)


def test_a_request_signed_for_another_region_finds_nothing(emulator: Emulator) -> None:
    """The emulator serves one region; in any other, as on AWS, nothing exists: lists are
    empty and a named resource is not found (a wrong --region passed locally before)."""
    import boto3

    info = emulator.info
    elsewhere = boto3.client(
        "personalize",
        endpoint_url=info.personalize_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert elsewhere.list_batch_inference_jobs()["batchInferenceJobs"] == []
    with pytest.raises(ClientError) as caught:
        elsewhere.describe_solution_version(solutionVersionArn=info.solution_versions["sims"])
    assert error_code(caught.value) == "ResourceNotFoundException"
    assert "in eu-west-1" in caught.value.response["Error"]["Message"]


async def test_ranking_influence_is_validated_and_echoed(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """batchInferenceJobConfig.rankingInfluence (newer than the runtime botocore) is checked
    against its enum keys and 0..1 weights, and Describe returns it as it was given."""
    info = emulator.info
    prefix = unique("p")
    async with clients() as (s3, _):
        await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])

    def create(influence: dict[str, Any]) -> tuple[int, Any]:
        config = {"rankingInfluence": influence}
        request = job_request(
            info, unique(), "user-personalization", prefix, batchInferenceJobConfig=config
        )
        return raw_call(info, "CreateBatchInferenceJob", request)

    for influence, text in [
        ({"NOVELTY": 0.5}, "Map keys must satisfy constraint: [Member must satisfy enum value set"),
        ({"POPULARITY": 1.5}, "Member must have value less than or equal to 1"),
    ]:
        status, body = create(influence)
        assert (status, body["__type"]) == (400, "InvalidInputException"), body
        assert "batchInferenceJobConfig.rankingInfluence" in body["message"]
        assert text in body["message"]
    status, body = create({"POPULARITY": 0.4, "FRESHNESS": 0.0})
    assert status == 200, body
    status, described = raw_call(
        info, "DescribeBatchInferenceJob", {"batchInferenceJobArn": body["batchInferenceJobArn"]}
    )
    assert status == 200
    job = described["batchInferenceJob"]
    assert job["batchInferenceJobConfig"] == {
        "rankingInfluence": {"POPULARITY": 0.4, "FRESHNESS": 0.0}
    }
    assert SHAPES.validate_output("DescribeBatchInferenceJob", described) == []


async def test_kms_key_must_exist_for_sse_kms_uploads(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """S3 refuses an SSE-KMS upload naming a key that does not exist."""
    info = emulator.info
    missing = info.kms_key_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    async with clients() as (s3, _):
        with pytest.raises(ClientError) as caught:
            await s3.put_object(
                Bucket=info.bucket,
                Key="k",
                Body=b"x",
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=missing,
            )
    assert error_code(caught.value) == "KMS.NotFoundException"


async def test_sse_headers_are_checked_and_the_key_is_kept_by_its_arn(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """As S3: a key ID without aws:kms, or an unknown method, is InvalidArgument (the object
    was stored unencrypted, or with 'aws:foo'); a key named by alias or bare ID is kept, and
    given back, as its ARN (it was echoed as named)."""
    info = emulator.info
    key_id = info.kms_key_arn.rsplit("/", 1)[1]
    async with clients(retries=NO_RETRY) as (s3, _):
        for wrong in ({"SSEKMSKeyId": info.kms_key_arn}, {"ServerSideEncryption": "aws:foo"}):
            with pytest.raises(ClientError) as caught:
                await s3.put_object(Bucket=info.bucket, Key=unique("sse"), Body=b"x", **wrong)
            assert error_code(caught.value) == "InvalidArgument"
        for named in ("alias/fanout-emulator", key_id):
            key = unique("named")
            await s3.put_object(
                Bucket=info.bucket, Key=key, Body=b"x", ServerSideEncryption="aws:kms",
                SSEKMSKeyId=named,
            )  # fmt: skip
            head = await s3.head_object(Bucket=info.bucket, Key=key)
            assert head["SSEKMSKeyId"] == info.kms_key_arn


async def test_a_bucket_key_asked_for_a_multipart_upload_is_kept(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """helper-33: an object uploaded in parts with BucketKeyEnabled showed none in HEAD (moto
    drops it when the upload completes), one PUT did; S3 keeps it either way. An upload that
    did not ask has none."""
    info = emulator.info
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": info.kms_key_arn}
    async with clients(retries=NO_RETRY) as (s3, _):
        for asked in (True, False):
            key = unique("bucket-key")
            extra = {"BucketKeyEnabled": True} if asked else {}
            upload = await s3.create_multipart_upload(Bucket=info.bucket, Key=key, **sse, **extra)
            part = await s3.upload_part(
                Bucket=info.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                Body=b"x" * 10,
            )  # fmt: skip
            await s3.complete_multipart_upload(
                Bucket=info.bucket, Key=key, UploadId=upload["UploadId"],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            )  # fmt: skip
            head = await s3.head_object(Bucket=info.bucket, Key=key)
            assert head["SSEKMSKeyId"] == info.kms_key_arn
            assert head.get("BucketKeyEnabled", False) is asked


async def test_a_continuation_token_s3_never_gave_is_invalid_argument(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """moto answered an unknown ListObjectsV2 token with a 500 (retried, with a traceback);
    S3 says InvalidArgument. A token it gave still pages."""
    info = emulator.info
    prefix = unique("paged")
    async with clients(retries=NO_RETRY) as (s3, _):
        for i in range(3):
            await s3.put_object(Bucket=info.bucket, Key=f"{prefix}/{i}", Body=b"x")
        with pytest.raises(ClientError) as caught:
            await s3.list_objects_v2(Bucket=info.bucket, ContinuationToken="garbage")
        assert error_code(caught.value) == "InvalidArgument"
        first = await s3.list_objects_v2(Bucket=info.bucket, Prefix=prefix, MaxKeys=2)
        token = first["NextContinuationToken"]
        rest = await s3.list_objects_v2(Bucket=info.bucket, Prefix=prefix, ContinuationToken=token)
        assert [o["Key"] for o in rest["Contents"]] == [f"{prefix}/2"]


@pytest.mark.parametrize(
    ("algorithm", "right"),
    [
        ("SHA256", base64.b64encode(hashlib.sha256(b"body").digest()).decode()),
        ("CRC32", base64.b64encode(zlib.crc32(b"body").to_bytes(4, "big")).decode()),
    ],
    ids=["SHA256", "CRC32"],
)
async def test_a_write_whose_checksum_does_not_match_is_refused(
    emulator: Emulator, clients: Callable[..., Any], algorithm: str, right: str
) -> None:
    """S3 checks a write's x-amz-checksum-* header against its body: BadDigest, nothing stored;
    the right checksum is stored and given back with ChecksumMode=ENABLED."""
    info = emulator.info
    key = unique("checked")
    wrong = base64.b64encode(bytes(len(base64.b64decode(right)))).decode()
    async with clients(retries=NO_RETRY) as (s3, _):  # botocore retries BadDigest
        with pytest.raises(ClientError) as caught:
            await s3.put_object(
                Bucket=info.bucket, Key=key, Body=b"body", **{f"Checksum{algorithm}": wrong}
            )
        assert error_code(caught.value) == "BadDigest"
        assert f"The {algorithm} you specified did not match" in str(caught.value)
        with pytest.raises(ClientError):
            await s3.head_object(Bucket=info.bucket, Key=key)
        await s3.put_object(
            Bucket=info.bucket,
            Key=key,
            Body=b"body",
            ChecksumAlgorithm=algorithm,
            **{f"Checksum{algorithm}": right},
        )
        head = await s3.head_object(Bucket=info.bucket, Key=key, ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == right


async def test_content_md5_is_checked_and_a_multipart_checksum_is_the_objects(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """A wrong Content-MD5 is BadDigest, one that is no MD5 InvalidDigest; the whole-object
    CRC32 a CompleteMultipartUpload carries is the object's, not its XML body's: accepted. An
    object in parts reports its checksum as S3 does: FULL_OBJECT as given, else composite."""
    info = emulator.info
    key = unique("md5")
    right = base64.b64encode(hashlib.md5(b"body").digest()).decode()
    async with clients(retries=NO_RETRY) as (s3, _):  # botocore retries BadDigest
        for md5, code in ((base64.b64encode(bytes(16)).decode(), "BadDigest"),
                          ("bm90LWFuLW1kNQ==", "InvalidDigest")):  # fmt: skip
            with pytest.raises(ClientError) as caught:
                await s3.put_object(Bucket=info.bucket, Key=key, Body=b"body", ContentMD5=md5)
            assert error_code(caught.value) == code
        await s3.put_object(Bucket=info.bucket, Key=key, Body=b"body", ContentMD5=right)

        data = b"x" * (5 * 1024 * 1024) + b"tail"
        whole = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        upload = await s3.create_multipart_upload(
            Bucket=info.bucket, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
        )
        parts = []
        for number, chunk in enumerate((data[: 5 * 1024 * 1024], data[5 * 1024 * 1024 :]), 1):
            crc = base64.b64encode(zlib.crc32(chunk).to_bytes(4, "big")).decode()
            answer = await s3.upload_part(
                Bucket=info.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                Body=chunk, ChecksumCRC32=crc,
            )  # fmt: skip
            parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": crc})
        await s3.complete_multipart_upload(
            Bucket=info.bucket, Key=key, UploadId=upload["UploadId"], ChecksumCRC32=whole,
            ChecksumType="FULL_OBJECT", MultipartUpload={"Parts": parts},
        )  # fmt: skip
        got = await s3.get_object(Bucket=info.bucket, Key=key)
        assert await got["Body"].read() == data
        head = await s3.head_object(Bucket=info.bucket, Key=key, ChecksumMode="ENABLED")
        assert (head["ChecksumCRC32"], head["ChecksumType"]) == (whole, "FULL_OBJECT")

        # In parts with no ChecksumType: S3's composite checksum, `-N` and COMPOSITE
        composite = unique("composite")
        upload = await s3.create_multipart_upload(
            Bucket=info.bucket, Key=composite, ChecksumAlgorithm="SHA256"
        )
        answer = await s3.upload_part(
            Bucket=info.bucket, Key=composite, UploadId=upload["UploadId"], PartNumber=1,
            Body=b"one", ChecksumAlgorithm="SHA256",
        )  # fmt: skip
        await s3.complete_multipart_upload(
            Bucket=info.bucket, Key=composite, UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": answer["ETag"],
                                        "ChecksumSHA256": answer["ChecksumSHA256"]}]},
        )  # fmt: skip
        head = await s3.head_object(Bucket=info.bucket, Key=composite, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"].endswith("-1") and head["ChecksumType"] == "COMPOSITE"


async def test_quota_counts_non_terminal_jobs(clients: Callable[..., Any]) -> None:
    """Past the quota of non-terminal jobs, create answers LimitExceededException."""
    with Emulator(EmulatorSettings(quota=2, job_seconds=1.0)) as small:
        info = small.info
        prefix = unique("p")
        async with clients(info) as (s3, personalize):
            await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
            arns = [
                (
                    await personalize.create_batch_inference_job(
                        **job_request(info, unique(), "user-personalization", prefix)
                    )
                )["batchInferenceJobArn"]
                for _ in range(2)
            ]
            with pytest.raises(ClientError) as caught:
                await personalize.create_batch_inference_job(
                    **job_request(info, unique(), "user-personalization", prefix)
                )
            assert error_code(caught.value) == "LimitExceededException"
            assert "More than 2 resources" in caught.value.response["Error"]["Message"]
            for arn in arns:
                await wait_terminal(personalize, arn)
            await personalize.create_batch_inference_job(
                **job_request(info, unique(), "user-personalization", prefix)
            )
        assert small.service.max_in_flight["inference"] == 2


async def test_throttling_on_both_endpoints(
    emulator: Emulator, clients: Callable[..., Any]
) -> None:
    """throttle_rate answers Personalize calls LimitExceededException and S3 calls SlowDown."""
    info = emulator.info
    emulator.settings.throttle_rate = 1.0
    try:
        async with clients(retries={"max_attempts": 1, "mode": "legacy"}) as (s3, personalize):
            with pytest.raises(ClientError) as caught:
                await personalize.list_batch_inference_jobs()
            assert error_code(caught.value) == "LimitExceededException"
            with pytest.raises(ClientError) as caught:
                await s3.put_object(Bucket=info.bucket, Key="throttled", Body=b"x")
            assert error_code(caught.value) == "SlowDown"
    finally:
        emulator.settings.throttle_rate = 0.0


async def test_list_pagination_and_filter(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """ListBatchInferenceJobs pages with maxResults/nextToken and filters by solution version."""
    info = emulator.info
    prefix = unique("p")
    version = info.solution_versions["user-personalization-v2"]
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
        created = []
        for _ in range(3):
            request = job_request(info, unique(), "user-personalization-v2", prefix)
            created.append(
                (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
            )
        seen: list[str] = []
        paginator = personalize.get_paginator("list_batch_inference_jobs")
        async for page in paginator.paginate(
            solutionVersionArn=version, PaginationConfig={"PageSize": 2}
        ):
            assert len(page["batchInferenceJobs"]) <= 2
            seen.extend(j["batchInferenceJobArn"] for j in page["batchInferenceJobs"])
        assert set(created) <= set(seen)
        assert len(seen) == len(set(seen))
        with pytest.raises(ClientError) as caught:
            await personalize.list_batch_inference_jobs(nextToken="bogus")
        assert error_code(caught.value) == "InvalidNextTokenException"
        forged = base64.urlsafe_b64encode(orjson.dumps({"s": "inference:None", "o": -1})).decode()
        with pytest.raises(ClientError) as caught:
            await personalize.list_batch_inference_jobs(nextToken=forged)
        assert error_code(caught.value) == "InvalidNextTokenException"
        with pytest.raises(ClientError) as caught:
            await personalize.list_batch_inference_jobs(maxResults=101)
        assert error_code(caught.value) == "InvalidInputException"


async def test_tags(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """Tags given at create are listed; TagResource adds more."""
    info = emulator.info
    prefix = unique("p")
    async with clients() as (s3, personalize):
        await put_lines(s3, info, f"{prefix}/in/x.jsonl", [{"userId": "1"}])
        request = job_request(
            info,
            unique(),
            "user-personalization",
            prefix,
            tags=[{"tagKey": "team", "tagValue": "recs"}],
        )
        arn = (await personalize.create_batch_inference_job(**request))["batchInferenceJobArn"]
        await personalize.tag_resource(
            resourceArn=arn, tags=[{"tagKey": "env", "tagValue": "nightly"}]
        )
        tags = (await personalize.list_tags_for_resource(resourceArn=arn))["tags"]
    assert {(t["tagKey"], t["tagValue"]) for t in tags} == {("team", "recs"), ("env", "nightly")}


async def test_describe_resources(emulator: Emulator, clients: Callable[..., Any]) -> None:
    """Solution versions, solutions, recipes and filters describe as the service does."""
    info = emulator.info
    async with clients() as (_, personalize):
        version = (
            await personalize.describe_solution_version(
                solutionVersionArn=info.solution_versions["similar-items"]
            )
        )["solutionVersion"]
        assert version["status"] == "ACTIVE"
        recipe = (await personalize.describe_recipe(recipeArn=version["recipeArn"]))["recipe"]
        assert recipe["recipeType"] == "RELATED_ITEMS"
        solution = (await personalize.describe_solution(solutionArn=version["solutionArn"]))[
            "solution"
        ]
        assert (
            solution["latestSolutionVersion"]["solutionVersionArn"] == version["solutionVersionArn"]
        )
        versions = (await personalize.list_solution_versions(solutionArn=version["solutionArn"]))[
            "solutionVersions"
        ]
        assert [v["solutionVersionArn"] for v in versions] == [version["solutionVersionArn"]]
        flt = (await personalize.describe_filter(filterArn=info.filters["fanout-genre-filter"]))[
            "filter"
        ]
        assert "$GENRE" in flt["filterExpression"]
        with pytest.raises(ClientError) as caught:
            await personalize.describe_batch_inference_job(
                batchInferenceJobArn=info.solution_versions["sims"].replace(
                    "solution/", "batch-inference-job/"
                )
            )
        assert error_code(caught.value) == "ResourceNotFoundException"


# -- the wire protocol ----------------------------------------------------------------------------


def test_every_response_matches_the_botocore_output_shape(emulator: Emulator) -> None:
    """Each operation's raw response carries only members of botocore's output shape."""
    info = emulator.info
    status, body = raw_call(info, "ListBatchInferenceJobs", {})
    assert status == 200
    arn = None
    if body["batchInferenceJobs"]:
        arn = body["batchInferenceJobs"][0]["batchInferenceJobArn"]
    assert SHAPES.validate_output("ListBatchInferenceJobs", body) == []
    version = info.solution_versions["user-personalization"]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("DescribeSolutionVersion", {"solutionVersionArn": version}),
        ("ListSolutionVersions", {}),
        ("DescribeFilter", {"filterArn": info.filters["fanout-genre-filter"]}),
        ("ListBatchSegmentJobs", {}),
        ("DescribeRecipe", {"recipeArn": "arn:aws:personalize:::recipe/aws-sims"}),
        ("DescribeSolution", {"solutionArn": version.rsplit("/", 1)[0]}),
        ("ListTagsForResource", {"resourceArn": version}),
    ]
    if arn:
        calls.append(("DescribeBatchInferenceJob", {"batchInferenceJobArn": arn}))
    for operation, params in calls:
        status, body = raw_call(info, operation, params)
        assert status == 200, (operation, body)
        assert SHAPES.validate_output(operation, body) == [], operation


def test_wire_errors(emulator: Emulator) -> None:
    """Unsigned calls, unknown operations and bad JSON get the service's error bodies."""
    info = emulator.info
    assert raw_call(info, "ListBatchInferenceJobs", {}, signed=False)[0] == 403
    status, body = raw_call(info, "NoSuchOperation", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body = raw_call(info, "CreateBatchInferenceJob", {"jobName": "x"})
    assert (status, body["__type"]) == (400, "InvalidInputException")
    assert "Member must not be null" in body["message"]
    status, body = raw_call(info, "ListBatchInferenceJobs", {"maxResults": "ten"})
    assert (status, body["__type"]) == (400, "SerializationException")
