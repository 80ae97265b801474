"""The upload stage: part files go to S3 several at once, or to local files as they are cut.

S3: writers take a whole `PartFile` and return an `UploadedPart` (`upload_s3.S3PartWriter`,
kept apart so that local runs never import the AWS SDK), `concurrency` of them at once from one
bounded stream (`upload_parts`). `--local-dir`: `LocalParts` writes each part's chunks as the
cutter hands them on (`shard.PartChunk`), so a batch is let go as soon as it is written.
"""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._relay import END, Relay
from .errors import UploadError
from .journal import private_dir
from .shard import PartChunk, PartFile, part_name

_T = TypeVar("_T")


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


class LocalParts:
    """Writes parts under `base/` with the same layout as S3 (`--local-dir`), chunk by chunk, on
    a thread of its own.

    `write` hands a chunk to the thread (waiting only while `AHEAD` chunks are queued);
    `finish` says no more will come; `written()` yields each part once its file is whole, and
    raises the thread's error (an `UploadError` naming the file). Iterate it while writing:
    after a failure, chunks are no longer taken. A part is written to `<name>.tmp` as its chunks
    come and renamed when its last one has: a part file under its own name is always whole.
    Chunks of the parts in `verify_only` (written by an earlier attempt of the run) are hashed,
    not written. One part is open at a time, so chunks must come in order (`shard.stream_parts`
    hands them on so); closing ends the thread, which removes a part left unfinished.

    Why a thread: the writer (SHA-256 and the write, ~6 ms for a 4 MiB piece of UUIDs) is the
    longest stage of a local prepare; a worker-thread hop per chunk left it waiting for the
    event loop between chunks.
    """

    AHEAD = 2  # chunks queued for the thread, besides the one it is writing

    def __init__(self, base: Path, verify_only: Container[tuple[int, int]] = ()) -> None:
        self._base = base
        self._verify_only = verify_only
        self._relay = Relay()
        self._todo: queue.Queue[Any] = queue.Queue(self.AHEAD)
        self._done: queue.Queue[Any] | None = None
        self._open: tuple[int, int] | None = None  # the part being given, as `write` saw it

    async def __aenter__(self) -> LocalParts:
        self._done = self._relay.stage(self._write_all)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):  # also when the run is being cancelled
            await anyio.to_thread.run_sync(self._relay.stop)

    async def write(self, chunk: PartChunk) -> None:
        key = (chunk.shard, chunk.part)
        if self._open is not None and self._open != key:
            raise ValueError(f"{part_name(*key)} began before {part_name(*self._open)} was done")
        self._open = None if chunk.last else key
        await self._put(chunk)

    async def finish(self) -> None:
        """No more chunks: `written()` ends after the parts given so far."""
        await self._put(END)

    async def written(self) -> AsyncIterator[UploadedPart]:
        assert self._done is not None, "LocalParts is used with `async with`"
        while (part := await self._wait(self._relay.take, self._done)) is not END:
            yield part

    async def _put(self, item: object) -> None:
        try:
            self._todo.put_nowait(item)
        except queue.Full:
            await self._wait(self._relay.put, self._todo, item)

    @staticmethod
    async def _wait(func: Callable[..., _T], *args: object) -> _T:
        # Given up on cancellation: the thread returns once the relay stops (`__aexit__`).
        return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True)

    def _write_all(self) -> Iterator[UploadedPart]:
        """The thread: each chunk into its part; each part once whole."""
        part: _OpenPart | None = None
        try:
            while (chunk := self._relay.take(self._todo)) is not END:
                if part is None:
                    key = (chunk.shard, chunk.part)
                    path = self._base / part_name(*key)
                    part = _OpenPart(key, path, write=key not in self._verify_only)
                try:
                    part.add(chunk)
                except OSError as exc:
                    raise UploadError(f"cannot write {part.path}: {exc.strerror}") from exc
                if chunk.last:
                    whole, part = part, None
                    yield UploadedPart(
                        *whole.key, str(whole.path), "", whole.nbytes, whole.records, whole.sha256
                    )
        finally:
            if part is not None:
                part.abandon()


# Bytes hashed then written at a time: small enough that the write reads them from the cache.
_STEP = 1 << 20


class _OpenPart:
    """One part file being written to its temporary name (or, without `write`, only hashed)."""

    def __init__(self, key: tuple[int, int], path: Path, write: bool) -> None:
        self.key, self.path, self.write = key, path, write
        self.tmp = path.with_name(path.name + ".tmp")
        self.fd: int | None = None
        self.digest = hashlib.sha256()
        self.records = self.nbytes = 0
        self.sha256 = ""

    def add(self, chunk: PartChunk) -> None:
        """Hash `chunk` and write it a MiB at a time, each MiB just after it was hashed; with
        the last chunk, move the whole file to its name."""
        if self.write and self.fd is None:
            private_dir(self.path.parent)
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for data in chunk.chunks:
            for at in range(0, len(data), _STEP):
                view = data[at : at + _STEP]
                self.digest.update(view)
                if self.fd is not None:
                    while view:
                        view = view[os.write(self.fd, view) :]
        self.records += chunk.records
        self.nbytes += chunk.nbytes
        if chunk.last:
            self.sha256 = self.digest.hexdigest()
            if self.write:
                self._close()
                os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        if self.fd is not None:
            self._close()
            self.tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


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
