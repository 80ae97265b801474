"""The run journal: an append-only JSON-lines file of events, each fsync'd before it is relied on.

Replaying the journal gives a run's state; no other state file exists. Every event is one line
`{"t": <epoch seconds>, "event": "<name>", ...fields}`. A crash can leave the last line
truncated; `read_events` drops such a tail (and only such a tail: damage anywhere else is an
error, since it means the file was edited or corrupted).

Files are created 0600 in directories created 0700: run state can name buckets and ARNs.
An open journal holds an exclusive lock (`flock`) on its file, so two processes never work on
one run at once; the kernel drops the lock when its process dies, even by `kill -9`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import anyio
import orjson

from .errors import ConfigError, FanoutError, RunBusy, first_of, naming

JOURNAL_NAME = "journal.jsonl"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable only by the owner; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _open_private_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a crash mid-write) so new events start on a fresh line."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(max(0, size - 64 * 1024))
        tail = handle.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):
            raise ConfigError(f"{path}: the run journal ends in a line over 64 KiB: corrupt")
        handle.truncate(size - len(tail) + cut + 1)


class EventLog(Protocol):
    """Where a stage records its events: the `Journal`, or a list in tests."""

    async def append(self, event: str, **fields: Any) -> dict[str, Any]: ...


class Journal:
    """Appends events to `<run dir>/journal.jsonl`. Use `async with Journal.open(dir) as j`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._file: Any = None
        self._write_lock = anyio.Lock()
        self._sync_lock = anyio.Lock()
        self._written = 0  # writes flushed to the OS (one per append_all)
        self._synced = 0  # of those, the ones known to be on disk
        self.listener: Callable[[dict[str, Any]], None] | None = None  # sees each event
        self._stopped_by: BaseException | None = None  # the error journalled as `stopped`

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        private_dir(run_dir)
        path = run_dir / JOURNAL_NAME
        try:
            fd = _open_private_append(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the run journal {path}: {exc.strerror}; fanout appends every step "
                "there, so it must be writable by this user (check its permissions and "
                "attributes, e.g. `lsattr`), or give another --state-dir for a new run"
            ) from exc
        if not _lock(fd):
            os.close(fd)
            raise busy(run_dir.name, path)
        try:
            _drop_torn_tail(path)
        except (OSError, ConfigError):
            os.close(fd)
            raise
        return cls(path, fd)

    async def __aenter__(self) -> Journal:
        self._file = await aiofiles.open(self._fd, "ab", closefd=True)
        self._fd = -1  # owned by the file object now
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._file is not None:
            with anyio.CancelScope(shield=True):
                await self._file.close()
            self._file = None
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextlib.asynccontextmanager
    async def stop_recorded(self) -> AsyncIterator[None]:
        """Journal the error that ends the block, if it is fanout's (a bad input found half
        way, a part that cannot be written...) or the system's, as a `stopped` event: `fanout
        status` says why the run stopped, not only where. An interruption is not an error."""
        try:
            yield
        except Exception as exc:
            cause = first_of(exc, (FanoutError, OSError))
            if cause is not None and cause is not self._stopped_by:  # (once, if blocks nest)
                self._stopped_by = cause
                with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                    await self.append("stopped", error=type(cause).__name__, reason=str(cause))
            raise

    async def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event and fsync it; return the event as written.

        Appends that overlap share fsyncs (group commit): each returns once an fsync that
        began after its write has finished.
        """
        [record] = await self.append_all([(event, fields)])
        return record

    async def append_all(
        self, events: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Write events that stand or fall together (a run's start and its submission) in one
        write, then fsync them: a process killed at any moment leaves all of them or none
        (a write torn by a crash of the machine is dropped as a torn tail on reopen)."""
        if self._file is None:
            raise RuntimeError("journal is not open: use `async with`")
        now = round(time.time(), 6)
        records = [{"t": now, "event": event, **fields} for event, fields in events]
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        # Shielded: a cancelled run must not leave half an event behind, or one unsynced.
        with anyio.CancelScope(shield=True), naming(self.path):
            async with self._write_lock:
                await self._file.write(data)
                await self._file.flush()
                self._written += 1
                mine = self._written
            async with self._sync_lock:
                if self._synced < mine:
                    target = self._written
                    await anyio.to_thread.run_sync(os.fsync, self._file.fileno())
                    self._synced = target
        if self.listener is not None:
            for record in records:
                self.listener(record)
        return records


def busy(run_id: str, path: Path) -> RunBusy:
    """The error for a run another fanout process holds (its journal at `path` is locked)."""
    return RunBusy(
        f"run {run_id} is in use by another fanout process (its journal {path} is locked): wait "
        f"for it to finish, or stop it (`fanout status {run_id}` shows how far it got)"
    )


def is_locked(path: Path) -> bool:
    """Whether another process holds the journal at `path` (`Journal.open`'s lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _lock(fd)
    finally:
        os.close(fd)  # closing the descriptor lets go of a lock taken here


def _lock(fd: int) -> bool:
    """Take the run's lock on the journal open at `fd`, without waiting: False if another
    process holds it. The kernel lets go of it when the descriptor is closed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


# How to recover a damaged or emptied local journal: the run's copy on S3 (`pipeline._Mirror`).
MIRROR_HINT = (
    "if the run had jobs, its journal's copy on S3 can take its place: move this file aside, "
    "then `fanout resume RUN --job-output VALUE` (the run's --job-output) fetches it"
)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of the run's journal, oldest first (a truncated last line is dropped)."""
    path = run_dir / JOURNAL_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no run journal at {path}: is the run ID or --state-dir right? (a run submitted "
            "elsewhere: `fanout status RUN --job-output PATH` or `fanout resume RUN --job-output "
            "PATH` fetches its journal from S3)"
        ) from None
    return parse_events(data, str(path))


def parse_events(data: bytes, where: str) -> list[dict[str, Any]]:
    """The events of a journal's bytes (a truncated last line is dropped)."""
    lines = data.split(b"\n")
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines):  # the unterminated tail of a crash mid-write
                break
            raise ConfigError(
                f"{where}:{number}: the run journal is corrupt; {MIRROR_HINT}"
            ) from None
        events.append(event)
    return events


class FileSink:
    """Appends whole lines to a private file in the run directory (rejects, duplicates)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    async def __aenter__(self) -> FileSink:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = await aiofiles.open(fd, "wb")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the file (again: nothing); `async with` does it at the end."""
        if self._file is not None:
            with anyio.CancelScope(shield=True):
                await self._file.close()
            self._file = None

    async def write(self, data: bytes) -> None:
        if self._file is None:
            raise RuntimeError("sink is not open: use `async with`")
        with naming(self.path):
            await self._file.write(data)


def write_private(path: Path, data: bytes) -> None:
    """Write a small file atomically (temp file + rename), readable only by the owner."""
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
