"""Keep the process's memory flat while it moves tens-of-MB buffers between threads.

glibc serves large allocations with mmap until the first one is freed, then raises its mmap
threshold to that size (up to 32 MiB) and serves later ones from per-thread heap arenas, which
keep freed memory. With part files of 16 MiB built and sent on several threads, that retention
alone adds about one part per thread to the peak RSS (measured: 446 → 293 MiB for 1 GiB at
concurrency 8, benchmarks/upload.py). Fixing the threshold at 4 MiB keeps every large buffer on
mmap, returned to the system as soon as it is freed. The price is fresh pages for each one: 10M
IDs through `fanout prepare --local-dir` took 5.0 s / 312 MB at 4 MiB, 3.8 s / 338 MB at 12 MiB,
3.6 s / 472 MB with glibc's default. Flat memory wins here; fewer buffer copies in the source
and shard stages are the way to win the time back.

Since then parts became views into the record batches, and the threshold is `MMAP_THRESHOLD`,
9 MiB: above the source's input chunks (8 MiB then, 4 MiB now, and up to a 64 KiB probe to a
line end, read anew for every piece), which now come from the heap and reuse its memory, and
below what still wants mmap (encoded batches, ~11 MiB per 8 MiB of UUIDs, in numpy's huge pages,
now mostly reused from `_encode._OutputPool`; joined S3 parts). Measured with `/usr/bin/time`
on 10M IDs, 4 MiB and 9 MiB taking turns (machine shared): dedupe on, 155K → 85-95K minor page
faults, system CPU 1.3-1.8 → 1.0-1.2 s, wall -10%, peak RSS 274-280 → 282-284 MiB (input chunks
the heap keeps); dedupe off, 125K → 53-58K faults, RSS unchanged (170-175 MiB). 12 MiB faulted
least (28-49K) but raised dedupe off to 200 MiB and dedupe on to 309 MiB once.

Fixing the mmap threshold also fixes the trim threshold at its 128 KiB default, so each time the
top of a heap frees more than that, glibc hands it back, and the next piece's numpy temporaries
(a few MB each: fingerprints, sort keys, filter masks) fault it in again, page by page: that
made the fingerprint hash 4x slower than with warm memory. So the trim threshold is raised to
`TRIM_THRESHOLD`, and all threads share one arena, so that what is kept is kept once, not once
per worker thread. Measured, 10M IDs, dedupe on (in-process, best of 3): 4.1 s CPU / 298 MiB
before; trim 8 MiB with an arena per thread 3.7 s / 318-336 MiB; trim 8 MiB and one arena
3.7 s / 290 MiB. Later, 8 MiB proved too low for the input chunks (4 MiB each, three or four
alive, freed in turn): their space at the top of the heap kept being handed back and faulted in
again, and perf put 0.12 s of CPU per 10M IDs in page faults under `pread`. At 64 MiB, taking
turns with 8 MiB (six runs each, 10M IDs): minor faults 28-43K → 17-19K, median wall 1.62 →
1.53 s with dedupe and 1.64 → 1.52 s without, peak RSS unchanged at 10M (202, 102 MiB) and
+4 MiB at 1M (94 → 98): what is kept was in use a moment before and is reused next.

numpy's OpenBLAS starts a pool of worker threads when numpy is imported, and they spin for a
while before they sleep; fanout does no linear algebra, so the pool only takes CPU from the
other core (`perf record`: 6-8% of the CPU samples of a 1,000-ID `fanout prepare`, 0.06-0.1 s
of a 10,000,000-ID one; none with one thread). So `release_large_buffers` also asks OpenBLAS
for one thread, unless the user set a count or numpy is already imported (too late then).
"""

from __future__ import annotations

import ctypes
import os
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 9 * 1024 * 1024  # > source._DEFAULT_CHUNK + source._PROBE_BYTES
TRIM_THRESHOLD = 64 * 1024 * 1024


def release_large_buffers() -> bool:
    """Tune glibc's malloc as above (Linux only); return whether it was done.

    Call it early, before worker threads start (each would otherwise get an arena of its own)
    and before numpy is imported (for the OpenBLAS thread count).
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols include the C library's: no ctypes.util.find_library,
        # which imports subprocess and may run ldconfig (~10-30 ms of every start-up).
        libc = ctypes.CDLL(None)
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            and libc.mallopt(_M_ARENA_MAX, 1)
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
