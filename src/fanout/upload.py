"""Writing part files: to S3 (SSE-KMS, checksums, multipart for large parts) or to a local folder.

Both writers take a `PartFile` and return an `UploadedPart`; the pipeline runs several writes at
once (`UploadSettings.concurrency`) from one bounded stream. A failed multipart upload is aborted
(shielded from cancellation) so no unfinished upload is left behind to be billed.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiofiles
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from botocore.exceptions import BotoCoreError, ClientError

from .aws import Encryption, S3Store, raise_s3_error
from .config import UploadSettings
from .errors import UploadError
from .journal import private_dir
from .shard import PartFile
from .storage import S3Uri


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


class S3PartWriter:
    """Uploads parts under `base` (the run's input prefix) with SSE-KMS and CRC32 checksums."""

    def __init__(
        self, store: S3Store, base: S3Uri, encryption: Encryption, settings: UploadSettings
    ) -> None:
        self._store = store
        self._base = base.as_prefix()
        self._encryption = encryption
        self._settings = settings

    async def write(self, part: PartFile) -> UploadedPart:
        uri = self._base.child(part.name)
        try:
            if len(part.data) < self._settings.multipart_threshold:
                etag = await self._store.put_object(
                    uri.bucket, uri.key, part.data, self._encryption
                )
            else:
                etag = await self._multipart(uri, part.data)
        except (ClientError, BotoCoreError) as exc:
            raise_s3_error(exc, "PutObject", str(uri), UploadError)
        return UploadedPart(
            part.shard, part.part, str(uri), etag, len(part.data), part.records, part.sha256
        )

    async def _multipart(self, uri: S3Uri, data: bytes) -> str:
        store = self._store
        upload_id = await store.create_multipart(uri.bucket, uri.key, self._encryption)
        try:
            size = self._settings.multipart_chunk
            parts = []
            for number, start in enumerate(range(0, len(data), size), start=1):
                parts.append(
                    await store.upload_part(
                        uri.bucket, uri.key, upload_id, number, data[start : start + size]
                    )
                )
            return await store.complete_multipart(uri.bucket, uri.key, upload_id, parts)
        except BaseException:
            with anyio.move_on_after(30, shield=True):
                await store.abort_multipart(uri.bucket, uri.key, upload_id)
            raise


class LocalPartWriter:
    """Writes parts under `base/` with the same layout as S3 (`--local-dir`)."""

    def __init__(self, base: Path) -> None:
        self._base = base

    async def write(self, part: PartFile) -> UploadedPart:
        path = self._base / part.name
        try:
            await anyio.to_thread.run_sync(private_dir, path.parent)
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            async with aiofiles.open(fd, "wb") as handle:
                await handle.write(part.data)
            await anyio.to_thread.run_sync(os.replace, tmp, path)
        except OSError as exc:
            raise UploadError(f"cannot write {path}: {exc.strerror}") from exc
        return UploadedPart(
            part.shard, part.part, str(path), "", len(part.data), part.records, part.sha256
        )


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
