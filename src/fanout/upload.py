"""The upload stage: part files go to a `PartWriter`, several at once, from one bounded stream.

Writers take a `PartFile` and return an `UploadedPart`: `LocalPartWriter` here (`--local-dir`),
`upload_s3.S3PartWriter` for S3 (kept apart so that local runs never import the AWS SDK).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .errors import UploadError
from .journal import private_dir
from .shard import PartFile


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """A part file where the job will read it."""

    shard: int
    part: int
    uri: str
    etag: str
    nbytes: int
    records: int
    sha256: str


class PartWriter(Protocol):
    async def write(self, part: PartFile) -> UploadedPart: ...


class LocalPartWriter:
    """Writes parts under `base/` with the same layout as S3 (`--local-dir`)."""

    def __init__(self, base: Path) -> None:
        self._base = base

    async def write(self, part: PartFile) -> UploadedPart:
        path = self._base / part.name
        try:
            sha256 = await anyio.to_thread.run_sync(_write_part, path, part)
        except OSError as exc:
            raise UploadError(f"cannot write {path}: {exc.strerror}") from exc
        return UploadedPart(part.shard, part.part, str(path), "", part.nbytes, part.records, sha256)


# Bytes hashed then written at a time: small enough that the write reads them from the cache.
_STEP = 1 << 20


def _write_part(path: Path, part: PartFile) -> str:
    """Write `part` to `path` (through a temporary name) a MiB at a time, hashing each MiB just
    before it is written; return the SHA-256. One worker-thread hop for the lot, and no joined
    copy."""
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in part.chunks:
            whole = memoryview(chunk)
            for at in range(0, len(whole), _STEP):
                view = whole[at : at + _STEP]
                digest.update(view)
                while view:
                    view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return digest.hexdigest()


async def upload_parts(
    parts: MemoryObjectReceiveStream[PartFile],
    writer: PartWriter,
    concurrency: int,
    on_written: Callable[[UploadedPart], Awaitable[None]],
) -> None:
    """Write every part from the stream, `concurrency` at once; call `on_written` after each."""

    async def worker(receive: MemoryObjectReceiveStream[PartFile]) -> None:
        async with receive:
            async for part in receive:
                await on_written(await writer.write(part))

    async with parts, anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker, parts.clone())
