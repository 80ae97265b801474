"""`fanout retry RUN`: send only the IDs that errored or went missing again, and merge them in.

The retry is a run of its own, `<run>-r<N>`, with the parent's settings and job options and the
parent's errored and missing IDs as input, so it gets everything a run has: journal, resume,
quota, merge. When it has merged, its results are appended to the parent's result file (a new
file, moved into place atomically), and the parent's `errors.jsonl` and `missing.txt` are
replaced by the retry's: what is still failing after the retry, and nothing else.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError, MergeError
from .journal import JOURNAL_NAME, read_events, write_private
from .records import InputKind
from .state import RunState

MAX_RETRIES = 9


def retry_ids(run_dir: Path, errors: bool = True) -> list[str]:
    """The IDs of the run's last merge that errored (unless not `errors`) or are missing, in
    that order, once each."""
    seen: set[str] = set()
    ids: list[str] = []
    errors_file = run_dir / "errors.jsonl"
    if errors and errors_file.exists():
        with errors_file.open("rb") as handle:
            for line in handle:
                if line.strip():
                    key = str(orjson.loads(line)["id"])
                    if key not in seen:
                        seen.add(key)
                        ids.append(key)
    missing = run_dir / "missing.txt"
    if missing.exists():
        with missing.open("rb") as handle:
            for raw in handle:
                text = raw.rstrip(b"\n")
                if not text:
                    continue
                key = orjson.loads(text) if text.startswith(b'"') else text.decode()
                if key not in seen:
                    seen.add(key)
                    ids.append(str(key))
    return ids


def child_run_id(state: RunState, state_dir: Path) -> str:
    for number in range(1, MAX_RETRIES + 1):
        candidate = f"{state.run_id}-r{number}"
        if not (state_dir / candidate / JOURNAL_NAME).exists():
            return candidate
    raise ConfigError(f"run {state.run_id} was retried {MAX_RETRIES} times already")


def unfinished(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `retry-started` event of the last retry the run's journal began and did not finish
    (its `child` run), if any."""
    done = {event["child"] for event in events if event["event"] == "retried"}
    started = [event for event in events if event["event"] == "retry-started"]
    return started[-1] if started and started[-1]["child"] not in done else None


def kept_errors(run_dir: Path, child: str) -> Path:
    """Where a `--missing-only` retry `child` keeps the run's errors it does not send again."""
    return run_dir / f"retry-{child}-kept-errors.jsonl"


def finish_command(run_id: str, started: Mapping[str, Any]) -> str:
    """The command that finishes the retry whose `retry-started` event is `started`: it is
    finished the way it began."""
    return f"fanout retry {run_id}{' --missing-only' if started.get('missing_only') else ''}"


def keep_errors(run_dir: Path, kept: Path) -> None:
    """A `--missing-only` retry keeps the run's errored IDs: their lines of errors.jsonl are
    copied to `kept` (then put back beside the retry's own, `replace_reports`)."""
    errors = run_dir / "errors.jsonl"
    write_private(kept, errors.read_bytes() if errors.exists() else b"")


def error_lines(path: Path) -> int:
    """The error lines in `path` (an errors.jsonl): one an errored ID."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def begun(child_dir: Path) -> bool:
    """Whether the child run got as far as its journal (else it is begun again)."""
    journal = child_dir / JOURNAL_NAME
    return journal.exists() and bool(read_events(child_dir))


def combining(events: list[dict[str, Any]], child: str) -> int | None:
    """The result's size before the child's results were appended, if they were begun."""
    sizes = [e["size"] for e in events if e["event"] == "retry-combining" and e["child"] == child]
    return int(sizes[-1]) if sizes else None


def parent_of(run_dir: Path) -> str | None:
    """The run whose retry the run at `run_dir` is (`<parent>-rN`, named in the parent's
    journal), if it is one."""
    parent, _, number = run_dir.name.rpartition("-r")
    journal = run_dir.parent / parent / JOURNAL_NAME
    if not parent or not number.isdigit() or not journal.exists():
        return None
    events = read_events(run_dir.parent / parent)
    started = {e.get("child") for e in events if e.get("event") == "retry-started"}
    return parent if run_dir.name in started else None


def check_retryable(state: RunState, run_dir: Path) -> None:
    parent = parent_of(run_dir)
    if parent is not None:
        raise ConfigError(
            f"run {state.run_id} is a retry of run {parent}: its results go into {parent}'s, "
            f"so retry that run (`fanout retry {parent}`)"
        )
    if state.merged is None:
        raise ConfigError(
            f"run {state.run_id} has not been merged: `fanout merge {state.run_id} --out FILE` "
            "first, then retry what errored or is missing"
        )
    out = str(state.merged["out"])
    if out.startswith("s3://"):
        raise ConfigError(
            f"run {state.run_id} was merged to the S3 dataset {out}, and `fanout retry` adds "
            "the retried IDs' results to a result file: merge the run to a file first "
            f"(`fanout merge {state.run_id} --out results.parquet`), then retry it"
        )
    kind = InputKind(state.settings["source"]["kind"])
    if kind is InputKind.RANKING:
        raise ConfigError(
            "retry sends IDs only; personalized-ranking lines also need their itemList: "
            "rerun those users from their original lines"
        )


def write_ids(path: Path, ids: list[str], kind: InputKind) -> None:
    """The retry's input: JSON lines, so any ID (quotes, spaces, non-ASCII) goes as it was.

    Per-line filterValues of a JSON-lines input are not kept (only IDs come back from a
    merge); `--filter-values` given to the run apply as before."""
    field = kind.id_field
    write_private(path, b"".join(orjson.dumps({field: key}) + b"\n" for key in ids))


def combine(parent: Path, child: Path, fmt: str) -> None:
    """Append the child's results to the parent's result file (atomically); MergeError if
    either cannot be read (a corrupt gzip or Parquet file) or the result cannot be written."""
    tmp = parent.with_name(f".{parent.name}.retry.tmp")
    try:
        if fmt == "parquet":
            _combine_parquet(parent, child, tmp)
        else:
            _combine_text(parent, child, tmp, header=fmt == "csv")
        os.replace(tmp, parent)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # pyarrow's errors are ValueErrors
        raise MergeError(f"cannot add the results in {child} to {parent}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _combine_text(parent: Path, child: Path, tmp: Path, *, header: bool) -> None:
    """The parent's bytes, then the child's rows (its CSV header left off), each file gzipped
    or not as its own name says: a run merged again to `.gz` may have retries whose results
    are not, and the other way round."""
    compressed = parent.name.endswith(".gz")
    with parent.open("rb") as first, tmp.open("wb") as out:
        shutil.copyfileobj(first, out)
        if compressed and not header and child.name.endswith(".gz"):
            with child.open("rb") as second:  # gzip members concatenate into one stream
                shutil.copyfileobj(second, out)
            return
        opener: Any = gzip.open if child.name.endswith(".gz") else open
        with opener(child, "rb") as second:
            if header:
                second.readline()
            body = gzip.GzipFile(fileobj=out, mode="wb") if compressed else out
            shutil.copyfileobj(second, body)
            if compressed:
                body.close()


def _combine_parquet(parent: Path, child: Path, tmp: Path) -> None:
    import pyarrow.parquet as pq

    first = pq.ParquetFile(parent)
    with pq.ParquetWriter(tmp, first.schema_arrow, compression="zstd") as writer:
        for path in (parent, child):
            source = pq.ParquetFile(path)
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group).cast(first.schema_arrow))


def replace_reports(parent_dir: Path, child_dir: Path, kept: Path | None = None) -> None:
    """What still failed after the retry becomes the parent's errors and missing lists, with
    the errors a `--missing-only` retry did not send again (`kept`) first."""
    for name in ("errors.jsonl", "missing.txt"):
        source = child_dir / name
        data = source.read_bytes() if source.exists() else b""
        if name == "errors.jsonl" and kept is not None:
            data = kept.read_bytes() + data
        write_private(parent_dir / name, data)


def retried_state(child_dir: Path) -> RunState:
    return RunState.replay(read_events(child_dir))
