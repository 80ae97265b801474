"""Memory a run will need, faulted in ahead, on the idle core, while the interpreter is still
importing: the dedupe table and the encoder's first output buffers.

Why ahead: memory is slow to touch the first time (the kernel zeroes each page, and on a VM the
host may have to back it again). Measured here, first writes to 100 MB took 0.07-0.11 s (in
4 KiB pages: see `anonymous` for why not huge ones), second writes 6 ms.

- The dedupe table: 100 MB for 10M IDs, and the first piece's random inserts touch nearly all
  of it, so the first dedupe step took 0.1-0.35 s while the encoder, in lockstep with it,
  waited. `allocate` hands the table faulted in ahead to the first request of about its size
  (waiting for the thread if it is not done) and gives back the pages past what was asked
  for; any other request gets fresh memory, written with zeros on the asking thread (see
  `allocate` for why), and one of more than a quarter of its size (the run's table, from
  another estimate) lets it go. (The plan's sample set asks first, for a small table:
  measured, waiting for the thread there cost 0.1 s of the ~0.3 s faulting ahead saves.)
- The encoder's output buffers (`_encode._OutputPool`): a 10M-ID run at the default piece
  size uses six or seven (two more pieces wait for the local part writer's thread since
  2026-11-28), ~15 MB long each for 4 MiB of UUIDs, of which it writes ~7 MB; faulting those
  in took 3.5% of the CPU of a 10M-ID prepare (`perf`), on the encoder's thread. The plan's
  sample of the input takes one more (into fresh memory, its one piece took 50 ms to encode,
  not 5). `output_buffer` hands out the ones already faulted in, without waiting; the run
  faults in the rest itself (eight ahead instead of six were no faster, +10 MiB).

`cli` calls `prefault_for(path)` before it imports the pipeline (~0.25 s of imports on one
core). It estimates the IDs in the file from its size and the lines in its first `SAMPLE`
bytes, as the source does from its first piece, and writes zeros over a table that size, then
over the part of each output buffer a piece of that many lines will write, on a thread.

Only the standard library is imported here: the point is to start before the pipeline is
imported.
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
OUTPUTS = 6  # output buffers faulted in ahead: one for the plan's sample of the input, and five
# of the six or seven a 10M-ID run at the defaults uses
OUTPUTS_FROM = 64 * 1024 * 1024  # ...for a file over this size (`pipeline.EXACT_COUNT_BYTES`:
# a smaller one is counted in a pass of its own first, with buffers of its own)
PROBE = 64 * 1024  # a piece runs up to this far past its size to end at a line end (`source`)
LINE_BYTES = 48  # what `_encode._encode_lines` asks per line besides the records' room: ends,
# fingerprints, record numbers and marks (8 bytes each) and spans (16)
GUESS_MARGIN = 1.25  # `_encode._LineGuess`: a piece's arrays have room for this many times the
# lines per byte of the piece before it (and 64 lines more)


def records_room(nbytes: int, lines: int, template: int) -> int:
    """The room `_encode._encode_lines` keeps for the records of a piece of `nbytes` bytes in
    `lines` lines with `template` bytes around each ID: every byte escaped, the template, and
    16 bytes the C pass may write past the end; a multiple of 8 (what follows is 8-byte words).
    A piece takes that and `LINE_BYTES` a line from the pool."""
    room = 2 * nbytes + lines * template + 16
    return room + -room % 8


def words_for(count: int) -> int:
    """64-bit words of a table for `count` IDs: its slots at `LOAD`, and one word more."""
    return math.ceil(count / LOAD) + 1


def allocate(words: int) -> mmap.mmap:
    """Zeroed, writable memory for `words` 64-bit words (the mapping may be longer), every page
    of it faulted in: the one faulted in ahead, or fresh memory written with zeros first.

    Written first, not left to fault in as the table is used: an insert reads its slot before
    it writes it, so each fresh page would be mapped twice, first to the kernel's shared zero
    page, then, at the write, to a page of its own, and that second fault flushes the page from
    the TLB of every other CPU running a thread of the process (an interprocessor interrupt:
    on this VM a VM exit at each end). `perf` of a 10M-ID `fanout prepare --ids -` (whose table
    grows, each time into fresh memory): 7% of its CPU in those write faults; writing zeros
    first took its median from 1.90 to 1.79 s and its system time from 0.76 to 0.55 s (six
    runs each, taking turns)."""
    early = _claim(words)
    if early is not None:
        return early
    return _zeroed(anonymous(max(1, words * 8)), words * 8)


def output_buffer(nbytes: int) -> mmap.mmap | None:
    """An output buffer of at least `nbytes` faulted in ahead, if one is ready (never waits)."""
    with _lock:
        buffers = _outputs.buffers if _outputs is not None else []
        for index, memory in enumerate(buffers):
            if len(memory) >= nbytes:
                return buffers.pop(index)
    return None


def prefault_for(path: str, table: bool = True) -> None:
    """Start faulting in the output buffers and (with `table`) the dedupe table a run over the
    input file at `path` will need. Nothing for stdin, a pipe, S3, compressed or Parquet input;
    no table under `MIN_EARLY` or over `MAX_EARLY`, no output buffers for a file of up to
    `OUTPUTS_FROM` bytes."""
    global _table, _outputs
    if path == "-" or "://" in path:
        return
    early_table, early_outputs = (_Table() if table else None), _Outputs()
    with _lock:
        _table, _outputs = early_table, early_outputs
    args = (path, early_table, early_outputs)
    threading.Thread(target=_fault_in, args=args, daemon=True).start()


def discard() -> None:
    """Let go of the memory faulted in ahead that the run did not take (once the thread is
    done with it)."""
    global _table, _outputs
    with _lock:
        _table = _outputs = None


def _fault_in(path: str, table: _Table | None, outputs: _Outputs) -> None:
    """The thread `prefault_for` starts: the table first (the run waits for it), then the
    output buffers (the run takes those that are ready)."""
    try:
        sample = _sample_lines(path)
    except (OSError, ValueError):
        sample = None
    if table is not None:
        table.fault_in(sample)
    try:
        if sample is not None:
            with contextlib.suppress(OSError, ValueError, MemoryError):
                outputs.fault_in(*sample)
    finally:
        outputs.done.set()


class _Table:
    """The table being faulted in: its size is known (`sized`) a few milliseconds after the
    start, its memory (`memory`) once every page was written (`ready`)."""

    def __init__(self) -> None:
        self.sized = threading.Event()
        self.ready = threading.Event()
        self.words = 0  # 0: none is faulted in
        self.memory: mmap.mmap | None = None

    def fault_in(self, sample: tuple[int, int, int] | None) -> None:
        try:
            words = _table_words(*sample) if sample is not None else None
            if words is None:
                return
            self.words = words
            self.sized.set()
            self.memory = _zeroed(anonymous(words * 8), words * 8)
        except (OSError, ValueError, MemoryError):
            self.words = 0  # the run sizes and faults in its table itself, as without this
            self.memory = None
        finally:
            self.sized.set()
            self.ready.set()


class _Outputs:
    """The output buffers faulted in so far (`buffers`, guarded by `_lock`); `done` once the
    thread added the last."""

    def __init__(self) -> None:
        self.buffers: list[mmap.mmap] = []
        self.done = threading.Event()

    def fault_in(self, lines: int, sampled: int, size: int) -> None:
        """`OUTPUTS` buffers for pieces of `SAMPLE` bytes of lines like the sample's: as long
        as the encoder asks for (room for twice the lines, a template of up to 64 bytes), and
        written over where such a piece's records, their ends and fingerprints go
        (`_encode._encode_lines`: 16 bytes for each line the arrays have room for, then each
        ID with ~16 bytes around it)."""
        if size <= OUTPUTS_FROM:
            return
        most = 2 * lines
        room = records_room(SAMPLE + PROBE, most, 64) + LINE_BYTES * most
        written = min(room, 16 * int(lines * GUESS_MARGIN + 64) + 16 * lines + sampled)
        for _ in range(OUTPUTS):
            memory = _zeroed(anonymous(room), written)
            with _lock:
                if _outputs is not self:  # discarded meanwhile
                    return
                self.buffers.append(memory)


_lock = threading.Lock()
_table: _Table | None = None
_outputs: _Outputs | None = None


def _claim(words: int) -> mmap.mmap | None:
    """The table faulted in ahead, if it is about `words` long (waiting for its pages to be
    written); a request of another size gets None at once, without waiting for the pages."""
    global _table
    with _lock:
        early = _table
        if early is None:
            return None
        early.sized.wait()
        have = early.words
        if not words <= have <= words * TAKE_WITHIN:
            if words * 4 >= have:  # the run's table, sized otherwise: let this one go
                _table = None
            return None
        _table = None
    early.ready.wait()
    memory = early.memory
    if memory is None:
        return None
    used = -(-words * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
    give_back = getattr(mmap, "MADV_DONTNEED", None)  # none on Windows: the pages stay
    if give_back is not None and used < len(memory):
        memory.madvise(give_back, used, len(memory) - used)
    return memory


def _sample_lines(path: str) -> tuple[int, int, int] | None:
    """The lines in the first `SAMPLE` bytes of the file, the bytes read and the file's size;
    None when those say nothing of the IDs. Only a regular file is opened: opening a named pipe
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
    return (lines, len(sample), info.st_size) if lines else None


def _table_words(lines: int, sampled: int, size: int) -> int | None:
    """The words `words_for` gives for the IDs the file seems to hold, with `MARGIN`; None
    when that is not worth doing ahead."""
    words = words_for(math.ceil(lines * size / sampled * MARGIN))
    return words if MIN_EARLY <= words * 8 <= MAX_EARLY else None


def _zeroed(memory: mmap.mmap, nbytes: int) -> mmap.mmap:
    """`memory` with zeros written over its first `nbytes`, faulting them in. (memset faults
    the pages in one by one; MADV_POPULATE_WRITE would do it in one call but holds the address
    space's lock, stalling the importing thread's allocations.)"""
    view = ctypes.c_char.from_buffer(memory)
    ctypes.memset(ctypes.addressof(view), 0, nbytes)
    del view  # the buffer export, or the mapping could never be closed
    return memory


def anonymous(nbytes: int) -> mmap.mmap:
    """Private anonymous memory (`mmap.mmap(-1, n)` alone is a shared mapping: shmem).

    Not advised into transparent huge pages (`MADV_HUGEPAGE`), though random inserts into the
    table miss the TLB less in them: a huge page needs a free 2 MiB block, which the kernel may
    compact memory for while the thread waits, and on a VM that hands free memory back to its
    host it is often memory the host must back again. Measured in `benchmarks/prepare.py`, where
    fanout runs right after polars freed ~390 MiB, eight runs each way: with huge pages
    2.2-2.9 s of CPU and 0.64-0.88× polars' rate, without 2.0-2.2 s and 0.87-1.20×; the
    inserts' TLB misses cost ~0.05 s. Where the system puts anonymous memory in huge pages by
    itself (`transparent_hugepage=always`), it still does."""
    private = getattr(mmap, "MAP_PRIVATE", None)  # Windows: anonymous memory is private
    if private is None:
        return mmap.mmap(-1, nbytes)
    return mmap.mmap(-1, nbytes, flags=private | mmap.MAP_ANONYMOUS)
