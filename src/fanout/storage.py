"""The object-store seam: what the stages need from S3, as a Protocol.

The AWS adapter (`aws.py`) implements it with aioboto3; tests use in-memory fakes. S3 URIs are
parsed here so every stage reads them the same way. Every method of an implementation raises
fanout's errors (a `FanoutError` saying what to do), never its SDK's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class S3Uri:
    """`s3://bucket/key`; `key` may be empty (the bucket's root) or a prefix ending in `/`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, text: str, *, what: str = "S3 location") -> S3Uri:
        if not text.startswith("s3://"):
            raise ConfigError(f"{what} {text!r} must start with s3://")
        bucket, _, key = text[5:].partition("/")
        if not bucket:
            raise ConfigError(f"{what} {text!r} has no bucket name: use s3://BUCKET/PREFIX/")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Uri:
        """The URI of `name` under this one, treating this one as a folder."""
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return S3Uri(self.bucket, base + name)

    def holds(self, other: S3Uri) -> bool:
        """Whether `other` is at or under this URI (as a prefix: `in/` holds `in/a/` but a
        prefix without its `/`, `in`, also holds `inx/`)."""
        return self.bucket == other.bucket and other.key.startswith(self.key)

    def as_prefix(self) -> S3Uri:
        """This URI with a trailing `/`, so that it matches one folder only."""
        return (
            self if not self.key or self.key.endswith("/") else S3Uri(self.bucket, self.key + "/")
        )


def empty_segment(path: str) -> str | None:
    """Why the S3 folder `path` (`s3://…`) is refused for its empty name between two slashes,
    or None. S3 would keep it in every key (`s3://b//in/` is the prefix `/in/`, not `in/`):
    a typo, almost always, and how Personalize reads such a path is not documented."""
    if "//" not in path[5:]:
        return None
    fixed = "s3://" + "/".join(part for part in path[5:].split("/") if part) + "/"
    return f"{path!r} has an empty folder name ('//'): did you mean {fixed}?"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""  # as S3 lists it, quoted


class ObjectReader(Protocol):
    """Reading objects: what sources and the merge need."""

    def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under `prefix`, in key order, paginating as needed."""
        ...

    def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object's bytes as a stream of chunks of about `chunk_size` bytes."""
        ...
