"""Merging a run's job outputs: fanout against duckdb and a naive loop (issue 5).

Generates (or reuses, with `--workdir`) a run of `--shards` shards (default 20) holding `--lines`
output lines in all (default 2,000,000), laid out as Personalize and prepare leave them:

    in/shard-NNNNN/part-00000.jsonl        {"userId":"…"} per line (what was sent)
    out/shard-NNNNN/part-00000.jsonl.out   user-personalization lines, shuffled: 25 items and 25
                                           Java-style scores (3.773E-4) each; 1 in 1,000 is an
                                           error line (`"error":"User error: …"`)
    out/shard-NNNNN/_CHECK                 ignored by fanout

then times, each case in its own process (peak RSS = `ru_maxrss` of that child, `run_child`):

    (a) duckdb: COPY (SELECT * FROM read_json('out/*/*.out')) TO … (FORMAT parquet)   baseline
    (b) a naive loop: orjson.loads each line, orjson.dumps the flat record to JSON lines
    (c) fanout merge_shard per shard → one JSON lines file
    (d) fanout merge_shard per shard → one Parquet file
    (e) as (c), in input order (`--order input`: `merge.InputOrder`); no target, checked for
        order

fanout merges as the product does: one `merge_shard` per shard, `--concurrency` shards at a
time (default 4, `MergeSettings.concurrency`: each shard is read, parsed and written in turn,
so two cores need more than two shards in flight) into one shared result file, and
each merge reads the shard's input part back and reconciles every sent ID exactly (errors,
missing and corrupt lines go to their files). duckdb and the naive loop only convert.

Targets (issue 5): (d) rate ≥ 1.0× duckdb, (c) rate ≥ 2.0× duckdb, peak RSS of (c) and (d)
≤ 512 MiB. Times are wall seconds of the whole child (start-up and imports included; every
child leaves with `os._exit` once its output is written, as the `fanout` command does); the best
of `--repeat` rounds is kept, cases taking turns, since the machine may be shared.

    .venv/bin/python benchmarks/merge.py [--lines 2000000] [--shards 20] [--repeat 2]
        [--concurrency 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from _common import MiB, leave_child, print_table, run_child

if TYPE_CHECKING:  # the child cases import fanout after tuning malloc (`release_large_buffers`)
    from fanout.storage import ObjectInfo

DUCKDB_PARQUET_TARGET = 1.0
DUCKDB_JSONL_TARGET = 2.0
RSS_LIMIT_MIB = 512.0
ERROR_EVERY = 1000
TAILS = 20_000  # distinct (items, scores) pairs the lines are drawn from


# -- the run's files --------------------------------------------------------------------------


def _java(value: float) -> str:
    """A float as Java's Float.toString writes it (what the service's scores look like)."""
    if value == 0.0 or 1e-3 <= abs(value) < 1e7:
        return f"{value:.7g}" if "e" not in f"{value:.7g}" else repr(value)
    mantissa, exponent = f"{value:.4E}".split("E")
    mantissa = mantissa.rstrip("0")
    mantissa = mantissa + "0" if mantissa.endswith(".") else mantissa
    return f"{mantissa}E{int(exponent)}"


def _tails(rng: random.Random) -> list[bytes]:
    tails = []
    for _ in range(TAILS):
        items = ",".join(f'"{rng.randrange(1, 200_000)}"' for _ in range(25))
        scores = ",".join(
            _java(s) for s in sorted((rng.random() ** 3 / 50 for _ in range(25)), reverse=True)
        )
        tails.append(f'"recommendedItems":[{items}],"scores":[{scores}]'.encode())
    return tails


def make_run(root: Path, lines: int, shards: int) -> None:
    """Write the run's input parts and outputs under `root` (see the module docstring)."""
    rng = random.Random(5)
    tails = _tails(rng)
    per = -(-lines // shards)
    for shard in range(shards):
        users = [
            f"user-{n:09d}".encode() for n in range(shard * per, min(lines, (shard + 1) * per))
        ]
        inp, out = root / "in" / f"shard-{shard:05d}", root / "out" / f"shard-{shard:05d}"
        inp.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        (inp / "part-00000.jsonl").write_bytes(b"".join(b'{"userId":"%s"}\n' % u for u in users))
        rng.shuffle(users)
        body = []
        for n, user in enumerate(users):
            if n % ERROR_EVERY == ERROR_EVERY - 1:
                body.append(
                    b'{"input":{"userId":"%s"},"output":{"recommendedItems":[]},'
                    b'"error":"User error: Required fields for the provided recipe are userId"}\n'
                    % user
                )
            else:
                tail = tails[rng.randrange(TAILS)]
                body.append(
                    b'{"input":{"userId":"%s"},"output":{%s},"error":null}\n' % (user, tail)
                )
        (out / "part-00000.jsonl.out").write_bytes(b"".join(body))
        (out / "_CHECK").write_bytes(b"")


def ensure_run(root: Path, lines: int, shards: int) -> Path:
    """`root/run-<lines>-<shards>`, generated unless already complete."""
    run = root / f"run-{lines}-{shards}"
    done = run / "complete"
    if done.exists():
        print(f"reusing {run}", flush=True)
        return run
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    make_run(run, lines, shards)
    done.write_bytes(b"")
    print(f"generated {run} in {time.perf_counter() - started:.1f}s", flush=True)
    return run


def output_files(run: Path) -> list[Path]:
    return sorted((run / "out").glob("*/*.out"))


def warm(run: Path) -> None:
    for path in sorted(run.rglob("*.jsonl*")):
        with path.open("rb", buffering=0) as handle:
            while handle.read(16 * MiB):
                pass


# -- the cases, each run in a child process (`--case NAME RUN OUT`) ----------------------------


def case_duckdb(run: Path, out: Path, concurrency: int) -> dict[str, object]:
    import duckdb

    pattern = str(run / "out" / "*" / "*.out")
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM read_json('{pattern}', format='newline_delimited')) "
            f"TO '{out}' (FORMAT parquet)"
        )
        rows = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()
    return {"rows": rows[0] if rows else 0}


def case_naive(run: Path, out: Path, concurrency: int) -> dict[str, object]:
    rows = errors = 0
    with out.open("wb") as sink:
        for path in output_files(run):
            with path.open("rb") as source:
                for line in source:
                    obj = orjson.loads(line)
                    if obj.get("error") is not None:
                        errors += 1
                        continue
                    flat = {"userId": obj["input"]["userId"], **obj["output"]}
                    sink.write(orjson.dumps(flat) + b"\n")
                    rows += 1
    return {"rows": rows, "errors": errors}


class LocalStore:
    """An ObjectReader over a local folder: bucket `b`, keys are paths below the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        from fanout.storage import ObjectInfo

        for path in sorted((self.root / prefix).iterdir()):
            key = str(path.relative_to(self.root))
            yield ObjectInfo(key, path.stat().st_size)

    async def read_chunks(self, bucket: str, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        import aiofiles

        async with aiofiles.open(self.root / key, "rb") as handle:
            while chunk := await handle.read(chunk_size):
                yield chunk


def case_fanout(
    run: Path, out: Path, concurrency: int, *, ordered: bool = False
) -> dict[str, object]:
    from fanout._memory import release_large_buffers

    release_large_buffers()  # as the `fanout` command does at start-up, before numpy loads

    import anyio

    from fanout.journal import FileSink
    from fanout.merge import (
        InputOrder,
        MergeOptions,
        MergeSinks,
        MergeStats,
        Reconciliation,
        merge_shard,
        open_results,
    )
    from fanout.records import InputKind

    shards = sorted(path.name for path in (run / "out").iterdir())
    sizes = [(run / "in" / shard / "part-00000.jsonl").stat().st_size for shard in shards]
    store = LocalStore(run)
    stats: list[MergeStats] = []

    async def main() -> None:
        limit = anyio.CapacityLimiter(concurrency)
        async with (
            open_results(out, InputKind.USER) as results,
            FileSink(out.parent / "errors.jsonl") as errors,
            FileSink(out.parent / "missing.txt") as missing,
            FileSink(out.parent / "corrupt.jsonl") as corrupt,
        ):
            sinks = MergeSinks(results, errors, missing, corrupt)
            order = InputOrder(results, InputKind.USER, out.parent) if ordered else None

            async def one(number: int, shard: str) -> None:
                lines = None if order is None else order.lines_for(number)
                async with limit:
                    parts = [str(run / "in" / shard / "part-00000.jsonl")]
                    options = MergeOptions().for_input(sizes[number])  # as a run does
                    stats.append(
                        await merge_shard(
                            store, f"s3://b/out/{shard}/", InputKind.USER, parts, sinks,
                            shard=number, options=options, ordered=lines,
                        )
                    )  # fmt: skip
                if order is not None and lines is not None:
                    await order.merged(number, lines)

            async with anyio.create_task_group() as tg:
                for number, shard in enumerate(shards):
                    tg.start_soon(one, number, shard)

    anyio.run(main)
    total = Reconciliation.of(stats)
    return {
        "rows": total.results,
        "errors": total.errors,
        "missing": total.missing,
        "corrupt": total.corrupt,
        "sent": total.sent,
    }


def case_fanout_ordered(run: Path, out: Path, concurrency: int) -> dict[str, object]:
    return case_fanout(run, out, concurrency, ordered=True)


CHILD_CASES = {
    "duckdb": case_duckdb,
    "naive": case_naive,
    "fanout": case_fanout,
    "fanout-ordered": case_fanout_ordered,
}


def in_input_order(out: Path) -> bool:
    """The result's IDs ascend, as the generated input's do."""
    previous = b""
    with out.open("rb") as handle:
        for line in handle:
            user = line[len(b'{"userId":"') : line.index(b'"', len(b'{"userId":"'))]
            if user <= previous:
                return False
            previous = user
    return True


# -- running and reporting --------------------------------------------------------------------


@dataclass(slots=True)
class Case:
    key: str
    label: str
    kind: str
    out_name: str
    note: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)
    out_mib: float = 0.0

    @property
    def best(self) -> int:
        return min(range(len(self.seconds)), key=self.seconds.__getitem__)


def run_case(case: Case, run: Path, scratch: Path, concurrency: int) -> None:
    folder = scratch / f"case-{case.key}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    out = folder / case.out_name
    os.sync()
    load1 = os.getloadavg()[0]
    argv = [sys.executable, __file__, "--case", case.kind, str(run), str(out)]
    argv += ["--concurrency", str(concurrency)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_child(argv)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{case.label}: exit code {result.returncode}")
    case.seconds.append(result.seconds)
    case.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    case.rss.append(result.peak_rss_mib)
    case.load.append(load1)
    case.summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    case.out_mib = out.stat().st_size / MiB
    if case.kind == "fanout-ordered":
        case.summary["in input order"] = in_input_order(out)
    took = f"{result.seconds:7.2f}s {result.peak_rss_mib:7.1f} MiB"
    print(f"  {case.label:<38} {took}  load {load1:.2f}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="output lines in all")
    parser.add_argument("--shards", type=int, default=20, help="shards (one .out file each)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, best kept")
    parser.add_argument("--concurrency", type=int, default=4, help="shards merged at once")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated run here")
    parser.add_argument("--case", nargs=3, metavar=("CASE", "RUN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, run, out = args.case
        summary = CHILD_CASES[name](Path(run), Path(out), args.concurrency)
        print(orjson.dumps(summary).decode())
        leave_child()

    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min); best of {args.repeat}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fanout-merge-bench-", dir=args.workdir))
    try:
        run = ensure_run(args.workdir or scratch, args.lines, args.shards)
        warm(run)
        size = sum(path.stat().st_size for path in output_files(run)) / MiB
        print(f"{args.lines:,} lines in {args.shards} .out files, {size:,.0f} MiB")
        fanout_note = f"reconciles vs inputs, {args.concurrency} shards at a time"
        cases = [
            Case("a", "(a) duckdb read_json → parquet", "duckdb", "r.parquet", "converts only"),
            Case("b", "(b) naive orjson loop → jsonl", "naive", "r.jsonl", "converts only"),
            Case("c", "(c) fanout merge → jsonl", "fanout", "r.jsonl", fanout_note),
            Case("d", "(d) fanout merge → parquet", "fanout", "r.parquet", fanout_note),
            Case("e", "(e) fanout merge → jsonl, input order", "fanout-ordered", "r.jsonl",
                 fanout_note + ", --order input"),
        ]  # fmt: skip
        for attempt in range(1, args.repeat + 1):
            print(f"round {attempt}/{args.repeat}", flush=True)
            for case in cases:
                run_case(case, run, scratch, args.concurrency)
        report(cases, args.lines)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(cases: list[Case], lines: int) -> None:
    duck = cases[0]
    duck_rate = lines / duck.seconds[duck.best]
    rows = []
    for case in cases:
        best = case.best
        rate = lines / case.seconds[best]
        rows.append(
            {
                "case": case.label,
                "seconds": round(case.seconds[best], 2),
                "lines/s": round(rate),
                "× duckdb": round(rate / duck_rate, 2),
                "CPU s": round(case.cpu[best], 1),
                "peak RSS MiB": round(case.rss[best]),
                "MiB out": round(case.out_mib),
                "load1": round(case.load[best], 2),
                "what it does": case.note,
            }
        )
    print()
    print_table(rows)
    errors = lines // ERROR_EVERY
    c, d = cases[2], cases[3]
    checks: list[tuple[bool, str]] = []
    for case in (c, d):
        rate = lines / case.seconds[case.best] / duck_rate
        target = DUCKDB_JSONL_TARGET if case is c else DUCKDB_PARQUET_TARGET
        checks.append((rate >= target, f"{case.label}: {rate:.2f}× duckdb (target ≥ {target}×)"))
    for case in (c, d):
        peak = max(case.rss)
        checks.append((peak <= RSS_LIMIT_MIB, f"{case.label}: peak RSS {peak:.0f} MiB (≤ 512)"))
    for case in cases[2:]:
        s = case.summary
        want = {"rows": lines - errors, "errors": errors, "missing": 0, "corrupt": 0, "sent": lines}
        if case.kind == "fanout-ordered":
            want["in input order"] = True
        got = {k: s.get(k) for k in want}
        checks.append((got == want, f"check {case.label}: {got}"))
    print()
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if not all(ok for ok, _ in checks[-3:]):
        sys.exit(1)


if __name__ == "__main__":
    main()
