"""Every benchmark script runs end to end at a tiny size: its own correctness checks pass and it
prints its table. (The figures at these sizes mean nothing; the targets are checked by running
the scripts at their default sizes, as their docstrings say.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

SMALL = {
    "prepare.py": ["--ids", "20000", "--small-ids", "2000", "--repeat", "1", "--skip-naive"],
    "upload.py": ["--mb", "8", "--part-mb", "2", "--repeat", "1"],
    "merge.py": ["--lines", "20000", "--shards", "2", "--repeat", "1"],
    "submit.py": [
        "--shards",
        "4",
        "--quota",
        "2",
        "--job-seconds",
        "0.2",
        "--poll-interval",
        "0.05",
    ],
    "source_throughput.py": ["--ids", "20000", "--repeat", "1", "--skip-naive"],
    "e2e.py": ["--users", "2000", "--job-seconds", "0.2", "--poll-interval", "0.05"],
    "emulator_job.py": ["--users", "2000"],
}


def test_every_benchmark_is_smoke_tested() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts - {"discard_s3.py"} == set(SMALL)  # discard_s3: upload.py's sink


@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *SMALL[script]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "FAIL  check" not in output, output[-3000:]
    assert len(done.stdout.splitlines()) >= 3, done.stdout  # a table: a header and its rows
