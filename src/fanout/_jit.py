"""Compiled kernels for the per-record hot loops (the merge's line checker, `_mergekernels`).

A kernel is a plain Python function over numpy arrays, compiled by numba: no Python object is
made per record, and the GIL is released while it runs, so a kernel called through
`anyio.to_thread.run_sync` uses a second core. Compiled code is cached beside the module (or,
where that is not writable, in numba's per-user cache), so only the first run on a machine pays
the compile time (seconds).

numba itself is imported only when a kernel is first called: importing it costs ~0.3 s and
~100 MiB of resident memory (LLVM), which commands that never merge (`plan`, `prepare`,
`status`, …) should not pay. On that first call, every kernel of the calling module is
compiled (lazily, by numba) and put in place of its stand-in, so kernels calling kernels find
numba's dispatchers. Call kernels through their module (`K.scan(...)`), never through a name
imported before that first call.

`NUMBA_DISABLE_JIT=1` runs the kernels as ordinary Python (slow, but debuggable).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["kernel"]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()


class _StandIn:
    """A kernel before numba is loaded: its first call compiles its whole module."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.__name__ = function.__name__
        self.__doc__ = function.__doc__

    def __call__(self, *args: Any) -> Any:
        module = sys.modules[self.function.__module__]
        with _lock:
            if getattr(module, self.__name__) is self:
                _compile(module)
        return getattr(module, self.__name__)(*args)


def _compile(module: Any) -> None:
    from numba import njit

    for name, value in list(vars(module).items()):
        if isinstance(value, _StandIn):
            setattr(module, name, njit(cache=True, nogil=True, boundscheck=False)(value.function))


def kernel(function: F) -> F:
    """Compile `function` with numba on first use: cached, without the GIL, without bounds
    checks."""
    return cast(F, _StandIn(function))
