"""The malloc and OpenBLAS tuning done at start-up."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fanout import _memory, source

_SHOW = (
    "import os; from fanout._memory import release_large_buffers; release_large_buffers(); "
    "print(os.environ.get('OPENBLAS_NUM_THREADS'))"
)


def test_input_chunks_come_from_the_heap() -> None:
    """An input chunk with its probe to a line end is under the mmap threshold, so it reuses
    warm heap memory instead of faulting in fresh pages for every piece."""
    assert source._DEFAULT_CHUNK + source._PROBE_BYTES < _memory.MMAP_THRESHOLD


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("4", "4")])
def test_openblas_gets_one_thread_unless_the_user_chose(given: str | None, expected: str) -> None:
    """Before numpy is imported, OpenBLAS is asked for one thread; a user's setting wins."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    shown = subprocess.run(
        [sys.executable, "-c", _SHOW], env=env, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == expected


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_malloc_is_tuned_on_linux() -> None:
    """On glibc, all three mallopt calls succeed (the C library is found without ldconfig)."""
    shown = subprocess.run(
        [sys.executable, "-c", "from fanout._memory import release_large_buffers as r; print(r())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "True"
