"""How fast the source stage turns a big ID list into Personalize input records.

Generates N UUID-like IDs (36 characters, one per line) in a temporary directory, then times:

    (a) cp of the file                               the I/O floor
    (b) a naive Python loop: json.dumps per line     what the source replaces
    (c) polars scan_csv(...).sink_ndjson(...)        the baseline to beat
    (d) Source, dedupe on, batches discarded
    (e) Source, dedupe off, batches discarded

Every case runs in its own process, so its peak RSS (the child's VmHWM) is its own; (c)-(e) run
--repeat times and the best time is kept, since the machine may be shared. `--varlen` adds
(f)/(g): (d)/(e) on IDs of varying length ("user-<n>", 6-13 characters).

Memory note: glibc keeps freed blocks per thread arena; MALLOC_ARENA_MAX=2 in the environment
lowers the source's peak RSS by ~10% at no cost in speed.

    .venv/bin/python benchmarks/source_throughput.py [--ids 10000000] [--repeat 3] [--varlen]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _baselines import case_naive, case_polars

HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def generate_uuids(path: Path, count: int, seed: int = 1) -> None:
    """`count` random UUID-like lines (8-4-4-4-12 hex digits), written in blocks."""
    rng = np.random.default_rng(seed)
    with path.open("wb") as out:
        for at in range(0, count, 1_000_000):
            n = min(1_000_000, count - at)
            digits = HEX[rng.integers(0, 16, (n, 32), dtype=np.uint8)]
            rows = np.empty((n, 37), np.uint8)
            rows[:, 0:8] = digits[:, 0:8]
            rows[:, 9:13] = digits[:, 8:12]
            rows[:, 14:18] = digits[:, 12:16]
            rows[:, 19:23] = digits[:, 16:20]
            rows[:, 24:36] = digits[:, 20:32]
            rows[:, [8, 13, 18, 23]] = ord("-")
            rows[:, 36] = ord("\n")
            out.write(rows.tobytes())


def generate_varlen(path: Path, count: int, seed: int = 1) -> None:
    """`count` distinct IDs `user-<n>` of varying length, shuffled."""
    rng = np.random.default_rng(seed)
    with path.open("wb") as out:
        order = rng.permutation(count)
        for at in range(0, count, 1_000_000):
            out.write(b"".join(b"user-%d\n" % n for n in order[at : at + 1_000_000].tolist()))


# -- the cases, each run in a child process (`--case NAME FILE`; naive and polars are in
# `_baselines.py`, shared with prepare.py) ------------------------------------------------------


def case_source(path: str, dedupe: bool) -> dict[str, Any]:
    import anyio

    from fanout.source import Source, SourceOptions, open_input

    class Discard:
        async def write(self, data: bytes) -> None:
            pass

    async def run() -> dict[str, Any]:
        source = Source(
            open_input(path), SourceOptions(dedupe=dedupe), rejects=Discard(), duplicates=Discard()
        )
        records = 0
        async for batch in source.batches():
            records += batch.records
        stats = source.stats
        return {"records": records, "duplicates": stats.duplicates, "lines": stats.lines}

    return anyio.run(run)


def child(case: str, path: str, out: str) -> None:
    import resource

    started = time.perf_counter()
    info: dict[str, Any] = {}
    if case == "naive":
        case_naive(path, out)
    elif case == "polars":
        case_polars(path, out)
    elif case in ("source", "source-nodedupe"):
        info = case_source(path, dedupe=case == "source")
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (big) parent.
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    info.update(seconds=seconds, rss_mb=peak_kb / 1024, cpu=usage.ru_utime + usage.ru_stime)
    print(json.dumps(info))


def run_child(case: str, path: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--case", case, str(path), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return result


def best_of(case: str, path: Path, out: Path, repeat: int) -> dict[str, Any]:
    runs = [run_child(case, path, out) for _ in range(repeat)]
    return min(runs, key=lambda run: float(run["seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--varlen", action="store_true", help="also time variable-length IDs")
    parser.add_argument("--skip-naive", action="store_true", help="leave out (b), the slow one")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--case", nargs=3, metavar=("CASE", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(*args.case)
        return

    workdir = Path(tempfile.mkdtemp(prefix="fanout-source-", dir=args.workdir))
    try:
        path = workdir / "ids.txt"
        out = workdir / "out.jsonl"
        started = time.perf_counter()
        generate_uuids(path, args.ids)
        size = path.stat().st_size
        print(
            f"{args.ids:,} UUID-like IDs, {size / 1e6:.0f} MB, generated in "
            f"{time.perf_counter() - started:.1f}s; {os.cpu_count()} CPUs; best of {args.repeat}",
            flush=True,
        )
        path.read_bytes()  # warm the page cache for every case alike
        rows: list[tuple[str, dict[str, Any]]] = []
        started = time.perf_counter()
        shutil.copyfile(path, out)
        rows.append(("(a) cp", {"seconds": time.perf_counter() - started}))
        out.unlink()
        if not args.skip_naive:
            rows.append(("(b) naive json.dumps loop", run_child("naive", path, out)))
        rows.append(("(c) polars sink_ndjson", best_of("polars", path, out, args.repeat)))
        rows.append(("(d) Source, dedupe on", best_of("source", path, out, args.repeat)))
        rows.append(("(e) Source, dedupe off", best_of("source-nodedupe", path, out, args.repeat)))
        if args.varlen:
            varlen = workdir / "varlen.txt"
            generate_varlen(varlen, args.ids)
            varlen.read_bytes()
            for name, case in (("(f)", "source"), ("(g)", "source-nodedupe")):
                row = best_of(case, varlen, out, args.repeat)
                row["mb"] = varlen.stat().st_size / 1e6
                label = "dedupe on" if case == "source" else "dedupe off"
                rows.append((f"{name} Source, {label}, varlen", row))
        polars = next(row for name, row in rows if name.startswith("(c)"))["seconds"]
        print(
            f"{'case':34} {'seconds':>8} {'MB/s':>8} {'vs polars':>10} {'CPU s':>7} {'peak RSS':>9}"
        )
        for name, row in rows:
            seconds = float(row["seconds"])
            rss = f"{row['rss_mb']:.0f} MB" if "rss_mb" in row else "-"
            cpu = f"{row['cpu']:.2f}" if "cpu" in row else "-"
            mb = float(row.get("mb", size / 1e6))
            print(
                f"{name:34} {seconds:8.2f} {mb / seconds:8.0f} "
                f"{seconds / polars:9.2f}x {cpu:>7} {rss:>9}"
            )
        naive = next((row for name, row in rows if name.startswith("(b)")), None)
        dedupe = next(row for name, row in rows if name.startswith("(d)"))
        if naive is not None:
            speedup = float(naive["seconds"]) / float(dedupe["seconds"])
            print(f"(d) is {speedup:.1f}x faster than the naive loop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
