"""Compiled kernels for the per-record hot loops (prepare's encoder, merge's line checker).

A kernel is a plain Python function over numpy arrays, compiled by numba on first use: no
Python object is made per record, and the GIL is released while it runs, so a kernel called
through `anyio.to_thread.run_sync` uses a second core. Compiled code is cached beside the
module (or, where that is not writable, in numba's per-user cache), so only the first run on a
machine pays the compile time (about a second per kernel).

`NUMBA_DISABLE_JIT=1` runs the kernels as ordinary Python (slow, but debuggable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

__all__ = ["kernel"]

F = TypeVar("F", bound=Callable[..., Any])


def kernel(function: F) -> F:
    """Compile `function` with numba: cached, without the GIL, without bounds checks."""
    return cast(F, njit(cache=True, nogil=True, boundscheck=False)(function))
