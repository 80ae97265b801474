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
