"""`fanout plan` and `fanout prepare` driven through the CLI against the emulator."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from fanout.cli import main
from fanout.emulator import Emulator
from fanout.journal import read_events


@pytest.fixture
def aws_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The emulator's endpoints and dummy credentials in the environment, as a user sets them."""
    env = emulator.info.environment()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
def s3(emulator: Emulator) -> Any:
    info = emulator.info
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info.region
    ).client("s3", endpoint_url=info.s3_endpoint)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def read_parts(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {
        obj["Key"]: s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for obj in listing.get("Contents", [])
    }


def test_prepare_uploads_kms_shards_and_accounts_for_every_line(
    emulator: Emulator,
    aws_env: dict[str, str],
    s3: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Valid IDs are deduped into KMS-encrypted shards; rejects and duplicates are listed."""
    info = emulator.info
    ids = tmp_path / "users.txt"
    ids.write_bytes(
        b"\xef\xbb\xbfu1\r\n  u2  \n\nu1\nbad\x01id\n" + b"x" * 300 + b'\nq"uote\\\n\xff\xfe\nu3\n'
    )
    code, out, err = run_cli(
        [
            "prepare", "--ids", str(ids),
            "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={info.kms_key_arn}}}",
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/}}",
            "--run-id", "prep-kms", "--state-dir", str(tmp_path / "state"), "--output", "json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["records"] == 4  # u1 u2 q"uote\ u3
    assert summary["duplicates"] == 1
    assert summary["blank"] == 1
    assert summary["rejected"] == 3
    assert summary["lines"] == 9
    assert summary["lines"] == (
        summary["records"] + summary["duplicates"] + summary["blank"] + summary["rejected"]
    )
    parts = read_parts(s3, info.bucket, "in/prep-kms/")
    assert list(parts) == ["in/prep-kms/shard-00000/part-00000.jsonl"]
    lines = [orjson.loads(line) for line in next(iter(parts.values())).splitlines()]
    assert lines == [{"userId": "u1"}, {"userId": "u2"}, {"userId": 'q"uote\\'}, {"userId": "u3"}]
    key = "in/prep-kms/shard-00000/part-00000.jsonl"
    head = s3.head_object(Bucket=info.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == info.kms_key_arn

    run_dir = tmp_path / "state" / "prep-kms"
    (written,) = [e for e in read_events(run_dir) if e["event"] == "part-written"]
    # S3 holds the part's checksum: the SHA-256 the journal records, which S3 checked it against
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(written["sha256"])).decode()
    rejects = [json.loads(line) for line in (run_dir / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [5, 6, 8]
    assert {r["reason"] for r in rejects} == {"control-character", "too-long", "invalid-utf8"}
    assert (run_dir / "duplicates.txt").read_text().startswith('"u1"\t')
    events = [e["event"] for e in read_events(run_dir)]
    assert events[0] == "run-started"
    assert events[-1] == "prepared"
    assert "part-written" in events and "shard-ready" in events


def test_prepare_local_is_deterministic_and_respects_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Local shards mirror the S3 layout, stay under the limits, and are byte-identical twice."""
    ids = tmp_path / "users.csv"
    ids.write_text("user_id,segment\n" + "".join(f"user-{i:05d},a\n" for i in range(3000)))
    outputs = []
    for run in ("local-a", "local-b"):
        code, _, err = run_cli(
            [
                "prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "shards"),
                "--run-id", run, "--state-dir", str(tmp_path / "state"),
                "--max-job-bytes", "20KB", "--part-bytes", "8KB", "--max-concurrent-jobs", "2",
            ],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        root = tmp_path / "shards" / run
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl"))
        outputs.append({name: (root / name).read_bytes() for name in files})
    assert outputs[0] == outputs[1]
    shards: dict[str, int] = {}
    decoded: list[str] = []
    for name, data in outputs[0].items():
        assert len(data) <= 8000 or data.count(b"\n") == 1
        shards[name.split("/")[0]] = shards.get(name.split("/")[0], 0) + len(data)
        decoded.extend(orjson.loads(line)["userId"] for line in data.splitlines())
    assert all(size <= 20_000 for size in shards.values())
    assert sorted(decoded) == [f"user-{i:05d}" for i in range(3000)]
    assert len(shards) >= 4


def test_plan_json_counts_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fanout plan --json` counts a small input exactly, after dedupe."""
    ids = tmp_path / "ids.txt.gz"
    ids.write_bytes(gzip.compress(b"".join(f"{i % 500}\n".encode() for i in range(1000))))
    code, out, err = run_cli(["plan", "--ids", str(ids), "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["records"] == 500
    assert plan["exact"] is True
    assert plan["shards"] == 1


@pytest.mark.parametrize("data", [b"", b"\n  \n", b"bad\x01id\n"])
def test_plan_of_an_input_with_no_id_to_send_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    """helper-30: plan exited 0 where prepare and run exit 1 (an empty export is a failure
    for a nightly job); it still prints the plan."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(data)
    code, out, err = run_cli(["plan", "--ids", str(ids), "--json"], capsys)
    assert code == 1 and json.loads(out)["records"] == 0
    assert "the input holds no ID to send" in err


def test_plan_of_stdin_counts_it_to_its_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fanout plan --ids -` reads stdin to its end and counts it (a plan is all it is read
    for: it printed no records, shards or time before, helper-33); an empty one exits 1."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"u1\nu2\nu1\n")))
    code, out, err = run_cli(["plan", "--ids", "-", "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["records"] == 2 and plan["shards"] == 1 and plan["minutes"] > 0
    assert plan["exact"] is True and "counted to its end" in plan["estimate_how"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, out, err = run_cli(["plan", "--ids", "-", "--json"], capsys)
    assert code == 1 and json.loads(out)["records"] == 0


def test_prepare_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--ids -` reads stdin (plan: size unknown, jobs filled to the limit)."""
    data = b"".join(f"s{i}\n".encode() for i in range(100))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_cli(
        [
            "prepare", "--ids", "-", "--local-dir", str(tmp_path / "s"), "--run-id", "stdin",
            "--state-dir", str(tmp_path / "state"), "--output", "json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["records"] == 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--job-input",
                "s3DataSource={path=s3://b/in/}",
                "--job-output",
                "s3DataDestination={path=s3://b/in/out/}",
            ],
            "at or under --job-input",
        ),
        (
            [
                "--job-input",
                "s3DataSource={path=s3://b/nest/in/}",
                "--job-output",
                "s3DataDestination={path=s3://b/nest/}",
            ],
            "--job-input s3://b/nest/in/ is under --job-output s3://b/nest/",
        ),
        (["--job-input", "s3DataSource={path=s3://b/in/,kmsKeyArn=alias/mine}"], "KMS key ARN"),
        (["--local-dir", "x", "--run-id", "bad id!"], "run ID"),
        (["--local-dir", "x", "--filter-values", "GENRE"], "NAME=V1,V2"),
        (
            ["--local-dir", "x", "--filter-values", "G=a", "--filter-values", "G=b,c"],
            "--filter-values G is given twice (a and b,c): give every value once, e.g. G=a,b,c",
        ),
        (
            ["--local-dir", "x", "--filter-values", "G=a\\,b,c"],
            "takes no backslash (it would not escape a comma)",
        ),
        ([], "exactly one of"),
    ],
)
def test_prepare_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options exit 2 with a message that says what to fix."""
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\n")
    code, _, err = run_cli(
        ["prepare", "--ids", str(ids), "--state-dir", str(tmp_path / "state"), *args], capsys
    )
    assert code == 2
    assert message in err


def test_a_number_option_that_is_not_a_number_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not argparse's `invalid _positive_int value`: the option, and what it takes."""
    args = ["prepare", "--ids", "x", "--local-dir", "x", "--max-job-files", "ten"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "argument --max-job-files: must be a whole number, got 'ten'" in err, err


@pytest.mark.parametrize(
    ("content", "counts"),
    [
        (b"", "0 lines: 0 blank, 0 rejected"),
        (b"\n \n\t\n", "3 lines: 3 blank, 0 rejected"),
        (b"a\x01\nb\x02\n\n", "3 lines: 1 blank, 2 rejected"),
    ],
    ids=["empty", "blank", "rejects"],
)
def test_prepare_of_an_input_with_no_id_to_send_fails(
    content: bytes, counts: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty export, or one of blank lines and rejects only, prepares no shard: exit 1 (as
    `fanout run` does), saying what the lines were, so a nightly job does not pass on it."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    args = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "state"), "--run-id", "none"]  # fmt: skip
    code, out, err = run_cli(args, capsys)
    assert code == 1 and f"the input held no ID to send ({counts}" in err, err
    assert "records             0" in out and not (tmp_path / "out").exists()


def test_input_kind_comes_from_the_recipe(
    emulator: Emulator, aws_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIMS solution version makes itemId lines; trending-now is refused up front."""
    ids = tmp_path / "items.txt"
    ids.write_text("i1\ni2\n")
    info = emulator.info
    code, _, err = run_cli(
        [
            "prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "s"), "--run-id", "kind",
            "--state-dir", str(tmp_path / "state"),
            "--solution-version-arn", info.solution_versions["sims"],
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    part = tmp_path / "s" / "kind" / "shard-00000" / "part-00000.jsonl"
    assert part.read_bytes() == b'{"itemId":"i1"}\n{"itemId":"i2"}\n'
    code, _, err = run_cli(
        [
            "plan", "--ids", str(ids),
            "--solution-version-arn", info.solution_versions["trending-now"],
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "cannot serve batch jobs" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-kind", "itemId"], "--input-kind itemId does not fit recipe"),
        (["--batch-inference-job-mode", "THEME_GENERATION"], "THEME_GENERATION needs a Similar"),
    ],
)
def test_an_input_shape_the_recipe_does_not_take_is_refused_before_anything_is_written(
    emulator: Emulator,
    aws_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    """`fanout prepare` with a user-personalization solution version refuses `--input-kind
    itemId` and THEME_GENERATION (Similar-Items only) up front, as `fanout run` does, instead
    of writing lines its jobs would fail on."""
    ids = tmp_path / "users.txt"
    ids.write_text("u1\nu2\n")
    arn = emulator.info.solution_versions["user-personalization"]
    args = [
        "prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "s"),
        "--state-dir", str(tmp_path / "state"), "--solution-version-arn", arn, *extra,
    ]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "s").exists()
    code, _, err = run_cli(
        ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "s"),
         "--batch-inference-job-mode", "THEME_GENERATION"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "THEME_GENERATION jobs take itemId lines" in err


async def test_multipart_parts_upload_and_read_back(
    emulator: Emulator, aws_env: dict[str, str], s3: Any
) -> None:
    """Parts above the multipart threshold go up in chunks and read back byte for byte."""
    from fanout.aws import Aws, AwsOptions, Encryption
    from fanout.config import UploadSettings
    from fanout.shard import PartFile
    from fanout.storage import S3Uri
    from fanout.upload_s3 import S3PartWriter

    info = emulator.info
    data = b"".join(orjson.dumps({"userId": f"user-{i:07d}"}) + b"\n" for i in range(500_000))
    settings = UploadSettings(multipart_threshold=5 * 1024 * 1024, multipart_chunk=5 * 1024 * 1024)
    options = AwsOptions(
        region=info.region, s3_endpoint_url=info.s3_endpoint, endpoint_url=info.personalize_endpoint
    )
    sent: list[dict[str, str]] = []
    async with Aws(options) as aws:

        def capture(request: Any, **_: Any) -> None:
            sent.append(
                {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            )

        aws.s3._sync.meta.events.register("before-send.s3.UploadPart", capture)
        writer = S3PartWriter(
            aws.s3, S3Uri(info.bucket, "multipart/"), Encryption(info.kms_key_arn), settings
        )
        uploaded = await writer.write(PartFile.of(0, 0, data, 500_000))
    assert len(data) > 2 * settings.multipart_chunk
    key = "multipart/shard-00000/part-00000.jsonl"
    assert uploaded.uri == f"s3://{info.bucket}/{key}"
    assert s3.get_object(Bucket=info.bucket, Key=key)["Body"].read() == data
    assert s3.list_multipart_uploads(Bucket=info.bucket).get("Uploads", []) == []
    head = s3.head_object(
        Bucket=info.bucket, Key=key
    )  # SSE-KMS with the Bucket Key, as S3 keeps it
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", info.kms_key_arn)
    assert head["BucketKeyEnabled"] is True
    # each chunk went with its own SHA-256, as a signed header, and no second hash of the body
    chunks = [
        data[at : at + settings.multipart_chunk]
        for at in range(0, len(data), settings.multipart_chunk)
    ]
    assert [h["x-amz-checksum-sha256"] for h in sent] == [
        base64.b64encode(hashlib.sha256(chunk).digest()).decode() for chunk in chunks
    ]
    for headers in sent:
        assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
        assert "x-amz-checksum-sha256" in headers["Authorization"].split("SignedHeaders=")[1]


def test_ids_from_s3_object_and_prefix(
    emulator: Emulator,
    aws_env: dict[str, str],
    s3: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--ids reads one S3 object (not its siblings), or every object under a prefix."""
    info = emulator.info
    s3.put_object(Bucket=info.bucket, Key="ids/a.txt", Body=b"a1\na2\n")
    s3.put_object(Bucket=info.bucket, Key="ids/a.txt.bak", Body=b"old\n")
    s3.put_object(Bucket=info.bucket, Key="ids/b.txt.gz", Body=gzip.compress(b"b1\n"))
    for spec, records in ((f"s3://{info.bucket}/ids/a.txt", 2), (f"s3://{info.bucket}/ids/", 4)):
        code, out, err = run_cli(
            [
                "prepare", "--ids", spec, "--local-dir", str(tmp_path / "s"),
                "--state-dir", str(tmp_path / "state"), "--output", "json",
            ],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["records"] == records


def test_plan_and_prepare_name_the_objects_they_leave_out(
    emulator: Emulator,
    aws_env: dict[str, str],
    s3: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Spark-style export: `fanout plan` and `fanout prepare` read its part files only, and
    name the markers they leave out (text and JSON), which the run journal keeps."""
    info = emulator.info
    s3.put_object(Bucket=info.bucket, Key="spark/part-0.csv", Body=b"userId\nu1\nu2\n")
    s3.put_object(Bucket=info.bucket, Key="spark/_SUCCESS", Body=b"")
    s3.put_object(Bucket=info.bucket, Key="spark/_committed_7", Body=b'{"added":[]}\n')
    spec = f"s3://{info.bucket}/spark/"
    code, out, err = run_cli(["plan", "--ids", spec, "--format", "csv"], capsys)
    assert code == 0, err
    assert re.search(r"^left out +2 object\(s\) under the input prefix", out, re.M)
    assert f"{spec}_SUCCESS" in out and f"{spec}_committed_7" in out
    code, out, err = run_cli(
        [
            "prepare", "--ids", spec, "--format", "csv", "--local-dir", str(tmp_path / "s"),
            "--run-id", "spark", "--state-dir", str(tmp_path / "state"), "--output", "json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["records"] == 2
    journal = (tmp_path / "state" / "spark" / "journal.jsonl").read_text().splitlines()
    started = json.loads(journal[0])
    assert started["plan"]["skipped"] == [f"{spec}_SUCCESS", f"{spec}_committed_7"]


def test_a_local_directory_is_input_with_its_markers_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ids DIR` reads every file under it (a local Spark export) in order, deduplicating
    across them, and names what it leaves out."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "part-0.csv").write_text("userId\nu1\nu2\n")
    (export / "part-1.csv").write_text("userId\nu3\nu1\n")
    (export / "_SUCCESS").write_text("")
    code, out, err = run_cli(["plan", "--ids", str(export)], capsys)
    assert code == 0, err
    assert re.search(r"^records +3 \(exact: counted\)", out, re.M)
    assert re.search(r"^left out +1 file\(s\) under the input folder .*_SUCCESS$", out, re.M)
    args = [
        "prepare", "--ids", str(export), "--local-dir", str(tmp_path / "s"),
        "--run-id", "folder", "--state-dir", str(tmp_path / "state"), "--output", "json",
    ]  # fmt: skip
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["records"], summary["duplicates"], summary["lines"]) == (3, 1, 4)
    parts = sorted((tmp_path / "s" / "folder").rglob("*.jsonl"))
    assert b"".join(p.read_bytes() for p in parts) == (
        b'{"userId":"u1"}\n{"userId":"u2"}\n{"userId":"u3"}\n'
    )


def test_an_input_folder_must_not_hold_what_the_run_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--local-dir` or `--state-dir` inside the `--ids` folder is refused before anything is
    written (the next run would read this one's shards and journal as IDs); under a `_` name
    there, which input folders leave out, it is allowed."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.txt").write_text("u1\nu2\n")
    state = ["--state-dir", str(tmp_path / "state")]
    for option, place in (("--local-dir", "out"), ("--state-dir", "state"), ("--local-dir", ".")):
        args = ["prepare", "--ids", str(export), "--local-dir", str(tmp_path / "s"), *state]
        args += [option, str(export / place)]
        code, _, err = run_cli(args, capsys)
        assert code == 2
        assert f"{option} is inside the input folder --ids {export}" in err
    assert sorted(p.name for p in export.iterdir()) == ["a.txt"]
    args = ["prepare", "--ids", str(export), "--local-dir", str(export / "_shards"), *state]
    code, _, err = run_cli([*args, "--run-id", "one"], capsys)
    assert code == 0, err
    code, out, err = run_cli([*args, "--run-id", "two", "--output", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["records"] == 2  # the first run's shards were not read


def test_an_input_prefix_must_not_hold_the_job_input_or_output(
    emulator: Emulator,
    aws_env: dict[str, str],
    s3: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With `--ids s3://b/data/`, shards under `s3://b/data/in/` are refused (a later run would
    read them as IDs); under `s3://b/data/_in/` they are left out of the input, so allowed."""
    info = emulator.info
    s3.put_object(Bucket=info.bucket, Key="data/a.txt", Body=b"u1\nu2\n")
    for where, code_wanted in (("data/in/", 2), ("data/", 2), ("data/_in/", 0)):
        job_input = f"s3DataSource={{path=s3://{info.bucket}/{where},kmsKeyArn={info.kms_key_arn}}}"
        code, _, err = run_cli(
            [
                "prepare", "--ids", f"s3://{info.bucket}/data/", "--job-input", job_input,
                "--state-dir", str(tmp_path / "state"),
            ],
            capsys,
        )  # fmt: skip
        assert code == code_wanted, err
        if code:
            assert "--job-input is inside the input folder" in err


def test_missing_input_fails_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing --ids file, or one refused when planned (UTF-16), is reported up front and
    leaves no run behind, not even an empty directory."""
    code, _, err = run_cli(
        [
            "prepare", "--ids", str(tmp_path / "nope.txt"), "--local-dir", str(tmp_path / "s"),
            "--run-id", "missing", "--state-dir", str(tmp_path / "state"),
        ],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert "nope.txt" in err and "No such file" in err
    assert not (tmp_path / "state" / "missing").exists()
    utf16 = tmp_path / "excel.txt"
    utf16.write_bytes("u1\nu2\n".encode("utf-16"))
    args = ["prepare", "--ids", str(utf16), "--local-dir", str(tmp_path / "s")]
    code, _, err = run_cli(
        [*args, "--run-id", "u16", "--state-dir", str(tmp_path / "state")], capsys
    )
    assert code == 1 and "UTF-16" in err
    assert not (tmp_path / "state" / "u16").exists()  # refused: no empty run left behind


def test_an_existing_run_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Preparing a run ID that already has a journal is refused, and says what to do."""
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\n")
    args = [
        "prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "s"),
        "--run-id", "twice", "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "already exists" in err and "choose another --run-id" in err


def test_a_new_run_needs_where_its_shards_go_empty(
    tmp_path: Path, aws_env: dict[str, str], emulator: Emulator, s3: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A run ID whose state directory was deleted, prepared again: its prefix (or local
    directory) still holds the old parts, which its jobs would read beside the new ones. It is
    refused before the run begins, and goes once they are removed."""
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"u{i}\n" for i in range(50)))
    info = emulator.info
    state = tmp_path / "state"
    job_input = f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={info.kms_key_arn}}}"
    for run, where in (("stale", ["--job-input", job_input]),
                       ("stale-local", ["--local-dir", str(tmp_path / "shards")])):  # fmt: skip
        args = ["prepare", "--ids", str(ids), *where, "--run-id", run, "--state-dir", str(state)]
        assert run_cli(args, capsys)[0] == 0
        shutil.rmtree(state / run)
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "perhaps left by an earlier run of this ID" in err, err
        assert not (state / run).exists()  # nothing begun
        if run == "stale":
            assert f"s3://{info.bucket}/in/stale/ already holds objects" in err
            assert "aws s3 rm --recursive" in err
            for key in read_parts(s3, info.bucket, "in/stale/"):
                s3.delete_object(Bucket=info.bucket, Key=key)
        else:
            assert f"{tmp_path / 'shards' / run} already holds files" in err
            shutil.rmtree(tmp_path / "shards" / run)
        assert run_cli(args, capsys)[0] == 0


def test_a_bucket_or_key_that_cannot_be_used_is_refused_before_the_run_begins(
    tmp_path: Path, aws_env: dict[str, str], emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A missing bucket, a key of another region or one KMS does not know: exit 2 with what
    to fix, before the run begins (it would stop at its first upload, unable to go on)."""
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\n")
    info = emulator.info
    other_region = info.kms_key_arn.replace(f":{info.region}:", ":eu-west-1:")
    unknown = info.kms_key_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    cases = [
        (info.bucket, other_region, f"is in eu-west-1, but the region is {info.region}"),
        (info.bucket, unknown, "cannot make a data key"),
        ("no-such-bucket", info.kms_key_arn, "bucket no-such-bucket does not exist"),
    ]
    for bucket, key, expected in cases:
        job_input = f"s3DataSource={{path=s3://{bucket}/in/,kmsKeyArn={key}}}"
        args = ["prepare", "--ids", str(ids), "--job-input", job_input, "--run-id", "nope",
                "--state-dir", str(tmp_path / "state")]  # fmt: skip
        code, _, err = run_cli(args, capsys)
        assert code == 2 and expected in err, err
        assert not (tmp_path / "state" / "nope").exists()
