"""Writing part files to S3: SSE-KMS, SHA-256 checksums, multipart for very large parts.

A failed multipart upload is aborted (shielded from cancellation) so no unfinished upload is
left behind to be billed.
"""

from __future__ import annotations

import anyio

from .aws import Encryption, S3Store
from .config import UploadSettings
from .shard import PartFile
from .storage import S3Uri
from .upload import UploadedPart


class S3PartWriter:
    """Uploads parts under `base` (the run's input prefix) with SSE-KMS, each with its SHA-256
    (the one the journal records) as S3's checksum."""

    def __init__(
        self, store: S3Store, base: S3Uri, encryption: Encryption, settings: UploadSettings
    ) -> None:
        self._store = store
        self._base = base.as_prefix()
        self._encryption = encryption
        self._settings = settings

    async def write(self, part: PartFile) -> UploadedPart:
        uri = self._base.child(part.name)
        # Joining the part's chunks and hashing them: tens of MB, off the event loop.
        data, sha256 = await anyio.to_thread.run_sync(_body, part)
        # The store raises UploadError, saying what to do (`aws.raise_s3_error`).
        if len(data) < self._settings.multipart_threshold:
            etag = await self._store.put_object(uri.bucket, uri.key, data, self._encryption, sha256)
        else:
            etag = await self._multipart(uri, data)
        return UploadedPart(part.shard, part.part, str(uri), etag, len(data), part.records, sha256)

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


def _body(part: PartFile) -> tuple[bytes, str]:
    """The part as one request body, and its SHA-256."""
    return part.data, part.sha256()
