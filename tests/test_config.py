"""Configuration models: how their errors read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fanout.config import JobInput, Limits, model_errors


def test_a_validators_message_reads_as_it_was_written() -> None:
    """Every field's error in one line, a validator's message without pydantic's prefix."""
    with pytest.raises(ValidationError) as caught:
        JobInput.model_validate({"s3DataSource": {"path": "b/in/", "kmsKeyArn": "alias/x"}})
    text = model_errors(caught.value)
    assert text.startswith("s3DataSource.path: path must be s3://BUCKET/PREFIX/, got 'b/in/'; ")
    assert "s3DataSource.kmsKeyArn: kmsKeyArn must be a KMS key ARN" in text
    assert "Value error" not in text


def test_a_bound_keeps_pydantics_own_message() -> None:
    """Errors that are not a validator's ValueError keep pydantic's message."""
    with pytest.raises(ValidationError) as caught:
        Limits(part_bytes=0, max_job_files="many")
    assert model_errors(caught.value) == (
        "max_job_files: Input should be a valid integer, unable to parse string as an integer; "
        "part_bytes: Input should be greater than 0"
    )


@pytest.mark.parametrize(
    ("path", "fixed"),
    [
        ("s3://b//in/", "s3://b/in/"),
        ("s3://b/in//", "s3://b/in/"),
        ("s3://b//x//y/", "s3://b/x/y/"),
    ],
)
def test_a_path_with_an_empty_folder_name_is_refused_with_the_one_meant(
    path: str, fixed: str
) -> None:
    """`s3://b//in/` would be the prefix `/in/`: refused, naming the path meant."""
    with pytest.raises(ValidationError) as caught:
        JobInput.model_validate({"s3DataSource": {"path": path}})
    assert model_errors(caught.value) == (
        f"s3DataSource.path: path {path!r} has an empty folder name ('//'): did you mean {fixed}?"
    )


def test_a_result_dataset_or_policy_path_with_an_empty_folder_name_is_refused() -> None:
    from fanout.errors import ConfigError
    from fanout.iam import policies
    from fanout.pipeline import MergeSettings

    with pytest.raises(ConfigError, match=r"--out 's3://b/res//' has an empty folder name"):
        MergeSettings(out="s3://b/res//")
    role = "arn:aws:iam::123456789012:role/r"
    with pytest.raises(ConfigError, match=r"--job-output path .s3://bkt//out/. has an empty"):
        policies(job_input="s3://bkt/in/", job_output="s3://bkt//out/", role_arn=role)
