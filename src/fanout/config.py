"""Configuration: one frozen pydantic model per concern, composed into a run's settings.

Every bound is validated here, so the stages can trust what they are given. Memory use of the
defaults (the worst case, per run):

    read buffers    3 × chunk_bytes                                      ≈  12 MiB
    encoded pieces  up to 8 of ≈ 7 MiB, each with its records' ends and  ≈  56 MiB
                    fingerprints (`_encode._OutputPool.KEEP`)
    parts           (upload concurrency + upload queue + 1) × part_bytes ≈ 176 MiB
                    to S3 (uploads send the part's own buffer: no second copy per
                    request); `--local-dir` writes each part from the pieces as it is cut
    dedupe          ~10 bytes per distinct ID (a hash table sized ahead) ≈ 100 MiB at 10M IDs
                    (up to 15 when the input's size is unknown and the table grows)

so about 350 MiB at 10 million IDs to S3, plus the interpreter and the AWS SDK (~70 MiB), and
about 170 MiB with `--local-dir`. Measured peak RSS, 10M UUIDs, defaults (2026-11-28): to the
emulator's S3 437 MiB (337 without dedupe, 184 at 1M IDs: parts in flight reach their bound
between the two), to a local directory 193 MiB (97 without dedupe). Lower `part_bytes` or the
upload concurrency to lower it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError
from .storage import empty_segment

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
KiB = 1024
MiB = 1024 * KiB


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Limits(_Frozen):
    """Service limits per job and per file (reference §3), and the quota the planner plans for."""

    max_job_bytes: int = Field(1_000_000_000, gt=0, description="Input bytes per job (1 GB).")
    max_job_files: int = Field(1000, gt=0, description="Input files per job.")
    max_file_records: int = Field(50_000_000, gt=0, description="Records per input file.")
    theme_max_file_records: int = Field(100, gt=0, description="Records per file with themes.")
    segment_item_file_records: int = Field(
        500, gt=0, description="Item queries per file in a batch segment job (Item-Affinity)."
    )
    segment_attribute_file_records: int = Field(
        10, gt=0, description="Attribute queries per file (Item-Attribute-Affinity)."
    )
    part_bytes: int = Field(16 * MiB, gt=0, description="Target size of one part file.")
    max_concurrent_jobs: int = Field(5, gt=0, description="The account's batch job quota.")


class Timing(_Frozen):
    """The job cost model the planner uses to estimate run time (reference §6)."""

    job_overhead_minutes: float = Field(
        20.0, ge=0, description="Fixed time per job (real runs: 13–27 min even for 3 users)."
    )
    records_per_minute: float = Field(
        250_000.0, gt=0, description="Per-job throughput once running (not published: assumed)."
    )


class UploadSettings(_Frozen):
    """How parts go to S3: bounded concurrency, multipart for large parts."""

    concurrency: int = Field(8, gt=0, description="Parts uploading at once.")
    queue: int = Field(2, ge=0, description="Full parts waiting for an upload slot.")
    multipart_threshold: int = Field(
        256 * MiB,
        ge=5 * MiB,
        description="Parts from this size go multipart (a single PUT takes up to 5 GiB; "
        "parallelism comes from uploading several parts at once).",
    )
    multipart_chunk: int = Field(16 * MiB, ge=5 * MiB, description="Size of one multipart chunk.")


def _check_kms_arn(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"arn:aws[a-z-]*:kms:[^:]*:\d{12}:key/.+", value):
        raise ValueError(
            f"kmsKeyArn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), as "
            f"Personalize requires; got {value!r} (aliases and bare key IDs are not accepted)"
        )
    return value


class S3DataConfig(_Frozen):
    """`S3DataConfig` of the service: a path and an optional KMS key ARN."""

    path: str = Field(min_length=1, max_length=256)
    kms_key_arn: str | None = Field(None, alias="kmsKeyArn", max_length=2048)

    @field_validator("path")
    @classmethod
    def _s3_path(cls, value: str) -> str:
        if not value.startswith("s3://") or len(value) <= 5 or value[5] == "/":
            raise ValueError(f"path must be s3://BUCKET/PREFIX/, got {value!r}")
        if (why := empty_segment(value)) is not None:
            raise ValueError(f"path {why}")
        return value

    @field_validator("kms_key_arn")
    @classmethod
    def _kms(cls, value: str | None) -> str | None:
        return _check_kms_arn(value)


class JobInput(_Frozen):
    s3_data_source: S3DataConfig = Field(alias="s3DataSource")


class JobOutput(_Frozen):
    s3_data_destination: S3DataConfig = Field(alias="s3DataDestination")


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"run ID {run_id!r} must be 1-32 letters, digits or '-', starting with a letter or "
            "digit (it becomes part of S3 keys and job names)"
        )
    return run_id


def default_state_dir() -> Path:
    """`${XDG_STATE_HOME:-~/.local/state}/fanout/runs`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fanout" / "runs"


def model_errors(exc: Any) -> str:
    """A pydantic ValidationError as one readable line: `field: message; …` (a validator's own
    message as it wrote it, without pydantic's "Value error, " before it)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {_message(err)}"
        for err in exc.errors()
    )


def _message(err: Any) -> str:
    raised = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
    return str(raised) if isinstance(raised, ValueError) else str(err["msg"])
