"""The run journal: an append-only JSON-lines file of events, each fsync'd before it is relied on.

Replaying the journal gives a run's state; no other state file exists. Every event is one line
`{"t": <epoch seconds>, "event": "<name>", ...fields}`. A crash can leave the last line
truncated; `read_events` drops such a tail (and only such a tail: damage anywhere else is an
error, since it means the file was edited or corrupted).

Files are created 0600 in directories created 0700: run state can name buckets and ARNs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import aiofiles
import anyio
import orjson

from .errors import ConfigError

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


class Journal:
    """Appends events to `<run dir>/journal.jsonl`. Use `async with Journal.open(dir) as j`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._file: Any = None
        self._lock = anyio.Lock()

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        private_dir(run_dir)
        path = run_dir / JOURNAL_NAME
        try:
            _drop_torn_tail(path)
            fd = _open_private_append(path)
        except OSError as exc:
            raise ConfigError(f"cannot write the run journal {path}: {exc.strerror}") from exc
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

    async def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event and fsync it; return the event as written."""
        if self._file is None:
            raise RuntimeError("journal is not open: use `async with`")
        record = {"t": round(time.time(), 6), "event": event, **fields}
        line = orjson.dumps(record) + b"\n"
        async with self._lock:
            # Shielded: a cancelled run must not leave half an event behind.
            with anyio.CancelScope(shield=True):
                await self._file.write(line)
                await self._file.flush()
                await anyio.to_thread.run_sync(os.fsync, self._file.fileno())
        return record


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of the run's journal, oldest first (a truncated last line is dropped)."""
    path = run_dir / JOURNAL_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no run journal at {path}: is the run ID or --state-dir right?"
        ) from None
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
            raise ConfigError(f"{path}:{number}: the run journal is corrupt") from None
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
        if self._file is not None:
            with anyio.CancelScope(shield=True):
                await self._file.close()
            self._file = None

    async def write(self, data: bytes) -> None:
        if self._file is None:
            raise RuntimeError("sink is not open: use `async with`")
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
