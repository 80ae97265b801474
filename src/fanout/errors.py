"""Every error fanout raises on purpose, so callers can catch one base class.

    FanoutError
     ├── ConfigError      bad options, settings or files given to fanout (usage error)
     ├── InputError       an input the user gave cannot be read at all
     ├── UploadError      writing shards to S3 failed
     ├── SubmitError      creating or tracking a batch job failed
     │    ├── RetryLater  the service said "not now" (rate or quota) or was unreachable
     │    └── JobExists   a job of that name already exists (adopt it)
     ├── JobFailed        a batch job ended CREATE FAILED
     └── MergeError       reading or merging outputs failed

Misuse of an object (closed, started twice) is a RuntimeError, not a FanoutError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "ConfigError",
    "FanoutError",
    "InputError",
    "JobExists",
    "JobFailed",
    "MergeError",
    "RetryLater",
    "RunBusy",
    "SubmitError",
    "UploadError",
    "naming",
]


class FanoutError(Exception):
    """Base class of fanout's own errors; the CLI prints `TypeName: message`."""

    exit_code = 1


class ConfigError(FanoutError):
    """Options, settings or files given to fanout are invalid."""

    exit_code = 2


class RunBusy(FanoutError):
    """Another fanout process works on the run (its journal is locked): try again later.

    Exit code 75, sysexits' EX_TEMPFAIL, so that a scheduler can tell "the last run is still
    going" from a failure."""

    exit_code = 75


class InputError(FanoutError):
    """An input the user gave cannot be read."""


class UploadError(FanoutError):
    """Writing shards to S3 failed."""


class SubmitError(FanoutError):
    """Creating or tracking a batch job failed."""


class RetryLater(SubmitError):
    """`LimitExceededException` (request rate or the job quota) or no answer: wait, try again."""


class JobExists(SubmitError):
    """`ResourceAlreadyExistsException`: a job of that name exists (names are never reused)."""


class JobFailed(FanoutError):
    """A batch job ended CREATE FAILED."""

    def __init__(self, job_arn: str, reason: str) -> None:
        self.job_arn = job_arn
        self.reason = reason
        super().__init__(f"batch job {job_arn} failed: {reason}")


class MergeError(FanoutError):
    """Reading or merging batch outputs failed."""


@contextlib.contextmanager
def naming(path: object) -> Iterator[None]:
    """An OSError raised inside without a file name gets `path` as its own: a write to an open
    file says only "No space left on device", and the user must know which disk is full."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def first_of(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`exc` if it is one of `kinds`, else the first such exception in it, a group (task
    groups wrap what their tasks raise), or None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := first_of(inner, kinds)) is not None:
                return found
        return None
    return exc if isinstance(exc, kinds) else None
