"""Types of the C extension (`_native.c`); arrays are passed as buffers."""

from typing import Any, TypeAlias

import numpy as np

_Buffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray[Any, Any]

def fingerprints(buf: _Buffer, starts: _Buffer, lens: _Buffer, out: _Buffer) -> None: ...
def insert(table: _Buffer, fps: _Buffer, dup: _Buffer) -> int: ...
def rehash(old: _Buffer, new: _Buffer) -> None: ...
def encode_lines(
    buf: _Buffer,
    limit: int,
    slow: bool,
    prefix: bytes,
    suffix: bytes,
    other: bytes,
    out: _Buffer,
    ends: _Buffer,
    fps: _Buffer,
    rec: _Buffer,
    marks: _Buffer,
    spans: _Buffer,
) -> tuple[int, int, int, int, int] | None: ...
def count_lines(buf: _Buffer) -> int: ...
def listed(
    data: _Buffer,
    starts: _Buffer,
    ends: _Buffer,
    head: int,
    tail: int,
    numbers: _Buffer,
    middle: bytes,
) -> bytes: ...
def use_simd(on: bool) -> bool: ...
