"""`fanout demo`: the whole pipeline (`fanout run`) on an in-process emulator.

It starts the emulator, points this process at it the way `eval "$(fanout emulator)"` points a
shell, writes N user IDs, and runs exactly what a user's `fanout run` runs: preflight, plan,
prepare, submit under the quota, merge, reconcile. The result file and run state stay in a
temporary folder whose path is printed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def run_demo(*, users: int, num_results: int) -> int:
    from .cli import _parser, _print_rows, _report, execute_run, exit_code
    from .emulator import Emulator, EmulatorSettings

    workdir = Path(tempfile.mkdtemp(prefix="fanout-demo-"))
    ids = workdir / "users.txt"
    with ids.open("w") as handle:
        handle.writelines(f"{user}\n" for user in range(1, users + 1))
    with Emulator(EmulatorSettings(job_seconds=0.2)) as emulator:
        info = emulator.info
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
            os.environ.pop(name, None)
        os.environ.update(info.environment())
        key = info.kms_key_arn
        argv = [
            "run",
            "--ids", str(ids),
            "--out", str(workdir / "recommendations.jsonl"),
            "--solution-version-arn", info.solution_versions["user-personalization"],
            "--role-arn", info.role_arn,
            "--job-input", f"s3DataSource={{path=s3://{info.bucket}/demo/in/,kmsKeyArn={key}}}",
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/demo/out/,kmsKeyArn={key}}}",
            "--num-results", str(num_results),
            "--state-dir", str(workdir / "state"),
            "--max-job-bytes", str(max(1_000_000, users * 30 // 5)),  # several shards, for show
            "--poll-interval", "0.25",
        ]  # fmt: skip
        outcome = execute_run(_parser().parse_args(argv), _report)
    merged = outcome.merged
    submitted = outcome.submitted
    rows: list[tuple[str, object]] = [
        ("run", outcome.run_id),
        ("users sent", users),
        ("jobs", len(submitted.active) if submitted else 0),
        ("users with recommendations", merged.results if merged else 0),
        ("users with errors", merged.errors if merged else 0),
        ("users missing", merged.missing if merged else users),
        ("result", outcome.result),
        ("run state", outcome.run_dir),
        ("seconds", f"{outcome.seconds:.1f}"),
    ]
    _print_rows(rows)
    return int(exit_code(outcome, allow_partial=False))
