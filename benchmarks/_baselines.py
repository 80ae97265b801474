"""The baselines `prepare.py` times against fanout, each run as a process of its own:

    python benchmarks/_baselines.py naive|polars FILE OUT

`prepare.py` times the whole process, so this script imports nothing at the top: a case's time
is its tool's own (Python's start and, for polars, polars' import), as a user running that tool
would see it. (They used to run through `prepare.py --case`, which imported numpy and the
benchmark's helpers first: ~60-80 ms more for each baseline run.) `source_throughput.py` times
the same two functions inside its child processes.
"""

from __future__ import annotations

import sys


def case_naive(path: str, out: str) -> None:
    """A plain loop: `json.dumps` of each stripped line."""
    import json

    with open(path, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as sink:
        for line in source:
            sink.write(json.dumps({"userId": line.strip()}) + "\n")


def case_polars(path: str, out: str) -> None:
    """An expert's tool: polars, lazily, from CSV to JSON lines."""
    import polars as pl

    pl.scan_csv(path, has_header=False, new_columns=["userId"]).sink_ndjson(out)


CASES = {"naive": case_naive, "polars": case_polars}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in CASES:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(CASES)} FILE OUT")
    CASES[sys.argv[1]](sys.argv[2], sys.argv[3])
    # As the `fanout` command ends (`cli.entry`, `_common.leave_child`): the output is written,
    # and no case pays the interpreter's teardown.
    import os

    sys.stdout.flush()
    os._exit(0)
