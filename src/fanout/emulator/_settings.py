"""Every knob of the emulator, with the service's documented or observed behaviour as the default.

Facts the reference tags as uncertain ([U]) are settings here, so a test can switch to the other
plausible behaviour and check that the client copes with both. `docs/emulator.md` lists each one
with the reference fact behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account: S3/KMS/IAM live there


class EmulatorSettings(BaseModel):
    """Settings of one emulator instance. Mutable while it runs (tests flip faults on and off)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- network and identity ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address both endpoints bind to.")
    s3_port: int = Field(0, ge=0, le=65535, description="S3/KMS/IAM/STS port; 0 picks a free one.")
    personalize_port: int = Field(0, ge=0, le=65535, description="Personalize port; 0 = free.")
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    bucket: str = Field("fanout-emulator", min_length=3, max_length=63)
    require_signature: bool = Field(
        True, description="Reject Personalize calls without an Authorization header, as AWS does."
    )

    # -- quotas and timing ------------------------------------------------------------------------
    quota: int = Field(5, ge=1, description="Non-terminal batch inference jobs per account.")
    segment_quota: int = Field(5, ge=1, description="Non-terminal batch segment jobs per account.")
    job_seconds: float = Field(
        0.5, ge=0, description="Minimum time a job spends in each non-terminal state."
    )
    seconds_per_million_records: float = Field(
        0.0, ge=0, description="Extra IN_PROGRESS time per million input records (job cost model)."
    )
    workers: int = Field(2, ge=1, description="Jobs computing at once; the rest wait their turn.")

    # -- the model --------------------------------------------------------------------------------
    interactions: Path | None = Field(
        None, description="Interactions CSV (USER_ID,ITEM_ID,TIMESTAMP); default synthetic data."
    )
    items: Path | None = Field(None, description="Items CSV (ITEM_ID + attribute columns).")
    seed: int = Field(0, description="Seeds the synthetic data, the model, shuffles and faults.")
    synthetic_users: int = Field(20_000, ge=1)
    synthetic_items: int = Field(1_000, ge=2)

    # -- fault injection --------------------------------------------------------------------------
    throttle_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of calls answered LimitExceededException/SlowDown."
    )
    fail_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of jobs that end CREATE FAILED."
    )

    # -- service limits (reference section 3) -----------------------------------------------------
    max_input_files: int = Field(1000, ge=1)
    max_input_bytes: int = Field(1_000_000_000, ge=1)
    max_records_per_file: int = Field(50_000_000, ge=1)
    theme_max_records_per_file: int = Field(100, ge=1)
    item_affinity_max_queries_per_file: int = Field(500, ge=1)
    attribute_affinity_max_queries_per_file: int = Field(10, ge=1)
    max_tags: int = Field(50, ge=0)
    max_id_length: int = Field(256, ge=1)

    # -- uncertain facts ([U] in the reference, section 8) ----------------------------------------
    status_spelling: Literal["observed", "documented"] = Field(
        "observed", description="'CREATE PENDING'/'CREATE IN_PROGRESS' or 'PENDING'/'IN PROGRESS'."
    )
    num_results_min: int = Field(1, description="Smallest numResults a batch inference job takes.")
    num_results_max: int = Field(500, description="Largest numResults a batch inference job takes.")
    default_num_results: int = Field(25, ge=1)
    max_item_list: int = Field(500, ge=1, description="Largest itemList for personalized ranking.")
    theme_regions: list[str] = Field(
        ["us-east-1", "us-west-2", "ap-northeast-1"],
        description="Regions where THEME_GENERATION jobs can run (reference §3).",
    )
    output_naming: Literal["basename", "relative"] = Field(
        "basename", description="Output key: input file's base name, or its path under the prefix."
    )
    write_check_object: bool = Field(True, description="Write a _CHECK object beside the outputs.")
    check_object_body: str = Field("", description="Body of the _CHECK object.")
    shuffle_output: bool = Field(True, description="Output lines in shuffled (seeded) order.")
    java_number_format: bool = Field(
        True,
        description="Write small scores as Java does (3.773E-4), as recorded real output does.",
    )
    segment_output_key: Literal["usersList", "recommendedUsers"] = Field(
        "usersList", description="Key of the user list in segment output (observed vs documented)."
    )
    segment_attribute_echo: Literal["input", "top-level"] = Field(
        "input", description="Echo itemAttributes inside 'input' (observed) or at top level (doc)."
    )
    blank_lines: Literal["skip", "error-line"] = Field("skip")
    malformed_lines: Literal["error-line", "fail-job"] = Field("error-line")
    non_string_ids: Literal["error-line", "accept"] = Field("error-line")
    unknown_item: Literal["error-line", "empty"] = Field(
        "error-line", description="RELATED_ITEMS / item-affinity input with an unknown itemId."
    )
    context_field: Literal["ignore", "error-line"] = Field(
        "ignore", description="A 'context' key on a batch input line."
    )
    v2_reasons: bool = Field(
        False, description="Add a 'reasons' list to user-personalization-v2 output (shape unknown)."
    )
    s3_errors_at_create: bool = Field(
        False,
        description="Reject bad S3 input/output paths at create (InvalidInputException) "
        "instead of failing the job (CREATE FAILED).",
    )
    list_order: Literal["newest-first", "oldest-first"] = Field("newest-first")
