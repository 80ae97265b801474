"""Types of the C extension (`_sha256.c`)."""

from typing import Any, TypeAlias

_Buffer: TypeAlias = bytes | bytearray | memoryview | Any

def available() -> bool: ...
def blocks(state: bytearray, data: _Buffer, state2: bytearray, data2: _Buffer) -> None: ...
