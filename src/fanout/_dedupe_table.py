"""The dedupe table's memory: one anonymous mapping per table, in huge pages where the kernel
has them, and for a local input file faulted in ahead, on the idle core, while the interpreter
is still importing.

Why ahead: memory is slow to touch the first time (the kernel zeroes each page, and on a VM the
host may have to back it again). Measured here, first writes to 100 MB took 0.08 s in 4 KiB
pages and 0.013-0.34 s in huge pages (quick when the kernel hands out pages just freed, slow
when the host must back them again), second writes 6 ms. The table for 10M IDs is 100 MB,
and the first piece's random inserts touch nearly all of it, so the first dedupe step took
0.1-0.35 s while the encoder, in lockstep with it, waited. `cli` calls `prefault_for(path)`
before it imports the pipeline (~0.35 s of imports on one core), which estimates the IDs in the
file from its size and the lines in its first `SAMPLE` bytes, as the source does from its first
piece, and writes zeros over a table that size on a thread. `allocate` hands that table to the
first request of about its size (waiting for the thread if it is not done) and gives back the
pages past what was asked for; any other request gets a fresh mapping at once, faulted in as it
is first written (as `calloc` memory is), and one of more than a quarter of its size (the run's
table, from another estimate) lets it go. (The plan's sample set asks first, for a small table:
measured, waiting for the thread there cost 0.1 s of the ~0.3 s faulting ahead saves.)

Only the standard library is imported here: the point is to start before numpy is imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import stat
import threading

LOAD = 0.8  # a table is sized to be this full for the IDs it is sized for
SAMPLE = 4 * 1024 * 1024  # bytes read to estimate the IDs (the source's piece size)
MIN_EARLY = 8 * 1024 * 1024  # smaller tables are cheap to fault in as they are written
MAX_EARLY = 1024 * 1024 * 1024  # 100M IDs: a larger table is left to the run (estimates drift)
MARGIN = 1.03  # the early table is sized for 3% more IDs than estimated...
TAKE_WITHIN = 1.15  # ...and given to a request for at least 1/1.15 of its words
_HUGE = 2 * 1024 * 1024


def words_for(count: int) -> int:
    """64-bit words of a table for `count` IDs: its slots at `LOAD`, and one word more."""
    return math.ceil(count / LOAD) + 1


def allocate(words: int) -> mmap.mmap:
    """Zeroed, writable memory for `words` 64-bit words (the mapping may be longer)."""
    early = _claim(words)
    if early is not None:
        return early
    return _anonymous(max(1, words * 8))


def prefault_for(path: str) -> None:
    """Start faulting in the table the input file at `path` will need (nothing for stdin, a
    pipe, S3, compressed or Parquet input, or a table under `MIN_EARLY` or over `MAX_EARLY`)."""
    global _early
    if path == "-" or "://" in path:
        return
    early = _Early(path)
    with _lock:
        _early = early
    early.thread.start()


def discard() -> None:
    """Let go of a table faulted in ahead that no request took (once its thread is done)."""
    global _early
    with _lock:
        _early = None


class _Early:
    """A table being faulted in on a thread of its own: its size is known (`sized`) a few
    milliseconds after the start, its memory (`memory`) once every page was written."""

    def __init__(self, path: str) -> None:
        self.sized = threading.Event()
        self.words = 0  # 0: none is faulted in
        self.memory: mmap.mmap | None = None
        self.thread = threading.Thread(target=self._fault_in, args=(path,), daemon=True)

    def _fault_in(self, path: str) -> None:
        try:
            words = _estimate_words(path)
            if words is None:
                return
            self.words = words
            self.sized.set()
            memory = _anonymous(words * 8)
            # memset faults the pages in one by one; MADV_POPULATE_WRITE would do it in one call
            # but holds the address space's lock, stalling the importing thread's allocations.
            view = ctypes.c_char.from_buffer(memory)
            ctypes.memset(ctypes.addressof(view), 0, words * 8)
            del view  # the buffer export, or the mapping could never be closed
            self.memory = memory
        except (OSError, ValueError, MemoryError):
            self.words = 0  # the run sizes and faults in its table itself, as without this
        finally:
            self.sized.set()


_lock = threading.Lock()
_early: _Early | None = None


def _claim(words: int) -> mmap.mmap | None:
    """The table faulted in ahead, if it is about `words` long (waiting for its thread to be
    done); a request of another size gets None at once, without waiting for the pages."""
    global _early
    with _lock:
        early = _early
        if early is None:
            return None
        early.sized.wait()
        have = early.words
        if not words <= have <= words * TAKE_WITHIN:
            if words * 4 >= have:  # the run's table, sized otherwise: let this one go
                _early = None
            return None
        _early = None
    early.thread.join()
    memory = early.memory
    if memory is None:
        return None
    used = -(-words * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
    give_back = getattr(mmap, "MADV_DONTNEED", None)  # none on Windows: the pages stay
    if give_back is not None and used < len(memory):
        memory.madvise(give_back, used, len(memory) - used)
    return memory


def _estimate_words(path: str) -> int | None:
    """The words `words_for` gives for the IDs the file seems to hold, with `MARGIN`; None
    when that is not worth doing ahead. Only a regular file is opened: opening a named pipe
    would wait for its writer, and closing it again could leave that writer without a reader."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        sample = os.pread(fd, SAMPLE, 0)
    finally:
        os.close(fd)
    if sample.startswith((b"\x1f\x8b", b"PAR1")):  # gzip, Parquet: lines say nothing
        return None
    lines = sample.count(b"\n")
    if not lines:
        return None
    count = math.ceil(lines * info.st_size / len(sample) * MARGIN)
    words = words_for(count)
    return words if MIN_EARLY <= words * 8 <= MAX_EARLY else None


def _anonymous(nbytes: int) -> mmap.mmap:
    """Private anonymous memory (`mmap.mmap(-1, n)` alone is a shared mapping: shmem, which gets
    no transparent huge pages), in huge pages where the kernel has them, as numpy asks for its
    large arrays: fewer TLB misses for random inserts."""
    private = getattr(mmap, "MAP_PRIVATE", None)  # Windows: anonymous memory is private
    if private is None:
        memory = mmap.mmap(-1, nbytes)
    else:
        memory = mmap.mmap(-1, nbytes, flags=private | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None and nbytes >= _HUGE:
        with contextlib.suppress(OSError):
            memory.madvise(advice)
    return memory
