"""What `fanout status` shows: a run's state as a record (JSON) or as rows of text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .retry import finish_command
from .state import RunState


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def phase(state: RunState) -> str:
    if state.merged is not None:
        return "merged"
    if state.merge is not None and state.submitted is not None:
        return "merging"
    if state.submitted is not None:
        return "submitted"
    if state.submit is not None:
        return "submitting"
    if state.prepared is not None:
        return "prepared"
    return "preparing"


def status_record(state: RunState) -> dict[str, Any]:
    """Everything the journal knows about the run, JSON-ready."""
    shards = []
    for number in sorted(state.shards):
        info = state.shards[number]
        entry: dict[str, Any] = {
            "shard": number,
            "records": info.records,
            "bytes": info.nbytes,
            "parts": info.parts,
            "input": info.prefix,
        }
        job = state.job(number)
        if job is not None:
            entry["job"] = {
                "name": job.name,
                "arn": job.arn,
                "attempt": job.attempt,
                "status": job.status_text,
                "reason": job.reason,
                "adopted": job.adopted,
                "created": _when(job.created),
                "updated": _when(job.updated),
                "timed_out": job.timed_out,
            }
        if number in state.failed:
            entry["failed"] = state.failed[number]["reason"]
        if number in state.refused:
            entry["refused"] = state.refused[number]
        shards.append(entry)
    planned = int(state.start.get("plan", {}).get("shards") or 0)
    record: dict[str, Any] = {
        "run_id": state.run_id,
        "phase": phase(state),
        "started": _when(state.started),
        "last_event": _when(state.last_event or state.started),
        "ids": state.start.get("ids"),
        "input_base": state.start.get("input_base"),
        "shards_planned": planned,
        "shards_ready": len(state.shards),
        "parts_written": len(state.parts),
        "records": sum(s.records for s in state.shards.values()),
        "jobs": state.counts(),
        "shards": shards,
    }
    if state.stopped is not None:
        record["stopped"] = {
            "at": _when(float(state.stopped["t"])),
            "error": state.stopped["error"],
            "reason": state.stopped["reason"],
        }
    if state.prepared is not None:
        record["source"] = state.prepared.get("source")
    if state.submit is not None:
        record["job_output"] = state.submit["request"]["jobOutput"]["s3DataDestination"]["path"]
    if state.retrying is not None:
        record["unfinished_retry"] = {
            "child": state.retrying["child"],
            "finish_with": finish_command(state.run_id, state.retrying),
        }
    if state.merged is not None:
        record["result"] = state.merged["out"]
        record["reconciliation"] = state.reconciled()
        if retries := state.retries():
            record["retries"] = retries
    return record


def status_rows(state: RunState) -> list[tuple[str, object]]:
    """The record as `name  value` rows, then one row per shard."""
    record = status_record(state)
    jobs = ", ".join(f"{count} {name}" for name, count in sorted(record["jobs"].items()))
    rows: list[tuple[str, object]] = [
        ("run", record["run_id"]),
        ("phase", record["phase"]),
        ("started", record["started"]),
        ("last event", record["last_event"]),
        ("input", record["ids"]),
        ("records", f"{record['records']:,}"),
        ("shards", f"{record['shards_ready']} ready of {record['shards_planned'] or '?'} planned"),
        ("jobs", jobs or "none yet"),
    ]
    if "stopped" in record:
        stop = record["stopped"]
        rows.insert(2, ("stopped", f"{stop['at']}: {stop['error']}: {stop['reason']}"))
    if "result" in record:
        counts = record["reconciliation"]
        rows.append(("result", record["result"]))
        rows.append(
            (
                "reconciled",
                f"{counts['results']:,} results, {counts['errors']:,} errors, "
                f"{counts['missing']:,} missing",
            )
        )
        if "retries" in record:
            retries = ", ".join(record["retries"])
            rows.append(("retries", f"{retries} (`fanout retry`: their results are in the result)"))
    if "unfinished_retry" in record:
        retry = record["unfinished_retry"]
        rows.append(("retry", f"{retry['child']} unfinished: `{retry['finish_with']}` finishes it"))
    for shard in record["shards"]:
        job = shard.get("job")
        if job is None:
            text = "no job" if "refused" in shard else "waiting for a job"
        else:
            text = f"{job['status']} {job['name']} (attempt {job['attempt']}, {job['created']})"
            if job["timed_out"] and job["status"] not in {"ACTIVE", "CREATE FAILED"}:
                text += " timed out"
        if "failed" in shard:
            text += f": FAILED: {shard['failed']}"
        if "refused" in shard:
            text += f": THE RUN STOPPED: {shard['refused']}"
        rows.append((f"shard {shard['shard']}", f"{shard['records']:,} records, {text}"))
    return rows
