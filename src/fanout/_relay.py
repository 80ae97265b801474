"""Work on long-lived threads of their own, joined by bounded queues, for the stages whose every
item is C work without the GIL: a local file's reader, encoder and deduper (`source`) and the
writer of local part files (`upload.LocalParts`).

Why not a worker-thread hop per item: each hop waits for the event loop twice, and with a
barrier at every item the two cores were only 70-80% busy (`source.Source._threads`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

END = object()  # after a stage's last item


class Stopped(Exception):
    """A stage waited for room while the stages were being stopped."""


class Relay:
    """Stages on threads of their own, each handing its items on through a queue of one, in
    order; `take` gets a stage's next item (`END` after the last, the stage's error raised),
    `stop` ends every stage (each sees it within `_WAIT`) and waits for its thread. A stage
    that is a generator is closed when it ends, however it ends, so its `finally` runs on its
    thread.
    """

    _WAIT = 0.05

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def stage(self, items: Callable[[], Iterable[Any]]) -> queue.Queue[Any]:
        """A thread putting each of `items()` on the queue it returns, then `END` (or the
        error that ended it)."""
        out: queue.Queue[Any] = queue.Queue(1)
        thread = threading.Thread(target=self._run, args=(items, out), daemon=True)
        self._threads.append(thread)
        thread.start()
        return out

    def each(
        self, before: queue.Queue[Any], work: Callable[[Any], Any]
    ) -> Callable[[], Iterator[Any]]:
        """The items of the stage (or queue) `before`, each through `work`."""

        def items() -> Iterator[Any]:
            while (item := self.take(before)) is not END:
                yield work(item)

        return items

    def acquire(self, room: threading.Semaphore) -> None:
        """`room.acquire()`, unless the stages are stopping (then `Stopped` ends this one)."""
        while not room.acquire(timeout=self._WAIT):
            if self._stopping.is_set():
                raise Stopped

    def take(self, before: queue.Queue[Any]) -> Any:
        """The next item of `before` (raising the error a stage ended with); `END` once the
        stages are stopping."""
        while not self._stopping.is_set():
            try:
                item = before.get(timeout=self._WAIT)
            except queue.Empty:
                continue
            if isinstance(item, _Failed):
                raise item.error
            return item
        return END

    def put(self, out: queue.Queue[Any], item: Any) -> bool:
        """Put `item` on `out` once it has room; False (not put) once the stages are stopping."""
        while not self._stopping.is_set():
            try:
                out.put(item, timeout=self._WAIT)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def _run(self, items: Callable[[], Iterable[Any]], out: queue.Queue[Any]) -> None:
        last: Any = END
        produced: Iterable[Any] = ()
        try:
            produced = items()
            for item in produced:
                if not self.put(out, item):
                    return
        except BaseException as exc:  # handed on: `take` raises it
            last = _Failed(exc)
        finally:
            close = getattr(produced, "close", None)
            if close is not None:
                close()
        self.put(out, last)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException
