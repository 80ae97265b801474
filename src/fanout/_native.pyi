"""Types of the C extension (`_native.c`); arrays are passed as buffers."""

from typing import Any, TypeAlias

import numpy as np

_Buffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray[Any, Any]

def fingerprints(buf: _Buffer, starts: _Buffer, lens: _Buffer, out: _Buffer) -> None: ...
def fingerprints_strided(
    buf: _Buffer, start: int, stride: int, size: int, out: _Buffer
) -> None: ...
def insert(table: _Buffer, fps: _Buffer, dup: _Buffer) -> int: ...
def rehash(old: _Buffer, new: _Buffer) -> None: ...
