"""Job members AWS added after fanout's botocore, from an AWS CLI skeleton to the service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.session
import pytest
from emulated import User, start

from fanout.awsargs import use_newer_model

BIN = Path(sys.executable).parent


@pytest.mark.awscli
def test_a_filled_in_aws_cli_skeleton_with_ranking_influence_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout run --cli-input-json file://job.json` from the bundled AWS CLI's skeleton, with
    rankingInfluence filled in, runs, and every job the service made carries it."""
    skeleton = subprocess.run(
        [str(BIN / "aws"), "personalize", "create-batch-inference-job", "--generate-cli-skeleton"],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    job = json.loads(skeleton.stdout)
    emulator = start()
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        info = user.info
        for unused in ("filterArn", "tags", "themeGenerationConfig", "batchInferenceJobMode"):
            del job[unused]
        influence = {"POPULARITY": 0.5, "FRESHNESS": 0.2}
        job.update(
            jobName="ranked",
            solutionVersionArn=info.solution_versions["user-personalization"],
            numResults=5,
            roleArn=info.role_arn,
            jobInput={"s3DataSource": {"path": f"s3://{info.bucket}/in/"}},
            jobOutput={"s3DataDestination": {"path": f"s3://{info.bucket}/out/"}},
            batchInferenceJobConfig={"rankingInfluence": influence},
        )
        (tmp_path / "job.json").write_text(json.dumps(job))
        code, _, err = user.cli(
            [
                "run", "--ids", str(user.ids(40)), "--out", str(tmp_path / "recs.jsonl"),
                "--run-id", "ranked", "--state-dir", str(user.state), "--poll-interval", "0.05",
                "--cli-input-json", f"file://{tmp_path}/job.json",
            ],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        # A client whose model knows rankingInfluence (a stock one would drop it from answers).
        personalize = boto3.Session(
            botocore_session=use_newer_model(botocore.session.get_session()),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=info.region,
        ).client("personalize", endpoint_url=info.personalize_endpoint)
        jobs = personalize.list_batch_inference_jobs()["batchInferenceJobs"]
        arns = [j["batchInferenceJobArn"] for j in jobs if j["jobName"].startswith("ranked-")]
        assert arns
        for arn in arns:
            described = personalize.describe_batch_inference_job(batchInferenceJobArn=arn)
            config = described["batchInferenceJob"]["batchInferenceJobConfig"]
            assert config == {"rankingInfluence": influence}
    finally:
        emulator.stop()
