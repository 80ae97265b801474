"""Small helpers shared by the benchmark scripts: a timer, a table printer, a child's peak RSS.

Scripts import them as `from _common import ...` (a script's own folder is on `sys.path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

MiB = 1024 * 1024


class Timer:
    """Wall-clock seconds of a `with` block, and this process's CPU seconds (all threads) in it.

    Both are live inside the block.
    """

    def __init__(self) -> None:
        self._start = self._cpu_start = 0.0
        self._stop: float | None = None
        self._cpu_stop: float | None = None

    def __enter__(self) -> Timer:
        self._stop = self._cpu_stop = None
        self._start, self._cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop, self._cpu_stop = time.perf_counter(), time.process_time()

    @property
    def seconds(self) -> float:
        end = self._stop if self._stop is not None else time.perf_counter()
        return end - self._start

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU time of this process (every thread) in the block."""
        end = self._cpu_stop if self._cpu_stop is not None else time.process_time()
        return end - self._cpu_start


@dataclass(frozen=True, slots=True)
class ChildResult:
    """A finished child process: exit code, its stdout, wall seconds, and its own peak RSS."""

    returncode: int
    stdout: bytes
    seconds: float
    peak_rss: int  # bytes: ru_maxrss of this child alone

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss / MiB


def _maxrss_bytes(ru_maxrss: int) -> int:
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024  # Linux reports KiB


# Linux keeps a process's ru_maxrss across exec and counts the mm it had before the exec: a child
# forked (or vforked) from a big parent "peaks" at least at the parent's RSS. So the child is
# started by this small trampoline (a fresh interpreter of a few MiB), which forks and execs the
# command and writes the grandchild's ru_maxrss to a file: that figure is the command's own.
_TRAMPOLINE = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as handle:
    handle.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> ChildResult:
    """Run `cmd`, capture its stdout (stderr passes through), and measure its peak RSS.

    The RSS is `ru_maxrss` of that one process (via `wait4`), not mixed with the caller's memory
    nor with other children's (as `RUSAGE_CHILDREN` would be); processes it starts in turn are
    not counted. A trampoline of a few MiB is the floor of the measurement. fanout's bytecode is
    brought up to date first, as an installed wheel's is, so no child spends its time compiling
    a module edited since the last install (with PYTHONDONTWRITEBYTECODE set, it would in every
    run).
    """
    compile_fanout()
    with tempfile.TemporaryDirectory(prefix="rss-") as tmp:
        report = os.path.join(tmp, "maxrss")
        argv = [sys.executable, "-S", "-c", _TRAMPOLINE, report, *cmd]
        started = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, env=env, cwd=cwd, check=False)
        seconds = time.perf_counter() - started
        try:
            with open(report) as handle:
                maxrss = int(handle.read())
        except (OSError, ValueError):
            maxrss = 0
    return ChildResult(proc.returncode, proc.stdout, seconds, _maxrss_bytes(maxrss))


def compile_fanout() -> None:
    """Write fanout's bytecode where it is stale (quietly; a no-op when it is not)."""
    import compileall

    import fanout

    compileall.compile_dir(os.path.dirname(fanout.__file__), quiet=2)


def peak_rss_self() -> int:
    """This process's peak RSS in bytes since its exec (`VmHWM`; `ru_maxrss` if unavailable).

    Unlike `ru_maxrss`, `VmHWM` does not include the parent's memory at fork time.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> None:
    """Print `rows` as an aligned text table; numbers right-aligned, text left-aligned."""
    if not rows:
        return
    cols = list(columns) if columns is not None else list(rows[0])
    cells = [[format_cell(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    # Right-align a column whose values are mostly numbers (placeholders like "-" may remain).
    numeric = [2 * sum(_is_number(row.get(c)) for row in rows) >= len(rows) for c in cols]

    def line(values: Sequence[str]) -> str:
        columns = zip(values, widths, numeric, strict=True)
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in columns]
        return "  ".join(parts).rstrip()

    print(line(cols))
    print(line(["-" * w for w in widths]))
    for values in cells:
        print(line(values))


@contextlib.contextmanager
def emulator_process(workdir: Path, *options: str) -> Iterator[dict[str, Any]]:
    """`fanout emulator OPTIONS` in its own process, as a remote service would be; yields the
    info it writes (endpoints, seeded ARNs) and stops it by its PID at the end."""
    info_file = workdir / "emulator.json"
    command = [sys.executable, "-m", "fanout.cli", "emulator", *options]
    process = subprocess.Popen(
        [*command, "--info-file", str(info_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not info_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the emulator did not start")
            time.sleep(0.1)
        yield json.loads(info_file.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def run_job(personalize: Any, poll: float, **params: Any) -> dict[str, Any]:
    """Create one batch inference job, as the samples notebook does, and poll Describe until it
    ends; its description once ACTIVE (a failed job stops the benchmark, saying why)."""
    arn = personalize.create_batch_inference_job(**params)["batchInferenceJobArn"]
    while True:
        job: dict[str, Any] = personalize.describe_batch_inference_job(batchInferenceJobArn=arn)[
            "batchInferenceJob"
        ]
        if job["status"] in {"ACTIVE", "CREATE FAILED"}:
            break
        time.sleep(poll)
    if job["status"] != "ACTIVE":
        raise SystemExit(f"job {params['jobName']} failed: {job.get('failureReason')}")
    return job


def leave_child() -> NoReturn:
    """End a child case as the `fanout` command ends (`cli.entry`): flush the output, then
    `os._exit`, so that no case, fanout's or a baseline's, pays the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
