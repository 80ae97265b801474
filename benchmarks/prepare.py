"""`fanout prepare --local-dir` against `cp`, a naive loop and polars, on a big ID list.

Generates N UUID-like IDs (36 characters, one per line; `--ids`, default 10,000,000) and a
smaller file (`--small-ids`, default 1,000,000) for the memory-scaling check, then times, each
in its own process (peak RSS = `ru_maxrss` of that child alone, via `_common.run_child`):

    (a) cp FILE OUT                                           the I/O floor
    (b) a naive loop: json.dumps({"userId": id}) per line     what fanout replaces
    (c) polars scan_csv(...).sink_ndjson(OUT)                 an expert's tool, the baseline
    (d) fanout prepare --ids FILE --local-dir OUT ...         the real CLI, dedupe on (default)
    (e) the same with --keep-duplicates                       dedupe off, N IDs
    (f) the same with --keep-duplicates                       dedupe off, --small-ids IDs

Targets (from the issue): (d) rate >= 1.0x polars and >= 20x naive; (d) peak RSS <= 300 MiB;
peak RSS (e) / (f) <= 1.3 (dedupe off, memory must not grow with the input).

Times are wall seconds of the whole child (interpreter start and imports included: what a user
waits for; every child leaves with `os._exit` once its output is written, as the `fanout`
command does). (b) and (c) run as `python _baselines.py CASE FILE OUT`, which imports only what
its case needs. The best of `--repeat` runs (default 7) is kept, cases taking turns round by
round, since the machine may be shared (the 1-minute load average at the start of the kept run
is shown); the median of the runs is shown beside it. Seven, not three: on the shared VM these
targets were measured on, one case's runs varied up to 2x within a minute (fanout 1.31-2.69 s
and polars 1.34-2.17 s in a single `--repeat 3`), so a best of three was often a disturbed run;
and on 2026-11-29, with the load average near 1 from other tenants, three runs of this script
kept bests of 1.13-1.25 s for fanout and 1.16-1.57 s for polars (medians ~1.4 s for both).
Rate ratios are input-MB/s over polars' input-MB/s (= polars seconds / case seconds on the same
file, so > 1 means faster). The naive loop writes json.dumps' default form
(`{"userId": "…"}`, one byte more per line); polars and fanout write the compact form.

Checks, not timed: every fanout run's summary has records == lines == its input's ID count (the
IDs are distinct) and its part files add up to the summary's bytes; for (d) that total must equal
the polars output's size (both `{"userId":"…"}` per line), and its first run is compared with the
polars output byte for byte (the parts concatenated in name order).

    .venv/bin/python benchmarks/prepare.py [--ids 10000000] [--small-ids 1000000] [--repeat 7]
        [--workdir DIR] [--skip-naive]

With `--workdir DIR` the generated ID files are kept there (and reused by later runs); the
outputs always go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import MiB, print_table, run_child

MB = 1_000_000
LINE_BYTES = 37  # 36-character ID and a newline
RECORD_OVERHEAD = len('{"userId":""}\n') - 1  # JSON line bytes = ID line bytes + this
POLARS_TARGET = 1.0
NAIVE_TARGET = 20.0
RSS_LIMIT_MIB = 300.0
SCALING_TARGET = 1.3


# The baselines run as processes of their own, importing only what they need.
BASELINES = Path(__file__).with_name("_baselines.py")


# -- inputs ---------------------------------------------------------------------------------------


def ids_file(directory: Path, count: int) -> Path:
    """`directory/ids-<count>.txt`, generated unless a file of the right size is already there."""
    path = directory / f"ids-{count}.txt"
    if path.exists() and path.stat().st_size == count * LINE_BYTES:
        print(f"reusing {path}", flush=True)
        return path
    from source_throughput import generate_uuids  # numpy: only this (parent) process needs it

    started = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    generate_uuids(tmp, count)
    tmp.replace(path)
    seconds = time.perf_counter() - started
    print(f"generated {path} ({count:,} IDs) in {seconds:.1f}s", flush=True)
    return path


def warm(path: Path) -> None:
    """Read `path` once so that every case finds it in the page cache."""
    with path.open("rb", buffering=0) as handle:
        while handle.read(16 * MiB):
            pass


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def same_bytes(parts: list[Path], reference: Path) -> bool:
    """Whether the concatenation of `parts` is byte for byte the file `reference`."""
    with reference.open("rb") as ref:
        for part in parts:
            with part.open("rb") as handle:
                while block := handle.read(8 * MiB):
                    if ref.read(len(block)) != block:
                        return False
        return ref.read(1) == b""


# -- the cases ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    seconds: float
    cpu: float
    rss_mib: float
    load1: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Case:
    key: str
    label: str
    kind: str  # cp | naive | polars | fanout
    input: Path
    ids: int
    extra: list[str] = field(default_factory=list)  # more `fanout prepare` options
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda run: run.seconds)

    @property
    def rate(self) -> float:
        """Input MB per second of the best run."""
        return self.input.stat().st_size / MB / self.best.seconds


def fanout_exe() -> str:
    beside = Path(sys.executable).parent / "fanout"
    found = str(beside) if beside.exists() else shutil.which("fanout")
    if found is None:
        raise SystemExit("no fanout executable next to this Python nor on PATH")
    return found


class Bench:
    def __init__(self, scratch: Path, fanout: str) -> None:
        self.scratch = scratch
        self.fanout = fanout
        self.polars_out: Path | None = None  # kept from the first polars run, for the checks
        self.compared = False
        self.problems: list[str] = []
        self.notes: list[str] = []  # checks passed, reported at the end

    def argv(self, case: Case, out: Path, run_id: str) -> list[str]:
        if case.kind == "cp":
            return ["cp", str(case.input), str(out)]
        if case.kind in ("naive", "polars"):
            return [sys.executable, str(BASELINES), case.kind, str(case.input), str(out)]
        state = self.scratch / "state"
        return [
            *(self.fanout, "prepare", "--ids", str(case.input), "--local-dir", str(out)),
            *("--run-id", run_id, "--state-dir", str(state), "--output", "json", *case.extra),
        ]

    def run(self, case: Case, attempt: int) -> None:
        run_id = f"bench-{case.key}-{attempt}"
        out = self.scratch / f"out-{case.key}-{attempt}"
        argv = self.argv(case, out, run_id)
        os.sync()  # flush the previous case's writes outside of this one's time
        load1 = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = run_child(argv)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise SystemExit(f"{case.label}: exit code {result.returncode}: {' '.join(argv)}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary: dict[str, Any] = {}
        if case.kind == "fanout":
            summary = json.loads(result.stdout)
            self.check_fanout(case, summary, out / run_id)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(self.scratch / "state" / run_id, ignore_errors=True)
        elif case.kind == "polars" and self.polars_out is None:
            self.polars_out = self.scratch / "polars.jsonl"
            out.replace(self.polars_out)
            self.check_polars(case)
        else:
            out.unlink(missing_ok=True)
        case.runs.append(Run(result.seconds, cpu, result.peak_rss_mib, load1, summary))
        line = f"  {case.label:<34} {result.seconds:8.2f}s  {result.peak_rss_mib:7.1f} MiB"
        print(f"{line}  load {load1:.2f}", flush=True)

    def problem(self, text: str) -> None:
        print(f"  CHECK FAILED: {text}", flush=True)
        self.problems.append(text)

    def check_polars(self, case: Case) -> None:
        assert self.polars_out is not None
        expected = case.input.stat().st_size + case.ids * RECORD_OVERHEAD
        size = self.polars_out.stat().st_size
        with case.input.open() as ids, self.polars_out.open() as out:
            first_id, first_line = ids.readline().strip(), out.readline()
        if first_line != json.dumps({"userId": first_id}, separators=(",", ":")) + "\n":
            self.problem(f"polars' first line is {first_line!r}, not the compact form")
        if size != expected:
            self.problem(f"polars wrote {size:,} bytes, not {expected:,} (compact JSON lines)")

    def check_fanout(self, case: Case, summary: dict[str, Any], shards: Path) -> None:
        for key in ("records", "lines"):
            if summary.get(key) != case.ids:
                self.problem(f"{case.label}: summary {key} = {summary.get(key)}, not {case.ids:,}")
        parts = part_files(shards)
        total = sum(part.stat().st_size for part in parts)
        if total != summary.get("bytes"):
            self.problem(f"{case.label}: parts hold {total:,} bytes, summary says {summary}")
        if self.polars_out is None or case.key != "d":
            return
        reference = self.polars_out.stat().st_size
        if total != reference:
            self.problem(f"{case.label}: parts hold {total:,} bytes, polars wrote {reference:,}")
        elif not self.compared:
            self.compared = True
            if same_bytes(parts, self.polars_out):
                self.notes.append(
                    f"{case.label}: its {len(parts)} part files, concatenated, are the polars "
                    f"output byte for byte ({total:,} bytes)"
                )
            else:
                self.problem(f"{case.label}: same size as polars' output, different bytes")


# -- report ---------------------------------------------------------------------------------------


def ratio(value: float | None) -> float | str:
    return "-" if value is None else round(value, 2)


def report(cases: list[Case], polars: Case, naive: Case | None) -> list[tuple[bool, str]]:
    rows: list[dict[str, object]] = []
    for case in cases:
        best = case.best
        rows.append(
            {
                "case": case.label,
                "IDs": case.ids,
                "seconds": best.seconds,
                "median s": statistics.median(run.seconds for run in case.runs),
                "MB/s": case.rate,
                "vs polars": ratio(case.rate / polars.rate),
                "vs naive": ratio(case.rate / naive.rate if naive else None),
                "CPU s": best.cpu,
                "peak RSS MiB": best.rss_mib,
                "load1": best.load1,
            }
        )
    print()
    print_table(rows)
    d, e, f = (next(c for c in cases if c.key == key) for key in "def")
    results = [
        (
            d.rate / polars.rate >= POLARS_TARGET,
            f"(d) rate {d.rate / polars.rate:.2f}x polars (target >= {POLARS_TARGET}x)",
        )
    ]
    if naive is not None:
        speedup = d.rate / naive.rate
        results.append((speedup >= NAIVE_TARGET, f"(d) {speedup:.1f}x naive (>= {NAIVE_TARGET}x)"))
    results.append(
        (
            d.best.rss_mib <= RSS_LIMIT_MIB,
            f"(d) peak RSS {d.best.rss_mib:.0f} MiB at {d.ids:,} IDs (<= {RSS_LIMIT_MIB:.0f} MiB)",
        )
    )
    scaling = e.best.rss_mib / f.best.rss_mib
    results.append(
        (
            scaling <= SCALING_TARGET,
            f"(e)/(f) peak RSS, dedupe off, {e.ids:,} vs {f.ids:,} IDs: {e.best.rss_mib:.0f} / "
            f"{f.best.rss_mib:.0f} MiB = {scaling:.2f} (<= {SCALING_TARGET})",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000, help="IDs in the big file")
    parser.add_argument("--small-ids", type=int, default=1_000_000, help="IDs for case (f)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per case, best kept")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the ID files here")
    parser.add_argument("--skip-naive", action="store_true", help="leave out (b), the slow one")
    args = parser.parse_args()

    fanout = fanout_exe()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min); best of {args.repeat}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fanout-prepare-bench-", dir=args.workdir))
    try:
        inputs = args.workdir if args.workdir is not None else scratch
        big = ids_file(inputs, args.ids)
        small = ids_file(inputs, args.small_ids)
        for path in (big, small):
            warm(path)
        print(f"input: {big.stat().st_size / MB:,.0f} MB ({args.ids:,} IDs); fanout: {fanout}")
        keep = ["--keep-duplicates"]
        cases = [
            Case("a", "(a) cp", "cp", big, args.ids),
            Case("b", "(b) naive json.dumps loop", "naive", big, args.ids),
            Case("c", "(c) polars sink_ndjson", "polars", big, args.ids),
            Case("d", "(d) fanout prepare, dedupe on", "fanout", big, args.ids),
            Case("e", "(e) fanout prepare, dedupe off", "fanout", big, args.ids, keep),
            Case("f", "(f) fanout prepare, dedupe off", "fanout", small, args.small_ids, keep),
        ]
        if args.skip_naive:
            cases = [case for case in cases if case.kind != "naive"]
        bench = Bench(scratch, fanout)
        started = time.perf_counter()
        for attempt in range(1, args.repeat + 1):
            print(f"round {attempt}/{args.repeat}", flush=True)
            for case in cases:
                bench.run(case, attempt)
        polars = next(case for case in cases if case.kind == "polars")
        naive = next((case for case in cases if case.kind == "naive"), None)
        results = report(cases, polars, naive)
        d = next(case for case in cases if case.key == "d")
        inner = min(float(run.summary.get("seconds", 0.0)) for run in d.runs)
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"\n(d) seconds inside fanout (summary.json, no start-up): best {inner:.2f}; "
            f"benchmark took {time.perf_counter() - started:.0f}s; load average now {load}"
        )
        for ok, text in results:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        if not bench.problems:
            fanout_runs = sum(len(case.runs) for case in cases if case.kind == "fanout")
            bench.notes.insert(
                0,
                f"all {fanout_runs} fanout runs: records == lines == IDs, part files == "
                "summary bytes; polars wrote the compact form",
            )
        for text in bench.notes:
            print(f"PASS  check: {text}")
        for text in bench.problems:
            print(f"FAIL  check: {text}")
        if bench.problems:
            sys.exit(1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
