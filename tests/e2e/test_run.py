"""`fanout run` and `fanout merge` through the CLI against the emulator, as a user types them."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import pyarrow.parquet as pq
import pytest
import yaml
from emulated import User, start

from fanout import retry
from fanout.cli import main
from fanout.emulator import Emulator
from fanout.errors import InputError
from fanout.journal import read_events
from fanout.state import RunState
from fanout.status import status_rows
from fanout.storage import S3Uri


@pytest.fixture
def user(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    return User(emulator.info, tmp_path, monkeypatch)


GENRE_FILTER = "arn:aws:personalize:us-east-1:123456789012:filter/fanout-genre-filter"


def run_args(
    user: User, run: str, ids: Path, out: Path, *extra: str, recipe: str = ""
) -> list[str]:
    info = user.info
    key = info.kms_key_arn
    return [
        "run", "--ids", str(ids), "--out", str(out), "--run-id", run,
        "--state-dir", str(user.state),
        "--solution-version-arn", info.solution_versions[recipe or "user-personalization"],
        "--role-arn", info.role_arn,
        "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={key}}}",
        "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/,kmsKeyArn={key}}}",
        "--poll-interval", "0.05", "--tps", "50", "--log-format", "json", *extra,
    ]  # fmt: skip


def test_a_new_run_needs_its_output_prefix_empty(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outputs left under a run ID's output prefix (an earlier run of that ID) would be merged
    as this run's: `fanout run` refuses before the run begins."""
    user.s3.put_object(Bucket=user.info.bucket, Key="out/old/shard-00000/u.out", Body=b"{}\n")
    args = run_args(user, "old", user.ids(10), user.tmp / "r.jsonl")
    for dry in ([], ["--dry-run"]):  # a dry run says so too, not "every check passed"
        code, out, err = user.cli([*args, *dry], capsys)
        assert code == 2 and f"s3://{user.info.bucket}/out/old/ already holds objects" in err
        assert "every check passed" not in out
        assert not (user.state / "old").exists() and user.jobs("old") == []


def test_a_run_id_whose_jobs_exist_is_refused_before_the_run_begins(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run ID used before, its state directory and S3 objects removed (as the refusal of its
    prefixes says): its jobs keep their names, and one made just before the new run began
    would be adopted as the new run's. Refused before anything is uploaded, dry run too."""
    args = run_args(user, "reused", user.ids(20), user.tmp / "a.jsonl")
    code, _, err = user.cli(args, capsys)
    assert code == 0, err
    shutil.rmtree(user.state / "reused")
    user._empty_bucket()
    (user.tmp / "a.jsonl").unlink()
    for dry in (["--dry-run"], []):
        code, _, err = user.cli([*args, *dry], capsys)
        assert code == 2 and "a job named fanout-reused-00000 already exists (ACTIVE)" in err, err
        assert "choose another --run-id" in err
    assert "Contents" not in user.s3.list_objects_v2(Bucket=user.info.bucket, Prefix="in/")
    assert len(user.jobs("reused")) == 1


@pytest.mark.parametrize(
    ("out", "extra", "said"),
    [
        ("recs", [], "cannot tell the result format from 'recs'"),
        ("raw.parquet", ["--raw"], "raw results (the service's lines verbatim) can only be JSON"),
        ("r.parquet.gz", [], "cannot tell the result format from 'r.parquet.gz'"),
        ("r.csv", ["--separator", ""], "separator must be a non-empty string"),
        ("r.jsonl", ["--separator", ";"], "--separator ';' joins lists in CSV results"),
    ],
)
def test_a_result_file_the_merge_could_not_write_is_refused_before_the_run_starts(
    user: User, capsys: pytest.CaptureFixture[str], out: str, extra: list[str], said: str
) -> None:
    """helper-31: these passed --dry-run and stopped the run at its merge, after its jobs, and
    every resume stopped there again (a resume cannot change --out). Refused up front now, dry
    run too, before the run exists."""
    args = run_args(user, "badout", user.ids(10), user.tmp / out, *extra)
    for dry in (["--dry-run"], []):
        code, _, err = user.cli([*args, *dry], capsys)
        assert code == 2 and said in err, err
    assert not (user.state / "badout").exists()
    assert "Contents" not in user.s3.list_objects_v2(Bucket=user.info.bucket, Prefix="in/")


def test_run_user_personalization_with_filter_tags_and_kms(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.tmp / "users.txt"
    ids.write_text("".join(f"{i}\n" for i in range(1, 3001)) + "\n42\n" + "bad\x01id\n")
    out = user.tmp / "recs.jsonl"
    code, stdout, err = user.cli(
        run_args(user, "up", ids, out, "--num-results", "7", "--max-job-bytes", "15KB",
                 "--filter-arn", user.info.filters["fanout-genre-filter"],
                 "--filter-values", "GENRE=Comedy",
                 "--tags", "tagKey=team,tagValue=recs", "tagKey=env,tagValue=test",
                 "--output", "json"),
        capsys,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    counts = summary["reconciliation"]
    assert counts["results"] + counts["errors"] + counts["missing"] == 3000
    assert counts["missing"] == 0 and summary["active"] > 1
    lines = summary["input"]
    counted = (lines["lines"], lines["blank"], lines["rejected"], lines["duplicates"])
    assert counted == (3003, 1, 1, 1)
    assert Path(lines["rejects_file"]).read_text().count("\n") == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["userId"] for row in rows} == {str(i) for i in range(1, 3001)}
    assert all(len(row["recommendedItems"]) <= 7 for row in rows)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events and all("message" in event for event in events)  # --log-format json
    job = user.jobs("up")[0]
    tags = user.personalize.list_tags_for_resource(resourceArn=job["batchInferenceJobArn"])
    assert {t["tagKey"]: t["tagValue"] for t in tags["tags"]} == {"team": "recs", "env": "test"}
    described = user.personalize.describe_batch_inference_job(
        batchInferenceJobArn=job["batchInferenceJobArn"]
    )["batchInferenceJob"]
    assert described["filterArn"] == user.info.filters["fanout-genre-filter"]
    head = user.s3.head_object(Bucket=user.info.bucket, Key="in/up/shard-00000/part-00000.jsonl")
    assert head["ServerSideEncryption"] == "aws:kms"
    state = RunState.replay(read_events(user.state / "up"))
    assert state.merged is not None
    source = state.prepared["source"] if state.prepared else {}
    assert source["duplicates"] == 1 and sum(source["rejected"].values()) == 1
    code, stdout, _ = user.cli(["status", "up", "--state-dir", str(user.state)], capsys)
    assert code == 0 and "merged" in stdout and f"{counts['results']:,} results" in stdout


def test_a_lines_filter_value_the_runs_filter_would_not_take_is_rejected(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-30: `{"genre": …}` beside `--filter-values GENRE=Comedy` went out and the job
    filtered by Comedy alone; per-line values without any --filter-arn went out too. The run
    knows its filter's placeholders from preflight: such lines are rejected, saying why, and
    a resume (which prepares again) keeps the rule."""
    ids = user.tmp / "fv.jsonl"
    ids.write_text(
        '{"userId": "ok", "filterValues": {"GENRE": "\\"Drama\\""}}\n'
        '{"userId": "typo", "filterValues": {"genre": "\\"Drama\\""}}\n'
        '{"userId": "plain"}\n'
    )
    filtered = ["--filter-arn", user.info.filters["fanout-genre-filter"]]
    for run, extra, sent in (
        ("fv", [*filtered, "--filter-values", "GENRE=Comedy"], ["ok", "plain"]),
        ("nofilter", [], ["plain"]),
    ):
        out = user.tmp / f"{run}-recs.jsonl"
        code, _, err = user.cli(run_args(user, run, ids, out, *extra), capsys)
        assert code == 0, err
        assert sorted(user.sent_ids(run)) == sorted(sent)
        rejected = (user.state / run / "rejects.jsonl").read_text().splitlines()
        rejects = [json.loads(line) for line in rejected]
        said = {json.loads(r["raw"])["userId"]: r["detail"] for r in rejects}
        if run == "fv":
            assert said.keys() == {"typo"} and "has no $genre placeholder" in said["typo"]
        else:
            assert said.keys() == {"ok", "typo"}
            assert all("no filter (--filter-arn)" in why for why in said.values())
    state = RunState.replay(read_events(user.state / "fv"))
    assert state.settings["source"]["placeholders"] == ["GENRE"]


def test_run_personalized_ranking_to_parquet(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.tmp / "ranking.jsonl"
    lines = [{"userId": str(u), "itemList": [str(i) for i in range(1, 30)]} for u in range(1, 400)]
    ids.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = user.tmp / "ranked.parquet"
    code, _, err = user.cli(run_args(user, "rank", ids, out, recipe="personalized-ranking"), capsys)
    assert code == 0, err
    table = pq.read_table(out)
    assert table.num_rows == 399
    assert set(table.column_names) >= {"userId", "recommendedItems", "scores"}
    ranked = table.to_pylist()[0]
    assert sorted(ranked["recommendedItems"]) == sorted(str(i) for i in range(1, 30))


def test_run_from_a_real_aws_cli_skeleton_with_query_and_yaml(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    skeleton = subprocess.run(
        ["aws", "personalize", "create-batch-inference-job", "--generate-cli-skeleton"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    request = json.loads(skeleton)
    info = user.info
    request.update(
        jobName="skel",
        solutionVersionArn=info.solution_versions["user-personalization"],
        roleArn=info.role_arn,
        numResults=3,
        jobInput={
            "s3DataSource": {"path": f"s3://{info.bucket}/in/", "kmsKeyArn": info.kms_key_arn}
        },
        jobOutput={"s3DataDestination": {"path": f"s3://{info.bucket}/out/"}},
    )
    for unused in ("filterArn", "batchInferenceJobConfig", "tags", "themeGenerationConfig"):
        request.pop(unused)
    request["batchInferenceJobMode"] = "BATCH_INFERENCE"
    path = user.tmp / "job.json"
    path.write_text(json.dumps(request))
    ids = user.ids(200)
    info_args = [
        "run", "--ids", str(ids), "--out", str(user.tmp / "r.csv"), "--run-id", "skel",
        "--state-dir", str(user.state), "--cli-input-json", f"file://{path}",
        "--poll-interval", "0.05", "--output", "yaml", "--query", "reconciliation",
    ]  # fmt: skip
    code, stdout, err = user.cli(info_args, capsys)
    assert code == 0, err
    assert yaml.safe_load(stdout)["results"] == 200
    listed = user.personalize.list_batch_inference_jobs(maxResults=100)["batchInferenceJobs"]
    assert "skel-skel-00000" in {job["jobName"] for job in listed}  # --job-name from the file
    header = (user.tmp / "r.csv").read_text().splitlines()[0]
    assert header == "userId,recommendedItems,scores"


def test_run_config_file_and_merge_again(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    info = user.info
    ids = user.ids(300)
    config = user.tmp / "nightly.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ids": str(ids),
                "out": str(user.tmp / "nightly.jsonl"),
                "run-id": "nightly",
                "state-dir": str(user.state),
                "solution-version-arn": info.solution_versions["popularity-count"],
                "role-arn": info.role_arn,
                "job-input": {"s3DataSource": {"path": f"s3://{info.bucket}/in/"}},
                "job-output": {"s3DataDestination": {"path": f"s3://{info.bucket}/out/"}},
                "num-results": 4,
                "poll-interval": 0.05,
                "tags": ["tagKey=a,tagValue=b"],
            }
        )
    )
    code, _, err = user.cli(["run", "--config", str(config), "--num-results", "2"], capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in (user.tmp / "nightly.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and all(len(r["recommendedItems"]) == 2 for r in rows)  # CLI wins
    again = [
        "merge",
        "nightly",
        "--state-dir",
        str(user.state),
        "--out",
        str(user.tmp / "nightly.jsonl"),
    ]
    code, _, err = user.cli(again, capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = user.cli([*again, "--overwrite", "--raw"], capsys)
    assert code == 0, err
    raw = json.loads((user.tmp / "nightly.jsonl").read_text().splitlines()[0])
    assert "input" in raw and "output" in raw
    page = user.tmp / "nightly.html"
    code, _, err = user.cli(
        ["report", "nightly", "--state-dir", str(user.state), "--html", str(page)], capsys
    )
    assert code == 0, err
    assert 'data-shard="0"' in page.read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--solution-version-arn", "arn:aws:personalize:us-east-1:123456789012:solution/nope/x"],
         "does not exist"),
        (["--num-results", "501"], "use 1 to 500"),
        (["--filter-arn", "arn:aws:personalize:us-east-1:123456789012:filter/none"],
         "does not exist"),
        (["--job-output", "s3DataDestination={path=s3://no-such-bucket-x/out/}"], "does not exist"),
        (["--batch-inference-job-mode", "THEME_GENERATION"], "Similar-Items"),
        (["--input-kind", "itemId"], "does not fit recipe"),
        (["--role-arn", "arn:aws:iam::123456789012:role/nope"], "role/nope does not exist"),
        (["--role-arn", "arn:aws:iam::999999999999:role/fanout-personalize-batch"],
         "this account's role of that name is arn:aws:iam::123456789012:role/fanout-person"),
        (["--role-arn", "arn:aws:iam::123456789012:role/service-role/fanout-personalize-batch"],
         "give that ARN to --role-arn"),
        (["--region", "eu-west-1"],
         "is in us-east-1, but the region is eu-west-1: jobs run in their solution version's"),
        (["--out", "s3://fanout-emulator/in/results/"], "--out s3://fanout-emulator/in/results/ "
         "overlaps --job-input"),
        (["--out", "s3://fanout-emulator/out/pre/shard-00000/"], "overlaps --job-output"),
        (["--out", "/nonexistent-folder-x/recs.jsonl"],
         "the folder /nonexistent-folder-x does not exist"),
        # Filter values that the filter has no placeholder for, or that it needs, or no filter:
        (["--filter-arn", GENRE_FILTER, "--filter-values", "GENRES=Comedy"],
         "has no $GENRES placeholder (it has $GENRE; names are case-sensitive)"),
        (["--filter-arn", GENRE_FILTER], "give --filter-values GENRE=V1,V2"),
        (["--filter-values", "GENRE=Comedy"], "there is no --filter-arn"),
        # What the service's model refuses, checked on the requests the run would send:
        (["--batch-inference-job-mode", "theme_generation"], "Member must satisfy enum value"),
        (["--theme-generation-config", "fieldsForThemeGeneration={itemName=TITLE}"],
         "only for --batch-inference-job-mode THEME_GENERATION"),
        (["--tags", "tagKey=a,tagValue=x", "tagKey=a,tagValue=y"], "the key 'a' twice"),
        (["--tags", *(f"tagKey=k{i},tagValue=v" for i in range(51))], "at most 50"),
        (["--tags", "tagKey=a*b,tagValue=x"], "at 'tags.1.member.tagKey'"),
        (["--job-input", f"s3DataSource={{path=s3://fanout-emulator/{'p' * 230}/}}"],
         "at 'jobInput.s3DataSource.path' failed to satisfy constraint: Member must have "
         "length less than or equal to 256 (each job's paths are the given ones plus pre/"),
    ],
)  # fmt: skip
def test_preflight_refuses_before_anything_happens(
    user: User, capsys: pytest.CaptureFixture[str], change: list[str], message: str
) -> None:
    ids = user.ids(50)
    args = run_args(user, "pre", ids, user.tmp / "x.jsonl", "--dry-run")
    code, _, err = user.cli([*args, *change], capsys)
    assert code == 2 and message in err, err
    assert not (user.state / "pre").exists()
    assert user.jobs("pre") == []


def test_a_disabled_output_key_is_refused_before_anything_happens(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """The emulator's KMS refuses data keys under a disabled key, as KMS does, so preflight's
    data-key check stops the run (it passed on the emulator before)."""
    kms = user.client("kms")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    kms.disable_key(KeyId=key)
    output = f"s3DataDestination={{path=s3://{user.info.bucket}/out/,kmsKeyArn={key}}}"
    args = run_args(user, "dk", user.ids(20), user.tmp / "x.jsonl", "--dry-run")
    code, _, err = user.cli([*args, "--job-output", output], capsys)
    assert code == 2 and "cannot make a data key (DisabledException)" in err, err


@pytest.mark.parametrize("where", ["region", "account"])
def test_a_key_arn_of_another_region_or_account_is_no_key_here(
    user: User, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """The emulator looked keys up by ID alone: the seeded key's ID under another region or
    account was taken as that key (S3, KMS and jobs alike). KMS has no such key: refused."""
    from botocore.exceptions import ClientError

    prefix, key_id = user.info.kms_key_arn.rsplit("/", 1)
    parts = prefix.split(":")
    parts[3 if where == "region" else 4] = "us-west-2" if where == "region" else "999999999999"
    other = ":".join(parts) + "/" + key_id
    with pytest.raises(ClientError) as caught:
        user.client("kms").generate_data_key(KeyId=other, KeySpec="AES_256")
    assert caught.value.response["Error"]["Code"] == "NotFoundException"
    with pytest.raises(ClientError) as refused:
        user.s3.put_object(
            Bucket=user.info.bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
            SSEKMSKeyId=other,
        )  # fmt: skip
    assert refused.value.response["Error"]["Code"] == "KMS.NotFoundException"
    if where == "account":  # (another region's key fanout names as such before asking KMS)
        output = f"s3DataDestination={{path=s3://{user.info.bucket}/out/,kmsKeyArn={other}}}"
        args = run_args(user, "ok", user.ids(20), user.tmp / "x.jsonl", "--dry-run")
        code, _, err = user.cli([*args, "--job-output", output], capsys)
        assert code == 2 and "NotFoundException" in err, err


def test_a_bucket_of_another_region_is_refused_before_the_run_and_fails_a_job(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Personalize uses buckets of the jobs' region only: fanout's preflight reads the bucket's
    region (HeadBucket) and refuses another; the emulator's job fails as the service's would."""
    s3, bucket = user.s3, "west-bucket"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    args = run_args(user, "west", user.ids(20), user.tmp / "w.jsonl", "--dry-run")
    args[args.index("--job-input") + 1] = f"s3DataSource={{path=s3://{bucket}/in/}}"
    code, _, err = user.cli(args, capsys)
    assert code == 2 and f"bucket {bucket} is in us-west-2, the jobs in us-east-1" in err, err
    s3.put_object(Bucket=bucket, Key="in/u.jsonl", Body=b'{"userId": "1"}\n')
    personalize = user.personalize
    arn = personalize.create_batch_inference_job(
        jobName="west", solutionVersionArn=user.info.solution_versions["user-personalization"],
        roleArn=user.info.role_arn, jobInput={"s3DataSource": {"path": f"s3://{bucket}/in/"}},
        jobOutput={"s3DataDestination": {"path": f"s3://{user.info.bucket}/west/"}},
    )["batchInferenceJobArn"]  # fmt: skip
    for _ in range(200):
        job = personalize.describe_batch_inference_job(batchInferenceJobArn=arn)
        if job["batchInferenceJob"]["status"] in {"ACTIVE", "CREATE FAILED"}:
            break
        time.sleep(0.05)
    assert job["batchInferenceJob"]["status"] == "CREATE FAILED"
    assert "is in us-west-2, not in us-east-1" in job["batchInferenceJob"]["failureReason"]


def test_a_result_inside_the_input_folder_is_refused(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """The next night's run over the folder would read the results back as IDs."""
    folder = user.tmp / "exports"
    folder.mkdir()
    (folder / "users.txt").write_text("u1\nu2\n")
    args = run_args(user, "inside", folder, folder / "recs.jsonl", "--dry-run")
    code, _, err = user.cli(args, capsys)
    assert code == 2 and "--out is inside the input folder" in err, err
    args = run_args(user, "inside", folder, folder / "_results" / "recs.jsonl", "--dry-run")
    (folder / "_results").mkdir()
    code, _, err = user.cli(args, capsys)
    assert code == 0, err  # a _ name is left out of the input
    # The input file itself as --out, with --overwrite: the results would replace the IDs.
    ids = folder / "users.txt"
    for given in (ids, Path(os.path.relpath(ids))):
        args = run_args(user, "same", given, ids, "--overwrite", "--out-format", "jsonl")
        code, _, err = user.cli(args, capsys)
        assert code == 2 and "is the input file --ids" in err, err
        assert ids.read_text() == "u1\nu2\n"


def test_a_request_the_service_would_refuse_uploads_nothing(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not only with --dry-run: a job request the service's model refuses stops the run before
    its shards are cut or uploaded (exit 2), so the run ID stays free to run again."""
    args = run_args(user, "lower", user.ids(50), user.tmp / "x.jsonl")
    code, _, err = user.cli([*args, "--batch-inference-job-mode", "theme_generation"], capsys)
    assert code == 2 and "batchInferenceJobMode" in err, err
    assert not (user.state / "lower").exists() and user.sent_ids("lower") == []
    code, _, err = user.cli(args, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("explorationWieght=0.3", "no key 'explorationWieght' (did you mean explorationWeight?)"),
        ("explorationWeight=1.5", "explorationWeight='1.5' must be a number from 0 to 1"),
        ("explorationItemAgeCutOff=soon", "must be a number of at least 0"),
    ],
)
def test_a_misspelt_exploration_key_or_bad_value_is_refused_before_the_upload(
    user: User, capsys: pytest.CaptureFixture[str], config: str, said: str
) -> None:
    """helper-31: itemExplorationConfig is a free map in the model, so a misspelt key passed
    --dry-run, the shards were uploaded, and CreateBatchInferenceJob refused it (exit 1)."""
    args = run_args(user, "explore", user.ids(20), user.tmp / "x.jsonl")
    option = ["--batch-inference-job-config", f"itemExplorationConfig={{{config}}}"]
    for dry in (["--dry-run"], []):
        code, _, err = user.cli([*args, *option, *dry], capsys)
        assert code == 2 and said in err, err
    assert not (user.state / "explore").exists() and user.sent_ids("explore") == []


def test_an_input_of_rejects_and_blank_lines_runs_no_job_and_says_so(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to send: no job, an empty result file, exit 1 (not one ID got recommendations:
    for a nightly job, an empty or broken export is a failure), and the summary says why."""
    ids = user.tmp / "users.txt"
    ids.write_text("\n  \nbad\x01id\n" + "x" * 300 + "\n")
    out = user.tmp / "recs.jsonl"
    code, stdout, err = user.cli(run_args(user, "none", ids, out), capsys)
    assert code == 1, err
    assert "the input held none to send" in stdout
    assert "holds no IDs" in err and not user.jobs("none")
    assert out.read_text() == ""
    rows = dict(line.split(None, 1) for line in stdout.splitlines() if line.strip())
    assert rows["input"].startswith("4 lines: 2 rejected (rejects.jsonl), 0 duplicates")
    assert (user.state / "none" / "rejects.jsonl").read_text().count("\n") == 2


def test_dry_run_prints_the_plan_and_creates_nothing(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.ids(5000)
    code, out, err = user.cli(run_args(user, "dry", ids, user.tmp / "x.jsonl", "--dry-run"), capsys)
    assert code == 0, err
    assert "job shards" in out and "every check passed" in out
    assert not (user.state / "dry").exists() and user.jobs("dry") == []
    # helper-31: --output and --query were ignored (the text plan went to a script).
    args = run_args(user, "dry", ids, user.tmp / "x.jsonl", "--dry-run", "--output", "json")
    code, out, err = user.cli(args, capsys)
    assert code == 0, err
    found = json.loads(out)
    assert found["plan"]["records"] == 5000 and "every check passed" in found["preflight"]
    code, out, err = user.cli([*args, "--query", "plan.records"], capsys)
    assert code == 0 and out.strip() == "5000", err
    assert not (user.state / "dry").exists()


def test_every_shard_failed_exits_1_with_every_id_listed_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every job failed: the run exits 1 (not 3: there is no result, partial or not), lists
    every ID in missing.txt with the reason, and `--allow-partial` does not make it 0."""
    emulator = start(fail_rate=1.0)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(100)
        out = tmp_path / "partial.jsonl"
        args = run_args(user, "part", ids, out, "--job-retries", "0")
        code, stdout, err = user.cli(args, capsys)
        assert code == 1, err
        assert "100 (missing.txt)" in stdout and "Please try again" in stdout
        missing = (user.state / "part" / "missing.txt").read_text().split()
        assert sorted(missing) == sorted(f"user-{i}" for i in range(100))
        assert out.exists() and out.read_text() == ""
        code, _, _ = user.cli(
            ["merge", "part", "--state-dir", str(user.state), "--out", str(out), "--overwrite",
             "--allow-partial"],
            capsys,
        )  # fmt: skip
        assert code == 1  # not one recommendation: --allow-partial does not make it a success
    finally:
        emulator.stop()


def test_generate_cli_skeleton_matches_the_aws_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--generate-cli-skeleton"]) == 0
    ours = json.loads(capsys.readouterr().out)
    theirs = subprocess.run(
        ["aws", "personalize", "create-batch-inference-job", "--generate-cli-skeleton"],
        capture_output=True,
        text=True,
        check=True,
    )
    # The AWS CLI picks enum values at random, and its botocore may know newer members
    # (rankingInfluence): the members fanout's botocore knows must match, with the same types.
    reference = json.loads(theirs.stdout)
    assert set(ours) == set(reference)
    for key, value in ours.items():
        assert type(value) is type(reference[key]), key
        if isinstance(value, dict):
            assert set(value) <= set(reference[key]), key
    assert main(["run", "--generate-cli-skeleton", "yaml-input"]) == 0
    assert set(yaml.safe_load(capsys.readouterr().out)) == set(ours)


def test_run_themes_with_similar_items(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    ids = user.tmp / "items.txt"
    ids.write_text("".join(f"{i}\n" for i in range(1, 251)))
    out = user.tmp / "themes.parquet"
    args = run_args(user, "themes", ids, out, recipe="similar-items")
    args += [
        "--batch-inference-job-mode", "THEME_GENERATION",
        "--theme-generation-config", "fieldsForThemeGeneration={itemName=TITLE}",
    ]  # fmt: skip
    code, _, err = user.cli(args, capsys)
    assert code == 0, err
    parts = [e for e in read_events(user.state / "themes") if e["event"] == "part-written"]
    assert len(parts) >= 3 and all(p["records"] <= 100 for p in parts)  # the themes limit
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 250
    assert all(row["theme"] and len(row["itemsThemeRelevanceScores"]) for row in rows)


def _half_failed_run(
    emulator: Emulator, user: User, run: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run 2,000 IDs in shards of 5KB with no job retries on an emulator failing half its
    jobs (exit 3, IDs listed missing), then let it fail none, for a retry to come."""
    args = run_args(user, run, user.ids(2000), out, "--job-retries", "0", "--max-job-bytes", "5KB")
    code, _, err = user.cli(args, capsys)
    missing = (user.state / run / "missing.txt").read_text().split()
    assert code == 3 and missing, err
    emulator.service.settings = emulator.service.settings.model_copy(update={"fail_rate": 0})


def test_retry_sends_only_what_failed_and_merges_it_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = start(fail_rate=0.5, seed=3)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        out = tmp_path / "recs.csv"
        _half_failed_run(emulator, user, "again", out, capsys)
        missing = len((user.state / "again" / "missing.txt").read_text().split())
        # Resumed with nothing left to do, the merged run is partial, as its run was (not 1).
        args = ["resume", "again", "--state-dir", str(user.state), "--output", "json"]
        code, stdout, err = user.cli(args, capsys)
        assert code == 3 and json.loads(stdout)["reconciliation"]["missing"] == missing, err
        retry = ["retry", "again", "--state-dir", str(user.state), "--poll-interval", "0.07"]
        code, stdout, err = user.cli(retry, capsys)
        assert code == 0, err
        child = RunState.replay(read_events(user.state / "again-r1")).submit
        assert child is not None and child["submit"]["poll_interval"] == 0.07  # as resume takes it
        rows = out.read_text().splitlines()
        assert rows[0] == "userId,recommendedItems,scores"
        got = sorted(row.split(",", 1)[0] for row in rows[1:])
        assert got == sorted(f"user-{i}" for i in range(2000))  # each exactly once
        assert (user.state / "again" / "missing.txt").read_text() == ""
        retried = [j for j in user.jobs("again-r1")]
        assert retried and {j["status"] for j in retried} == {"ACTIVE"}
        # Status tells what the files hold now, not the first merge's counts.
        code, stdout, _ = user.cli(
            ["status", "again", "--state-dir", str(user.state), "--output", "json"], capsys
        )
        status = json.loads(stdout)
        assert code == 0 and status["retries"] == ["again-r1"]
        counts = status["reconciliation"]
        assert (counts["results"], counts["errors"], counts["missing"]) == (2000, 0, 0)
        # So does the journal's S3 mirror, read from another machine (no local state).
        output = f"s3DataDestination={{path=s3://{user.info.bucket}/out/}}"
        elsewhere = ["--state-dir", str(tmp_path / "elsewhere"), "--job-output", output]
        code, stdout, err = user.cli(["status", "again", *elsewhere, "--output", "json"], capsys)
        assert code == 0 and json.loads(stdout) == status, err
        code, stdout, _ = user.cli(["retry", "again", "--state-dir", str(user.state)], capsys)
        assert code == 0 and "nothing to retry" in stdout
        # Merged again later: the retry's results are added again, none is "missing" again.
        state = ["--state-dir", str(user.state)]
        again = tmp_path / "again.csv"
        code, _, err = user.cli(["merge", "again", *state, "--out", str(again)], capsys)
        assert code == 0, err
        key = "out/again/_fanout/journal.jsonl"  # the mirror has every event, the last too
        body = user.s3.get_object(Bucket=user.info.bucket, Key=key)["Body"].read()
        assert body == (user.state / "again" / "journal.jsonl").read_bytes()
        got = sorted(row.split(",", 1)[0] for row in again.read_text().splitlines()[1:])
        assert got == sorted(f"user-{i}" for i in range(2000))
        assert (user.state / "again" / "missing.txt").read_text() == ""
        code, stdout, _ = user.cli(["retry", "again", *state], capsys)
        assert code == 0 and "nothing to retry" in stdout
        # Resumed, the merged run says what its result holds, retries included: complete.
        code, stdout, err = user.cli(["resume", "again", *state], capsys)
        assert code == 0 and "sent their IDs again as again-r1" in stdout, err
        code, stdout, _ = user.cli(["resume", "again", *state, "--output", "json"], capsys)
        summary = json.loads(stdout)
        assert code == 0 and summary["retries"] == ["again-r1"] and summary["failed"]
        assert summary["reconciliation"]["missing"] == 0
        assert summary["result"] == str(again)
        code, stdout, _ = user.cli(["status", "again", *state, "--output", "json"], capsys)
        assert json.loads(stdout)["retries"] == ["again-r1"]  # after the merge too
        code, mirrored, _ = user.cli(["status", "again", *elsewhere, "--output", "json"], capsys)
        assert json.loads(mirrored) == json.loads(stdout)
        code, _, err = user.cli(
            ["merge", "again", *state, "--out", str(tmp_path / "x.jsonl")], capsys
        )
        assert code == 2 and "merge it again to a csv file" in err
        # Nor can its retry be merged to another format: the run could add it no more.
        args = ["merge", "again-r1", *state, "--out", str(tmp_path / "r1.parquet")]
        code, _, err = user.cli(args, capsys)
        assert code == 2 and "is a retry of run again, whose result is csv" in err, err
        # The retry's result file is gone: refused before anything is written, with the way
        # to write it again, which works.
        code, stdout, _ = user.cli(["status", "again-r1", *state, "--output", "json"], capsys)
        theirs = Path(json.loads(stdout)["result"])
        theirs.rename(tmp_path / "moved.csv")
        third = tmp_path / "third.csv"
        code, _, err = user.cli(["merge", "again", *state, "--out", str(third)], capsys)
        assert code == 2 and f"`fanout merge again-r1 --out {theirs}`" in err, err
        assert not third.exists() and (user.state / "again" / "missing.txt").read_text() == ""
        code, _, err = user.cli(["merge", "again-r1", *state, "--out", str(theirs)], capsys)
        assert code == 0, err
        code, _, err = user.cli(["merge", "again", *state, "--out", str(third)], capsys)
        assert code == 0, err
        got = sorted(row.split(",", 1)[0] for row in third.read_text().splitlines()[1:])
        assert got == sorted(f"user-{i}" for i in range(2000))
    finally:
        emulator.stop()


def test_a_retry_that_cannot_add_its_results_says_how_to_finish_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The retry's results cannot be added to the run's file (here: the disk is full): the
    retry stops with the files and the command that finishes it, and that command does."""
    emulator = start(fail_rate=0.5, seed=3)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        out = tmp_path / "recs.csv.gz"
        _half_failed_run(emulator, user, "nospace", out, capsys)
        before = out.read_bytes()

        def full(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        state = ["--state-dir", str(user.state)]
        with monkeypatch.context() as patched:
            patched.setattr(retry, "_combine_text", full)
            code, _, err = user.cli(["retry", "nospace", *state], capsys)
        assert code == 1 and "No space left on device" in err, err
        assert f"to {out}" in err and "finish the retry: `fanout retry nospace`" in err, err
        assert out.read_bytes() == before
        code, _, err = user.cli(["retry", "nospace", *state], capsys)
        assert code == 0, err
        with gzip.open(out, "rt") as rows:
            got = sorted(row.split(",", 1)[0] for row in list(rows)[1:])
        assert got == sorted(f"user-{i}" for i in range(2000))
    finally:
        emulator.stop()


def test_a_retry_that_recovers_nothing_of_a_run_with_results_is_partial(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items the model does not know error again when retried: the result file still has the
    other items' rows, so the retry exits 3 (0 with --allow-partial), not 1."""
    ids = user.tmp / "items.txt"
    ids.write_text("".join(f"{i}\n" for i in range(995, 1006)))  # 1001-1005: unknown items
    args = run_args(user, "sims", ids, user.tmp / "sims.jsonl", recipe="sims")
    code, _, err = user.cli(args, capsys)
    assert code == 3, err
    state = ["--state-dir", str(user.state)]
    code, _, err = user.cli(["retry", "sims", *state], capsys)
    assert code == 3, err
    code, _, err = user.cli(["retry", "sims", *state, "--allow-partial"], capsys)
    assert code == 0, err


def test_retry_missing_only_keeps_the_errors_and_sends_the_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout retry RUN --missing-only` sends the IDs of the failed jobs again, not the items
    the model does not know (they would error again): those stay in errors.jsonl, once each,
    and in the counts, so the run stays partial (exit 3)."""
    emulator = start(fail_rate=0.5, seed=3)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        items = [str(i) for i in range(1, 1001)]
        unknown = [str(i) for i in range(1001, 1010)]  # one in each shard of ~112 items
        for n, item in enumerate(unknown):
            items.insert(n * 112, item)
        ids = tmp_path / "items.txt"
        ids.write_text("".join(f"{item}\n" for item in items))
        out = tmp_path / "sims.jsonl"
        args = run_args(user, "half", ids, out, "--job-retries", "0", "--max-job-bytes", "2KB",
                        recipe="sims")  # fmt: skip
        code, _, err = user.cli(args, capsys)
        run_dir = user.state / "half"

        def errors() -> list[str]:
            text = (run_dir / "errors.jsonl").read_text()
            return [json.loads(line)["id"] for line in text.splitlines()]

        missing = set((run_dir / "missing.txt").read_text().split())
        assert code == 3 and missing and errors(), err
        emulator.service.settings = emulator.service.settings.model_copy(update={"fail_rate": 0})

        state = ["--state-dir", str(user.state)]
        code, stdout, err = user.cli(
            ["retry", "half", *state, "--missing-only", "--output", "json"], capsys
        )
        assert code == 3, err
        summary = json.loads(stdout)  # the retry's own IDs; the run's errors, in its files
        counts = summary["reconciliation"]  # of what was sent: they add up
        assert counts["sent"] == len(missing) == summary["input"]["lines"]
        assert counts["sent"] == counts["results"] + counts["errors"] + counts["missing"]
        assert summary["kept_errors"] and counts["errors"] + summary["kept_errors"] == len(unknown)
        assert summary["errors_file"] == str(run_dir / "errors.jsonl")
        code, _, err = user.cli(["retry", "half-r1", *state], capsys)  # the retry's own run
        assert code == 2 and "run half-r1 is a retry of run half" in err, err
        sent = (run_dir / "retry-half-r1.jsonl").read_text().splitlines()
        assert {json.loads(line)["itemId"] for line in sent} == missing  # no errored one
        assert sorted(errors()) == sorted(unknown)  # the kept and the new ones, each once
        assert (run_dir / "missing.txt").read_text() == ""
        rows = {json.loads(line)["itemId"] for line in out.read_text().splitlines()}
        assert rows == {str(i) for i in range(1, 1001)}
        code, stdout, _ = user.cli(["status", "half", *state, "--output", "json"], capsys)
        counts = json.loads(stdout)["reconciliation"]
        assert (counts["results"], counts["errors"], counts["missing"]) == (1000, 9, 0)

        code, stdout, _ = user.cli(["retry", "half", *state, "--missing-only"], capsys)
        assert code == 3 and "no ID is missing; 9 errored IDs were not sent again" in stdout
        args = ["retry", "half", *state, "--missing-only", "--allow-partial", "--output", "json"]
        code, stdout, _ = user.cli(args, capsys)
        assert code == 0 and json.loads(stdout)["errors_left"] == len(unknown)
        # Merged again: the retry's results are added, the errors it kept are kept again
        other = tmp_path / "other.jsonl"
        monkeypatch.chdir(tmp_path)  # a relative --out is journalled as an absolute path
        code, _, err = user.cli(["merge", "half", *state, "--out", "other.jsonl"], capsys)
        assert code == 3, err
        assert sorted(errors()) == sorted(unknown)
        rows = {json.loads(line)["itemId"] for line in other.read_text().splitlines()}
        assert rows == {str(i) for i in range(1, 1001)}
        code, stdout, _ = user.cli(["status", "half", *state, "--output", "json"], capsys)
        counts = json.loads(stdout)["reconciliation"]
        assert (counts["results"], counts["errors"], counts["missing"]) == (1000, 9, 0)
        assert json.loads(stdout)["result"] == str(other)
    finally:
        emulator.stop()


def test_retry_with_another_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout retry RUN --role-arn NEW`: the retry's jobs use the new role (the run's was
    wrong); a role that is not an ARN, or that IAM does not know, stops it before any job."""
    emulator = start(fail_rate=0.5, seed=3)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        out = tmp_path / "recs.jsonl"
        _half_failed_run(emulator, user, "role", out, capsys)
        state = ["--state-dir", str(user.state)]
        for wrong, says in [
            ("PersonalizeBatch", "is not an IAM role ARN"),
            ("arn:aws:iam::123456789012:role/nobody", "does not exist in this account"),
        ]:
            code, _, err = user.cli(["retry", "role", *state, "--role-arn", wrong], capsys)
            assert code == 2 and says in err, err
        assert not (user.state / "role-r1").exists() and user.jobs("role-r1") == []

        iam = user.client("iam")
        trust = {"Version": "2012-10-17", "Statement": []}
        role = iam.create_role(RoleName="fixed-role", AssumeRolePolicyDocument=json.dumps(trust))
        new_role = role["Role"]["Arn"]
        code, _, err = user.cli(["retry", "role", *state, "--role-arn", new_role], capsys)
        assert code == 0, err
        retried = user.jobs("role-r1")
        assert retried
        for job in retried:
            arn = job["batchInferenceJobArn"]
            described = user.personalize.describe_batch_inference_job(batchInferenceJobArn=arn)
            assert described["batchInferenceJob"]["roleArn"] == new_role
        rows = [json.loads(line)["userId"] for line in out.read_text().splitlines()]
        assert sorted(rows) == sorted(f"user-{i}" for i in range(2000))
    finally:
        emulator.stop()


@pytest.mark.parametrize("crash_in", ["submit", "combine", "replace_reports"])
def test_an_interrupted_retry_is_finished_not_started_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    crash_in: str,
) -> None:
    """`fanout retry` stopped before its child run submitted, or after it merged, before or
    after appending its results: the next `fanout retry` finishes that child (no second child,
    no job made twice; not with --missing-only, which it was not started with) and the result
    holds every ID exactly once."""
    from fanout import pipeline
    from fanout import retry as retrying

    emulator = start(fail_rate=0.5, seed=3)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        out = tmp_path / "recs.jsonl"
        _half_failed_run(emulator, user, "cut", out, capsys)
        where = pipeline if crash_in == "submit" else retrying
        real = getattr(where, crash_in)

        def crash(*args: object) -> None:
            if crash_in != "submit":
                real(*args)  # done, then the process dies before the journal hears of it
            raise KeyboardInterrupt

        monkeypatch.setattr(where, crash_in, crash)
        code, _, _ = user.cli(["retry", "cut", "--state-dir", str(user.state)], capsys)
        assert code == 130
        monkeypatch.setattr(where, crash_in, real)
        jobs = len(user.jobs("cut-r1"))
        code, _, err = user.cli(
            ["retry", "cut", "--state-dir", str(user.state), "--missing-only"], capsys
        )
        assert code == 2 and "was started without --missing-only: finish it the same way" in err
        state = ["--state-dir", str(user.state)]
        code, stdout, _ = user.cli(["status", "cut", *state], capsys)
        assert "cut-r1 unfinished: `fanout retry cut` finishes it" in stdout
        code, _, err = user.cli(
            ["merge", "cut", *state, "--out", str(tmp_path / "x.jsonl")], capsys
        )
        assert code == 2 and "has a retry that did not finish (cut-r1)" in err, err
        code, _, err = user.cli(["retry", "cut", "--state-dir", str(user.state)], capsys)
        assert code == 0, err
        code, stdout, _ = user.cli(["status", "cut", *state], capsys)
        assert "unfinished" not in stdout
        names = [job["jobName"] for job in user.jobs("cut-r1")]
        assert not (user.state / "cut-r2").exists() and len(names) == len(set(names))
        assert crash_in == "submit" or len(names) == jobs
        rows = [json.loads(line)["userId"] for line in out.read_text().splitlines()]
        assert sorted(rows) == sorted(f"user-{i}" for i in range(2000))  # each exactly once
        assert (user.state / "cut" / "missing.txt").read_text() == ""
    finally:
        emulator.stop()


def test_a_run_stopped_right_after_it_began_is_resumed_as_a_run(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between `run-started` and the submission (it was journalled apart, the lock let
    go between): `fanout resume` only prepared it and exited 0, no job and no result. The
    submission is journalled with `run-started` now: resume creates the jobs and merges."""
    from fanout import pipeline

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    real = pipeline.submit
    monkeypatch.setattr(pipeline, "submit", killed)
    out = user.tmp / "begun.jsonl"
    code, _, _ = user.cli(run_args(user, "begun", user.ids(300), out), capsys)
    assert code == 130 and user.jobs("begun") == []
    monkeypatch.setattr(pipeline, "submit", real)
    code, _, err = user.cli(["resume", "begun", "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    assert user.jobs("begun") and len(out.read_text().splitlines()) == 300


def test_a_new_run_aborts_multipart_uploads_left_under_its_prefix(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-34: a run killed mid multipart upload, its state directory deleted to prepare it
    again as the message says, left the upload open (billed) for good: a resume aborted it, a
    fresh prepare did not."""
    info, s3 = user.info, user.s3
    key = "in/again/shard-00000/part-00000.jsonl"
    s3.create_multipart_upload(Bucket=info.bucket, Key=key, ChecksumAlgorithm="SHA256")
    code, _, err = user.cli(user.prepare_args("again", user.ids(100)), capsys)
    assert code == 0, err
    assert not s3.list_multipart_uploads(Bucket=info.bucket, Prefix="in/again/").get("Uploads")


def test_a_relative_out_is_the_same_file_for_a_resume_from_elsewhere(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out recs.jsonl` given in one directory, the run resumed from another (cron, systemd):
    the result goes where the run was told, not beside the resumer."""
    from fanout import pipeline

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    here, elsewhere = user.tmp / "here", user.tmp / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    real = pipeline.submit
    monkeypatch.setattr(pipeline, "submit", killed)
    code, _, _ = user.cli(run_args(user, "rel", user.ids(300), Path("recs.jsonl")), capsys)
    assert code == 130
    monkeypatch.setattr(pipeline, "submit", real)
    monkeypatch.chdir(elsewhere)
    code, _, err = user.cli(["resume", "rel", "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    assert len((here / "recs.jsonl").read_text().splitlines()) == 300
    assert list(elsewhere.iterdir()) == []


def test_a_run_killed_right_after_its_first_journal_write_is_resumed_as_a_run(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed just after the write that holds `run-started` (found by `kill -9` at that event):
    the submission and the merge are in that same write, so `fanout resume` creates the jobs
    and merges, rather than only preparing and exiting 0 with no job and no result."""
    from fanout.journal import Journal

    real = Journal.append_all
    writes: list[list[str]] = []

    async def then_killed(self: Journal, events: Any) -> Any:
        if writes and writes[-1][0] == "run-started":
            raise KeyboardInterrupt
        written = await real(self, events)
        writes.append([event for event, _ in events])
        return written

    monkeypatch.setattr(Journal, "append_all", then_killed)
    out = user.tmp / "first.jsonl"
    code, _, _ = user.cli(run_args(user, "first", user.ids(300), out), capsys)
    assert code == 130 and user.jobs("first") == []
    assert writes == [["run-started", "submit-started", "merge-started"]]
    monkeypatch.setattr(Journal, "append_all", real)
    code, _, err = user.cli(["resume", "first", "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    assert user.jobs("first") and len(out.read_text().splitlines()) == 300


def test_a_part_changed_on_s3_stops_the_run_before_its_job(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between prepare and submit, someone rewrote a part (same size, two lines swapped). A job
    reads every object under its prefix, and the merge would list the IDs it read back, so the
    run stops before that shard's job, naming the part; put back, `fanout resume` finishes
    the run. (A part changed while its job runs is named at its merge: `_RunMerger._merge`.)"""
    code, _, err = user.cli(user.prepare_args("changed", user.ids(300)), capsys)
    assert code == 0, err
    bucket, key = user.info.bucket, "in/changed/shard-00000/part-00000.jsonl"
    body = user.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = body.splitlines(True)
    user.s3.put_object(Bucket=bucket, Key=key, Body=b"".join([lines[1], lines[0], *lines[2:]]))
    out = user.tmp / "changed.jsonl"
    code, _, err = user.cli([*user.submit_args("changed"), "--out", str(out)], capsys)
    assert code == 1 and user.jobs("changed") == [], err
    assert (
        f"shard 0: its input on S3 changed after the upload, so its job was not created: "
        f"s3://{bucket}/{key} has other bytes than were uploaded" in err
    ), err
    assert "fanout resume changed" in err
    state = ["--state-dir", str(user.state)]
    code, stdout, _ = user.cli(["status", "changed", *state], capsys)
    assert code == 0 and "no job: THE RUN STOPPED: shard 0: its input on S3 changed" in stdout

    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": user.info.kms_key_arn}
    user.s3.put_object(Bucket=bucket, Key=key, Body=body, **kms)  # as it was, a new ETag
    code, _, err = user.cli(["resume", "changed", *state], capsys)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 300
    code, stdout, _ = user.cli(["status", "changed", *state], capsys)
    assert code == 0 and "STOPPED" not in stdout


def test_a_part_changed_while_its_job_runs_is_named_at_its_merge(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A part cut short after the check before its job (here: the check is skipped) is read
    by the job; the shard's merge reads back fewer records than were written and names the
    shard and its prefix, instead of a total at the end that does not add up."""

    from fanout import pipeline

    async def unchecked(*args: object) -> None:
        return None

    monkeypatch.setattr(pipeline, "_check_input", unchecked)
    code, _, err = user.cli(user.prepare_args("during", user.ids(300)), capsys)
    assert code == 0, err
    bucket, key = user.info.bucket, "in/during/shard-00000/part-00000.jsonl"
    body = user.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    user.s3.put_object(Bucket=bucket, Key=key, Body=b"".join(body.splitlines(True)[:-10]))
    out = user.tmp / "during.jsonl"
    code, _, err = user.cli([*user.submit_args("during"), "--out", str(out)], capsys)
    assert code == 1 and "shard 0: its input parts" in err and "290 records now, 300" in err, err


def test_check_input_names_what_changed_under_a_shard_prefix(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing, shorter, rewritten and extra objects are each named (three at most, then a
    count); the same bytes uploaded again (a new ETag) pass, in one PUT (by S3's SHA-256
    checksum) or in parts (S3's checksum is of the parts': by reading the object)."""
    from fanout.aws import Aws, AwsOptions
    from fanout.pipeline import _check_input

    code, _, err = user.cli(
        user.prepare_args("named", user.ids(3000), "--part-bytes", "8KB"), capsys
    )
    assert code == 0, err
    state = RunState.replay(read_events(user.state / "named"), "")
    shard = state.shards[0]
    parts = [event for (number, _), event in sorted(state.parts.items()) if number == 0]
    keys = [S3Uri.parse(part["uri"]).key for part in parts]
    assert len(keys) >= 4
    info, s3 = user.info, user.s3
    options = AwsOptions(
        region=info.region, s3_endpoint_url=info.s3_endpoint, endpoint_url=info.personalize_endpoint
    )

    async def check(kms_key: str | None = None) -> None:
        async with Aws(options) as aws:
            await _check_input(aws.s3, "named", shard, parts, kms_key)

    body = s3.get_object(Bucket=info.bucket, Key=keys[0])["Body"].read()
    s3.put_object(Bucket=info.bucket, Key=keys[0], Body=body)  # the same bytes, a new ETag
    anyio.run(check)
    # ...and uploaded in parts, as `aws s3 cp` does from 8 MB: a composite checksum
    upload = s3.create_multipart_upload(Bucket=info.bucket, Key=keys[0], ChecksumAlgorithm="SHA256")
    one = s3.upload_part(Bucket=info.bucket, Key=keys[0], UploadId=upload["UploadId"],
                         PartNumber=1, Body=body, ChecksumAlgorithm="SHA256")  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=info.bucket, Key=keys[0], UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": one["ETag"],
                                    "ChecksumSHA256": one["ChecksumSHA256"]}]},
    )  # fmt: skip
    head = s3.head_object(Bucket=info.bucket, Key=keys[0], ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] != base64.b64encode(bytes.fromhex(parts[0]["sha256"])).decode()
    anyio.run(check)
    # ...but not under the run's KMS key: refused
    with pytest.raises(InputError, match=f"{keys[0]} is not encrypted with the run's KMS key"):
        anyio.run(check, "arn:aws:kms:us-east-1:123456789012:key/another")

    s3.delete_object(Bucket=info.bucket, Key=keys[1])
    short = s3.get_object(Bucket=info.bucket, Key=keys[2])["Body"].read()
    s3.put_object(Bucket=info.bucket, Key=keys[2], Body=short[:-5])
    other = s3.get_object(Bucket=info.bucket, Key=keys[3])["Body"].read()
    s3.put_object(Bucket=info.bucket, Key=keys[3], Body=other.replace(b"user-", b"USER-", 1))
    s3.put_object(Bucket=info.bucket, Key=S3Uri.parse(shard.prefix).key + "zz.txt", Body=b"x")
    with pytest.raises(InputError) as caught:
        anyio.run(check)
    text = str(caught.value)
    assert f"{shard.prefix}zz.txt is not one of its parts" in text
    assert f"s3://{info.bucket}/{keys[1]} is missing" in text
    assert (
        f"s3://{info.bucket}/{keys[2]} holds {len(short) - 5:,} bytes, not {len(short):,}" in text
    )
    assert "(and 1 more)" in text  # keys[3], rewritten: the fourth problem


def test_check_input_says_when_s3_cannot_be_listed() -> None:
    """A listing S3 refuses (after botocore's retries) stops the run saying what it was for."""
    from fanout.aws import S3Store
    from fanout.pipeline import _check_input
    from fanout.state import ShardInfo

    class Refusing:
        async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[Any]:
            for _ in ():  # an async generator, as S3Store.list_objects is
                yield _
            raise InputError(f"cannot list s3://{bucket}/{prefix}: AccessDenied")

    async def check() -> None:
        shard = ShardInfo(0, 1, 1, 10, "s3://b/in/r/shard-00000/")
        await _check_input(cast("S3Store", Refusing()), "r", shard, [])

    with pytest.raises(InputError) as caught:
        anyio.run(check)
    assert str(caught.value).startswith(
        "shard 0: could not check its input on S3 before creating its job: cannot list "
        "s3://b/in/r/shard-00000/: AccessDenied. `fanout resume r` checks again"
    )


def test_run_reads_its_ids_from_stdin(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout run --ids -` reads stdin once, in the run itself (it used to stop, saying stdin
    could not be read again, before a single job)."""
    data = "".join(f"user-{i}\n" for i in range(500)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = user.tmp / "stdin.jsonl"
    args = run_args(user, "stdin", Path("-"), out, "--max-job-bytes", "5KB", "--output", "json")
    code, stdout, err = user.cli(args, capsys)
    assert code == 0, err
    assert json.loads(stdout)["reconciliation"]["results"] == 500
    assert len(out.read_text().splitlines()) == 500


def test_resume_waits_again_for_timed_out_jobs_and_merges_their_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that stopped waiting for its jobs (`--job-timeout`) and merged without them:
    `fanout resume --job-timeout` waits for them again under the new timeout, merges their
    results into the same file and exits 0 only once every ID has recommendations."""
    emulator = start(job_seconds=1.5)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(400)
        out = tmp_path / "late.jsonl"
        args = run_args(user, "late", ids, out, "--max-job-bytes", "5KB", "--job-timeout", "0.2")
        code, _, err = user.cli(args, capsys)
        assert code == 1, err  # no job finished in time: not one recommendation
        state = ["--state-dir", str(user.state)]
        code, _, err = user.cli(["resume", "late", *state, "--job-timeout", "60"], capsys)
        assert code == 0, err
        rows = [json.loads(line)["userId"] for line in out.read_text().splitlines()]
        assert sorted(rows) == sorted(f"user-{i}" for i in range(400))
        assert (user.state / "late" / "missing.txt").read_text() == ""
        assert len(user.jobs("late")) == len({job["jobName"] for job in user.jobs("late")})
    finally:
        emulator.stop()


def test_bench_measures_each_stage_and_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "st")
    args = ["--poll-interval", "0.1", "--project", "10000000", "--output", "json"]
    code = main(["bench", "--users", "3000", "--state-dir", state, *args])
    out = capsys.readouterr().out
    assert code == 0
    record = json.loads(out)
    stages = {row["stage"]: row for row in record["stages"]}
    assert set(stages) >= {"read+shard+upload", "job run time", "download+merge"}
    assert stages["read+shard+upload"]["records"] == 3000
    assert record["projection"]["users"] == 10_000_000
    assert record["projection"]["bound by"]
    run = record["run_id"]
    assert main(["status", run, "--state-dir", state]) == 0  # an ordinary run
    assert main(["bench", "--endpoint-url", "https://personalize.example"]) == 2
    assert "cost money" in capsys.readouterr().err


def test_a_full_disk_stops_the_run_clearly_and_resume_finishes_it(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from fanout import merge

    ids = user.ids(2000)
    out = user.tmp / "full.jsonl"
    real = merge.merge_shard

    async def disk_full(*args: object, **kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr("fanout.merge.merge_shard", disk_full)
    code, _, err = user.cli(run_args(user, "full", ids, out, "--run-id", "full"), capsys)
    assert code == 1
    assert "No space left on device" in err and "fanout resume full" in err
    assert "Traceback" not in err and not out.exists()
    events = read_events(user.state / "full")  # intact: every line parses
    assert events[-2]["event"] in {"job-status", "submitted", "shard-ready", "job-created"}
    assert events[-1]["event"] == "stopped" and events[-1]["error"] == "OSError"  # for status
    assert "No space left on device" in events[-1]["reason"]
    monkeypatch.setattr("fanout.merge.merge_shard", real)
    code, _, err = user.cli(["resume", "full", "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 2000


def test_a_merge_left_unfinished_then_done_to_another_file_leaves_nothing_beside_the_first(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed mid-merge (kill -9: its temporary file and input-order files stay beside
    the result), then merged to another file with `fanout merge RUN --out OTHER`: what the
    first merge left is removed, not kept for ever."""
    from fanout import merge

    async def killed(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    out = user.tmp / "first.jsonl"
    with monkeypatch.context() as patched:
        patched.setattr("fanout.merge.merge_shard", killed)
        args = run_args(user, "left", user.ids(300), out, "--order", "input")
        code, _, _ = user.cli(args, capsys)
    assert code == 130
    (user.tmp / ".first.jsonl.left.0a1b2c3d.tmp").write_text("half")  # as kill -9 leaves them
    (user.tmp / ".first.jsonl.order.left.x1").mkdir()
    (user.tmp / ".first.jsonl.order.left.x1" / "00000").write_text("held")
    # Another run's merge to the same file, still going: its files are not this run's to remove.
    theirs = [".first.jsonl.left-2.9f8e7d6c.tmp", ".first.jsonl.order.left-2.y2"]
    (user.tmp / theirs[0]).write_text("in progress")
    (user.tmp / theirs[1]).mkdir()
    other = user.tmp / "other.jsonl"
    code, _, err = user.cli(["merge", "left", "--state-dir", str(user.state), "--out",
                             str(other)], capsys)  # fmt: skip
    assert code == 0, err
    assert len(other.read_text().splitlines()) == 300
    assert sorted(p.name for p in user.tmp.iterdir() if p.name.startswith(".first")) == theirs
    assert merge.merge_shard is not killed


NASTY = [
    b"\xef\xbb\xbfu1\r\nu2\r\n\r\nu\x00x\nu1\n" + b"\xff\xfe\xfd\n" + b"z" * 300 + b"\nlast",
    b"\n".join([b"a", b"  b  ", b"\tc", b"a", b"\xe2\x82\xac\xe2\x82", b'"q"', b"\\"]) + b"\n",
    b"x" * 5_000_000 + b"\nok1\nok2\n",  # a line far over the limit, then good ones
]


@pytest.mark.parametrize("data", NASTY, ids=["mixed", "escapes", "huge-line"])
def test_every_input_line_is_accounted_for_end_to_end(
    user: User, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    ids = user.tmp / "nasty.txt"
    ids.write_bytes(data)
    out = user.tmp / "nasty.jsonl"
    run = f"nasty-{NASTY.index(data)}"  # the emulator is shared: each its own jobs
    code, stdout, err = user.cli(run_args(user, run, ids, out, "--output", "json"), capsys)
    assert code in {0, 3}, err
    assert "Traceback" not in err
    counts = json.loads(stdout)["reconciliation"]
    source = RunState.replay(read_events(user.state / run)).prepared["source"]  # type: ignore[index]
    lines = source["lines"]
    accounted = (
        source["blank"] + sum(source["rejected"].values()) + source["duplicates"]
        + counts["results"] + counts["errors"] + counts["missing"]
    )  # fmt: skip
    assert accounted == lines == data.count(b"\n") + (not data.endswith(b"\n"))


def test_kept_duplicates_are_accounted_for_in_the_summary(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --keep-duplicates every line is sent: an ID repeated within its shard is answered
    once (the summary's "sent again" line), one repeated in another shard once in each."""
    ids = user.tmp / "repeats.txt"
    firsts = [f"u{n}" for n in range(1, 301)]
    ids.write_text("\n".join([*firsts, *firsts[:20], "u5"]) + "\n")  # u5 thrice
    out = user.tmp / "repeats.jsonl"
    args = run_args(user, "kept", ids, out, "--keep-duplicates", "--max-job-bytes", "3000")
    code, stdout, err = user.cli([*args, "--output", "text"], capsys)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if line[:1].strip()]
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in lines)
    assert rows["input"].startswith("321 lines: 0 rejected (rejects.jsonl), 0 duplicates")
    shards = RunState.replay(read_events(user.state / "kept")).shards
    assert len(shards) == 2  # u1-u20 (and u5) are in both
    ids_out = [json.loads(line)["userId"] for line in out.read_text().splitlines()]
    assert sorted(set(ids_out)) == sorted(firsts)
    repeated = len(ids_out) - len(firsts)  # IDs answered in both shards
    assert 0 < repeated <= 21
    assert rows["results"] == f"{len(ids_out):,}"
    sent_again = 321 - len(ids_out)
    assert rows["sent again"].startswith(f"{sent_again:,} lines repeated an ID of their shard")


def test_results_as_a_parquet_dataset_on_s3(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    import duckdb

    ids = user.ids(3000)
    bucket = user.info.bucket
    out = f"s3://{bucket}/results/"
    args = run_args(user, "ds", ids, Path("unused"), "--max-job-bytes", "20KB")
    args[args.index("--out") + 1] = out
    code, _, err = user.cli(args, capsys)
    assert code == 0, err
    listing = user.s3.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"]
    names = sorted(item["Key"] for item in listing)
    files = [name for name in names if name.endswith(".parquet")]
    assert "results/_SUCCESS" in names and len(files) > 1
    local = user.tmp / "dataset"
    local.mkdir()
    for key in files:
        head = user.s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"  # the job output's key
        user.s3.download_file(bucket, key, str(local / Path(key).name))
    query = f"select count(*), count(distinct userId) from '{local}/*.parquet'"
    relation = duckdb.sql(query)
    assert relation is not None and relation.fetchall() == [(3000, 3000)]  # read as is
    code, _, err = user.cli([*args[:-2], "--run-id", "ds2", "--log-format", "json"], capsys)
    assert code == 2 and "another run's result dataset" in err and "--overwrite" in err
    # The run's own dataset, merged again, is replaced without --overwrite (its _SUCCESS is
    # not another run's file).
    code, _, err = user.cli(["merge", "ds", "--state-dir", str(user.state), "--out", out], capsys)
    assert code == 0, err
    again = sorted(
        i["Key"] for i in user.s3.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"]
    )
    assert again == names
    # Merged into the run's own input prefix, a later job would read the results as input.
    inside = f"s3://{bucket}/in/ds/"
    code, _, err = user.cli(
        ["merge", "ds", "--state-dir", str(user.state), "--out", inside], capsys
    )
    assert code == 2 and "overlaps the run's --job-input" in err, err
    # A retry adds to a result file, not a dataset: refused up front, saying what to do.
    code, _, err = user.cli(["retry", "ds", "--state-dir", str(user.state)], capsys)
    assert code == 2 and "merge the run to a file first (`fanout merge ds --out" in err, err
    assert not (user.state / "ds-r1").exists()


def test_two_runs_never_merge_into_one_dataset(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run merging into a dataset claims it: another run's merge there is refused while it
    lasts, and one begun at the same moment (both past that check) fails at the end, without
    a _SUCCESS, rather than leave a dataset holding every ID twice."""
    from fanout import pipeline

    bucket = user.info.bucket
    claim = "shared/" + pipeline.dataset_claim("other")
    user.s3.put_object(Bucket=bucket, Key=claim, Body=b"")  # run "other" is merging there
    args = run_args(user, "dsa", user.ids(300), Path("unused"))
    args[args.index("--out") + 1] = f"s3://{bucket}/shared/"
    code, _, err = user.cli(args, capsys)
    assert code == 2 and "run other is merging into it now" in err, err
    assert not user.jobs("dsa")
    user.s3.delete_object(Bucket=bucket, Key=claim)
    finish = pipeline._RunMerger.complete

    async def meanwhile(self: pipeline._RunMerger) -> None:
        user.s3.put_object(Bucket=bucket, Key="shared/part-other-00000.parquet", Body=b"x")
        await finish(self)

    with monkeypatch.context() as patched:
        patched.setattr(pipeline._RunMerger, "complete", meanwhile)
        code, _, err = user.cli(["resume", "dsa", "--state-dir", str(user.state)], capsys)
    assert code == 1 and "another run wrote to this dataset while run dsa merged" in err, err
    keys = {i["Key"] for i in user.s3.list_objects_v2(Bucket=bucket, Prefix="shared/")["Contents"]}
    assert "shared/_SUCCESS" not in keys


def test_no_secret_in_logs_journal_files_or_debug_output(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAFANOUTFAKEKEY123",
        "AWS_SECRET_ACCESS_KEY": "fanoutFakeSecretKeyDoNotLeak/1234567890ab",
        "AWS_SESSION_TOKEN": "FanoutFakeSessionTokenDoNotLeakZZZ",
    }
    ids = user.ids(500)
    out = user.tmp / "secret.jsonl"
    args = run_args(user, "secret", ids, out, "--debug")
    env = {**os.environ, **user.env, **secrets}
    result = subprocess.run(
        [sys.executable, "-m", "fanout.cli", *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Authorization" in result.stderr  # --debug did log the requests
    texts = [result.stdout, result.stderr, out.read_text()]
    texts += [p.read_text(errors="replace") for p in (user.state / "secret").iterdir()]
    mirror = user.s3.get_object(Bucket=user.info.bucket, Key="out/secret/_fanout/journal.jsonl")
    texts.append(mirror["Body"].read().decode())
    for name, value in secrets.items():
        assert all(value not in text for text in texts), f"{name} leaked"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (user.state / "secret").iterdir())
    assert oct((user.state / "secret").stat().st_mode & 0o777) == "0o700"


def test_merge_from_outputs_fanout_did_not_make(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = user.tmp / "outs"
    folder.mkdir()
    (folder / "a.json.out").write_text(
        '{"input":{"userId":"1"},"output":{"recommendedItems":["9","8"],"scores":[0.5,3.1E-4]},'
        '"error":null}\n'
        '{"input": {"userId": "2"}, "output": {"recommendedItems": [], "scores": []}, '
        '"error": "User error: bad"}\n'
        '{"input":{"userId":"3"},"output":{"recommendedItems":["7"]\n'
    )
    (folder / "_CHECK").write_text("")
    (folder / "nested").mkdir()
    (folder / "nested" / "b.out").write_text(
        '{"input":{"userId":"4"},"output":{"recommendedItems":["1"],"scores":[1.0]}}\n'
    )
    out = user.tmp / "merged.csv"
    code, stdout, err = user.cli(
        ["merge", "--from", str(folder), "--out", str(out), "--output", "json"], capsys
    )
    assert code == 3, err  # one error line, one corrupt line
    counts = json.loads(stdout)
    assert (counts["objects"], counts["results"], counts["errors"], counts["corrupt"]) == (
        2,
        2,
        1,
        1,
    )
    assert out.read_text().splitlines()[1:] == ["1,9|8,0.5|0.00031", "4,1,1.0"]
    errors = (user.tmp / "merged.csv.errors.jsonl").read_text()
    assert "User error: bad" in errors
    corrupt = json.loads((user.tmp / "merged.csv.corrupt.jsonl").read_text())
    assert corrupt["line"] == 3 and corrupt["object"].endswith("a.json.out")

    info = user.info  # and from an S3 prefix
    user.s3.put_object(
        Bucket=info.bucket, Key="foreign/x.out", Body=(folder / "nested" / "b.out").read_bytes()
    )
    code, _, err = user.cli(
        ["merge", "--from", f"s3://{info.bucket}/foreign/", "--out", str(user.tmp / "s3.jsonl")],
        capsys,
    )
    assert code == 0, err
    assert json.loads((user.tmp / "s3.jsonl").read_text())["userId"] == "4"


@pytest.mark.parametrize("batch", [1, 2, 65_536])
def test_merge_from_writes_each_id_once(
    user: User, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """An ID answered in two objects (or twice in one): its first usable line wins, the later
    ones are listed in <result>.duplicates.jsonl and counted; an error for an ID with a result,
    or a second error, is listed there too, not in the errors file. The errors are settled a
    batch at a time (millions were all held in memory: helper-35), the same at any size."""
    from fanout.collect import _PendingErrors

    monkeypatch.setattr(_PendingErrors, "BATCH", batch)
    folder = user.tmp / "twice"
    folder.mkdir()
    line = '{{"input":{{"userId":"{}"}},"output":{{"recommendedItems":["{}"],"scores":[0.5]}}}}\n'
    error = '{{"input":{{"userId":"{}"}},"output":{{"recommendedItems":[]}},"error":"{}"}}\n'
    (folder / "a.out").write_text(line.format("u1", "i1") + line.format("u2", "i2"))
    (folder / "b.out").write_text(
        line.format("u1", "i9") + error.format("u2", "boom") + error.format("u3", "x")
        + error.format("u3", "y") + line.format("u4", "i4") + line.format("u4", "i5")
    )  # fmt: skip
    out = user.tmp / "once.jsonl"
    code, stdout, err = user.cli(
        ["merge", "--from", str(folder), "--out", str(out), "--output", "json"], capsys
    )
    assert code == 3, err  # u3 has only errors
    counts = json.loads(stdout)
    assert (counts["results"], counts["errors"], counts["duplicates"]) == (3, 1, 4)
    rows = [json.loads(row) for row in out.read_text().splitlines()]
    assert [(r["userId"], r["recommendedItems"]) for r in rows] == [
        ("u1", ["i1"]), ("u2", ["i2"]), ("u4", ["i4"])
    ]  # fmt: skip
    errors = [
        json.loads(r) for r in (user.tmp / "once.jsonl.errors.jsonl").read_text().splitlines()
    ]
    assert [(e["id"], e["error"]) for e in errors] == [("u3", "x")]
    listed = [
        json.loads(r) for r in (user.tmp / "once.jsonl.duplicates.jsonl").read_text().splitlines()
    ]
    assert sorted((d["id"], d["why"]) for d in listed) == [
        ("u1", "result again"), ("u2", "error, but a result was written"),
        ("u3", "error again"), ("u4", "result again"),
    ]  # fmt: skip
    assert not list(user.tmp.glob(".once.jsonl.errors.pending"))


def test_merge_from_with_no_recommendation_fails_and_keeps_earlier_side_files(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not one result is a failure (exit 1), as for a run, even with --allow-partial; the
    errors, corrupt and duplicates files of an earlier merge beside --out are kept unless
    --overwrite."""
    folder = user.tmp / "errors-only"
    folder.mkdir()
    (folder / "x.out").write_text(
        '{"input":{"userId":"a"},"output":{"recommendedItems":[]},"error":"User error: nope"}\n'
    )
    out = user.tmp / "none.jsonl"
    for extra in ([], ["--allow-partial", "--overwrite"]):
        code, _, err = user.cli(["merge", "--from", str(folder), "--out", str(out), *extra], capsys)
        assert code == 1, err
    for made in user.tmp.glob("none.jsonl*"):
        made.unlink()
    kept = user.tmp / "none.jsonl.errors.jsonl"
    kept.write_text("precious\n")
    code, _, err = user.cli(["merge", "--from", str(folder), "--out", str(out)], capsys)
    assert code == 2
    assert f"{kept} already exist beside --out {out}" in err
    assert "--overwrite" in err
    assert kept.read_text() == "precious\n" and not out.exists()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_crash_after_the_result_moved_into_place_resumes(
    user: User, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    ids = user.ids(500)
    run = f"moved-{where}"
    out = f"s3://{user.info.bucket}/moved/" if where == "s3" else str(user.tmp / "moved.jsonl")
    args = run_args(user, run, ids, Path("unused"))
    args[args.index("--out") + 1] = out
    assert user.cli(args, capsys)[0] == 0
    journal = user.state / run / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert b'"event":"merged"' in lines[-1] and b'"results-ready"' in lines[-2]
    journal.write_bytes(b"".join(lines[:-1]))  # killed after the rename, before `merged`
    code, _, err = user.cli(["resume", run, "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    assert RunState.replay(read_events(user.state / run)).merged is not None
    if where == "local":  # the result moved away since: resumed, the run says so (not exit 0)
        Path(out).rename(user.tmp / "elsewhere.jsonl")
        code, _, err = user.cli(["resume", run, "--state-dir", str(user.state)], capsys)
        assert code == 1 and f"which is gone: `fanout merge {run} --out {out}`" in err, err
        code, _, err = user.cli(
            ["merge", run, "--state-dir", str(user.state), "--out", out], capsys
        )
        assert code == 0 and len(Path(out).read_text().splitlines()) == 500, err


def test_order_input_restores_the_input_order_in_every_format(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shards finish in any order and each job's output is shuffled; `--order input` still
    gives the input's order (first occurrence of a repeated ID), as JSON lines, as Parquet on
    a merge again, and within each file of a dataset on S3."""
    wanted = [str((i * 7919) % 5003) for i in range(1, 2501)]  # not sorted in any sense
    ids = user.tmp / "shuffled.txt"
    ids.write_text("\n".join([*wanted, wanted[5], "bad\x01id", wanted[0]]) + "\n")
    out = user.tmp / "ordered.jsonl"
    small = ("--max-job-bytes", "12KB", "--order", "input")
    code, _, err = user.cli(run_args(user, "ord", ids, out, *small), capsys)
    assert code == 0, err
    assert [json.loads(line)["userId"] for line in out.read_text().splitlines()] == wanted
    assert len(user.jobs("ord")) > 2
    assert [p.name for p in user.tmp.iterdir() if ".order." in p.name] == []

    again = ["merge", "ord", "--state-dir", str(user.state), "--order", "input"]
    parquet = user.tmp / "ordered.parquet"
    stale = user.tmp / ".ordered.parquet.order.ord.k1ll3d"  # what a crash mid-merge leaves
    (stale / "shard-00000").mkdir(parents=True)
    (stale / "shard-00000" / "ordered-0000").write_bytes(b"0" * 16 + b"{}\n")
    code, _, err = user.cli([*again, "--out", str(parquet)], capsys)
    assert code == 0, err
    assert pq.read_table(parquet).column("userId").to_pylist() == wanted
    assert not stale.exists(), "the next merge removes what a crashed one held back"

    bucket = user.info.bucket
    args = run_args(user, "ordds", ids, Path("unused"), *small)
    args[args.index("--out") + 1] = f"s3://{bucket}/ordered/"
    code, _, err = user.cli(args, capsys)
    assert code == 0, err
    listing = user.s3.list_objects_v2(Bucket=bucket, Prefix="ordered/")["Contents"]
    found: list[str] = []
    for key in sorted(item["Key"] for item in listing if item["Key"].endswith(".parquet")):
        local = user.tmp / Path(key).name
        user.s3.download_file(bucket, key, str(local))
        found += pq.read_table(local).column("userId").to_pylist()
    assert found == wanted  # files by shard, each in input order

    code, _, err = user.cli(
        ["merge", "--from", str(user.tmp), "--out", str(user.tmp / "x.jsonl"), *small[2:]],
        capsys,
    )
    assert code == 2 and "--order input needs the input" in err


def test_an_input_found_broken_after_jobs_began_says_so_in_status_and_names_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-30: a gzip cut short, found so at its end once the first shards' jobs were
    created, stopped the run (exit 1) with only the gzip error: nothing said that its jobs
    still ran (a batch job cannot be stopped), and `fanout status` said `submitting`. The error
    now names the jobs still running, and the journal keeps it (`stopped`) for status."""
    emulator = start(job_seconds=30)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        packed = gzip.compress(b"".join(b"user-%07d\n" % i for i in range(4_000_000)), 1)
        args = run_args(user, "cut", Path("-"), tmp_path / "cut.jsonl", "--max-job-bytes", "2MB")
        command = [sys.executable, "-m", "fanout.cli", *args]
        env = {**os.environ, **user.env}
        log = tmp_path / "stderr.txt"
        with log.open("wb") as stderr:  # a file: a pipe left unread would fill and stop it
            child = subprocess.Popen(
                command, stdin=subprocess.PIPE, stderr=stderr, stdout=subprocess.DEVNULL, env=env
            )
        assert child.stdin is not None
        # More than one 4 MiB read of stdin (the source's piece), and the gzip's end not yet
        assert len(packed) > 6_000_000
        child.stdin.write(packed[:6_000_000])
        child.stdin.flush()
        deadline = time.monotonic() + 60
        while not user.jobs("cut"):
            assert time.monotonic() < deadline and child.poll() is None, "no job was created"
            time.sleep(0.02)
        child.stdin.close()
        child.wait(timeout=60)
        err = log.read_text()
        assert child.returncode == 1, err
        lines = err.strip().splitlines()
        assert "gzip data is truncated" in lines[-2]
        assert re.search(r"job\(s\) of run cut still run \(fanout-cut-00000", lines[-1]), lines
        assert "`fanout resume cut` waits for them" in lines[-1]
        code = main(["status", "cut", "--state-dir", str(user.state)])
        assert code == 0
        # helper-32: the journal's copy on S3 (status --job-output elsewhere) lacked the stop.
        key = "out/cut/_fanout/journal.jsonl"
        mirrored = user.s3.get_object(Bucket=user.info.bucket, Key=key)["Body"].read()
        assert b'"event":"stopped"' in mirrored.splitlines()[-1]
    finally:
        emulator.stop()
    events = read_events(user.state / "cut")
    assert [e["event"] for e in events].count("stopped") == 1
    state = RunState.replay(events)
    assert state.stopped is not None and state.stopped["error"] == "InputError"
    rows = dict(status_rows(state))
    assert "InputError: <stdin>: gzip data is truncated" in str(rows["stopped"])
