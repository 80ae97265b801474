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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD = 4 * 1024 * 1024


def release_large_buffers() -> bool:
    """Set glibc's mmap threshold (Linux only); return whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
