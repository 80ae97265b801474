"""The live status line follows the journal's events."""

from __future__ import annotations

import io

from fanout.progress import Progress


def test_the_status_line_counts_what_the_run_did() -> None:
    stream = io.StringIO()
    live = Progress(stream)
    live.event({"event": "run-started", "plan": {"records": 1000, "shards": 4, "quota": 2}})
    live.event({"event": "part-written", "records": 600, "nbytes": 12_000_000})
    for shard in range(3):
        live.event({"event": "job-created", "shard": shard, "status": "CREATE PENDING"})
    live.event({"event": "job-status", "shard": 0, "status": "ACTIVE"})
    live.event({"event": "job-status", "shard": 1, "status": "CREATE IN_PROGRESS"})
    live.event({"event": "shard-merged", "results": 240, "errors": 10})
    line = live.line()
    assert "read 600" in line and "uploaded 12 MB" in line
    assert "jobs 1 pending, 1 running, 1 done (wave 2/2)" in line
    assert "merged 250" in line and "ETA" in line
    live.message("shard 2: created")
    assert "fanout: shard 2: created\n" in stream.getvalue()
    live.close()
    assert stream.getvalue().endswith("\r")  # the status line is wiped, not left half-drawn
