"""The `fanout` command line: parse, build settings, call the library, map errors to exit codes.

No pipeline logic lives here. Exit codes: 0 success, 1 failure, 2 usage error, 3 partial result
(some IDs errored or are missing; `--allow-partial` makes it 0), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from ._memory import release_large_buffers
from .errors import ConfigError, FanoutError, UploadError, first_of

EXIT_OK = 0
EXIT_FAILED = 1  # also every FanoutError but usage errors (FanoutError.exit_code)
EXIT_PARTIAL = 3  # results written, but some IDs errored or are missing (--allow-partial: 0)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM, as a shell reports a process it ended

_T = TypeVar("_T")


_terminated = threading.Event()  # SIGTERM came: the interruption is reported as such (143)
_stop_asked = threading.Event()  # SIGINT or SIGTERM came during this command
_stop: Callable[[], None] | None = None  # stops the command's async part (`_arun`), while it runs


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (what schedulers, systemd and `timeout` send), handled as Ctrl-C is: the command
    stops cleanly, removes what it had half written, and says how to continue."""
    _terminated.set()
    _stop_command()


def _on_sigint(signum: int, frame: Any) -> None:
    _stop_command()


def _stop_command() -> None:
    """Stop the command: its async part by `_arun`'s cancel scope; before it (imports, the
    settings) by a KeyboardInterrupt where the signal landed. One that lands in a `__del__` is
    lost (Python only prints it; helper-32 saw a run go on to exit 0), so the stop is also
    remembered (`_stop_asked`), for `_arun` to honour; and an object whose making it cut
    short may complain when collected: noise after a stop, not printed."""
    _stop_asked.set()
    if _stop is not None:
        _stop()
        return
    sys.unraisablehook = _after_stop
    raise KeyboardInterrupt


def _after_stop(unraisable: Any) -> None:
    """`sys.unraisablehook` once a stop was asked: what a half-made object says when it is
    collected is a consequence of the stop, not news."""


_STOPPED: Any = object()  # what `_arun`'s task returns when a signal stopped it


def _arun(func: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """`anyio.run(func, *args)` inside a cancel scope that SIGINT and SIGTERM cancel (`main`
    installs their handlers); a command stopped so raises KeyboardInterrupt once its tasks
    have unwound, and one whose stop was asked before it began does not begin.

    Why not asyncio's own SIGINT handling: it cancels the main task natively, and a native
    cancellation that lands as a cancel scope of the run exits (a timeout, a task group done
    early) can be taken for the scope's own and lost (agronholm/anyio#1214): the run then went
    on with its tasks cancelled, and a SIGTERM during a merge ended `MergeError: 8000 input
    lines but 3457 accounted for`. Where SIGINT is ignored (a background job of a script),
    asyncio installs no handler at all, and SIGTERM's KeyboardInterrupt surfaced in whichever
    task it landed in, with a traceback of every task group around it. A cancel scope is
    anyio's own way to stop everything under it, shielded steps (journal writes, aborting
    uploads) included.

    A second signal raises KeyboardInterrupt where it lands, as asyncio does. A failure after
    the stop was asked for is taken as the stop's doing: the run journal has every finished
    step, and the command reports the interruption, not the failure."""
    import asyncio

    import anyio

    async def main() -> Any:
        global _stop
        loop = asyncio.get_running_loop()
        asked = 0

        def stop() -> None:
            nonlocal asked
            asked += 1
            if asked > 1:
                raise KeyboardInterrupt
            loop.call_soon_threadsafe(scope.cancel)

        with anyio.CancelScope() as scope:
            if _stop_asked.is_set():  # before this began (its KeyboardInterrupt lost)
                return _STOPPED
            _stop = stop
            try:
                return await func(*args)
            except Exception:
                if scope.cancel_called:
                    return _STOPPED
                raise
            finally:
                _stop = None
        return _STOPPED  # cancelled: the scope caught it

    result = anyio.run(main)
    if result is _STOPPED:
        raise KeyboardInterrupt
    return cast("_T", result)


class _Version(argparse.Action):
    """`--version`, with the version looked up only then."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from . import __version__

        print(f"fanout {__version__}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: `--out` must not quietly become `--output` where a command has
    only the latter (the AWS CLI takes no abbreviations either)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or only the command `only`, which is all
    `main` needs to parse a command line that names it (building all 14 took 15-20 ms of every
    start); `fanout --help` and a mistyped command get the whole tree."""
    parser = _Parser(
        prog="fanout",
        description="Amazon Personalize batch recommendations for millions of users at once.",
    )
    parser.add_argument("--version", action=_Version, help="print fanout's version and exit")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    if only in (None, "emulator"):
        emulator = commands.add_parser(
            "emulator",
            help="run the local Personalize batch API with S3 and KMS",
            description="Start a local emulator of the Personalize batch API (AWS JSON 1.1) and of "
            "S3 with KMS, print the shell lines that point the AWS CLI and SDKs at it, and run "
            "until interrupted (SIGINT or SIGTERM).",
        )
        _emulator_options(emulator)

    if only in (None, "demo"):
        demo = commands.add_parser(
            "demo",
            help="run a batch job end to end on an in-process emulator",
            description="Start the emulator in-process, generate users, run a batch inference job "
            "on them and print a summary in which every user is accounted for.",
        )
        demo.add_argument("--users", type=_positive_int, default=100_000, help="users (100000)")
        demo.add_argument(
            "--num-results", type=_positive_int, default=25, help="items per user (25)"
        )

    if only in (None, "plan"):
        plan = commands.add_parser(
            "plan",
            help="show how an input would be cut into jobs, and how long it would take",
            description="Read (or sample) the input and print the plan: records (exact, or "
            "estimated from size for large inputs, labelled as such), job shards, part files, "
            "bytes, waves at the quota and a time estimate, with the reason for the choice.",
        )
        _input_options(plan)
        _limit_options(plan)
        _aws_options(plan)
        plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    if only in (None, "prepare"):
        prepare = commands.add_parser(
            "prepare",
            help="validate, dedupe, shard and upload an ID list as batch job inputs",
            description="Stream the input, validate and dedupe it, cut it into job shards and "
            "upload them (SSE-KMS) under <job-input path>/<run>/shard-NNNNN/, recording every step "
            "in the run journal. Prints the run ID and where the shards went.",
        )
        _input_options(prepare)
        target = prepare.add_argument_group("where shards go (one of)")
        target.add_argument(
            "--job-input",
            metavar="VALUE",
            help="as for aws personalize create-batch-inference-job: "
            "'s3DataSource={path=s3://bucket/in/,kmsKeyArn=arn:aws:kms:…}', JSON, or file://",
        )
        target.add_argument("--local-dir", type=Path, help="write shards under DIR/<run>/ instead")
        prepare.add_argument(
            "--job-output", metavar="VALUE", help="checked only: it must not be under --job-input"
        )
        _run_options(prepare)
        _limit_options(prepare)
        prepare.add_argument(
            "--upload-concurrency",
            type=_positive_int,
            default=8,
            help="parts uploading at once (8)",
        )
        _aws_options(prepare)
        prepare.add_argument("--output", choices=["text", "json", "yaml"], default="text")

    if only in (None, "submit"):
        submit = commands.add_parser(
            "submit",
            help="create and track one batch inference job per shard of a prepared run",
            description="Create one batch inference job per shard of the run (finishing its "
            "preparation first if it was interrupted), at most --max-concurrent-jobs of the "
            "account's jobs at once, and poll until every job is ACTIVE or has failed. Job options "
            "are those of `aws personalize create-batch-inference-job`, with the same syntaxes; "
            "--job-input is known from the run, --job-name is the prefix of the jobs' names.",
        )
        submit.add_argument("run_id", metavar="RUN", help="the run ID printed by prepare")
        _job_options(submit)
        _submit_options(submit)
        _merge_options(submit, required=False)
        submit.add_argument("--state-dir", type=Path, help="where run state lives")
        _aws_options(submit)
        _text_or_json(submit)

    if only in (None, "resume"):
        resume = commands.add_parser(
            "resume",
            help="continue a run that stopped (crash, kill, reboot), on any machine",
            description="Replay the run's journal and continue: finish preparing (parts already "
            "uploaded are checked, not sent again), adopt jobs created just before a crash, track "
            "jobs until they are terminal. With --job-output, a run started on another machine is "
            "fetched from its S3 journal.",
        )
        resume.add_argument("run_id", metavar="RUN")
        resume.add_argument("--state-dir", type=Path, help="where run state lives")
        resume.add_argument(
            "--job-output", metavar="VALUE", help="the run's --job-output, to read its S3 journal"
        )
        resume.add_argument(
            "--ids",
            metavar="SRC",
            help="the run's input, if it moved or was stdin (checked against the journal)",
        )
        resume.add_argument("--poll-interval", type=_positive_float, help="seconds between polls")
        resume.add_argument("--job-timeout", type=_positive_float, help="seconds to wait per job")
        _aws_options(resume)
        _text_or_json(resume)

    if only in (None, "run"):
        run = commands.add_parser(
            "run",
            help="from an ID list to merged recommendations: prepare, submit and merge at once",
            description="Validate, dedupe and shard the IDs, upload them (SSE-KMS), run one batch "
            "inference job per shard under the account's quota, and merge every output into one "
            "reconciled result set, all stages at once. Takes every option of `aws personalize "
            "create-batch-inference-job` with the same names and syntaxes: --job-input and "
            "--job-output are the prefixes fanout writes under, --job-name the jobs' name prefix. "
            "Preflight checks run before anything is uploaded; the plan prints first.",
        )
        _input_options(run, job_fields=False, ids_required=False)
        _jobs_command(run, JOB_OPTIONS, "create-batch-inference-job")

    if only in (None, "segment"):
        segment = commands.add_parser(
            "segment",
            help="batch segment jobs: millions of items or attribute queries to merged segments",
            description="The same fan-out for batch segment jobs (Item-Affinity with --items, "
            "Item-Attribute-Affinity with --item-attributes): validate, shard within the segment "
            "limits (500 items or 10 queries per file), upload, submit under the segment-job "
            "quota, resume, merge one record per query with its users, reconcile. Takes every "
            "option of `aws personalize create-batch-segment-job`.",
        )
        source = segment.add_argument_group("input (one of)")
        chosen = source.add_mutually_exclusive_group()
        chosen.add_argument("--items", metavar="SRC", help="item IDs (Item-Affinity)")
        chosen.add_argument(
            "--item-attributes",
            metavar="SRC",
            help='attribute queries, e.g. ITEMS.GENRES = "Comedy" (Item-Attribute-Affinity)',
        )
        source.add_argument(
            "--format",
            choices=["auto", "text", "csv", "tsv", "jsonl", "parquet"],
            default="auto",
            help="input format (auto: by extension, else sniffed)",
        )
        source.add_argument("--id-column", help="the item or query column of CSV/TSV/Parquet")
        source.add_argument(
            "--keep-duplicates", action="store_true", help="send repeated items (default: remove)"
        )
        _jobs_command(segment, SEGMENT_JOB_OPTIONS, "create-batch-segment-job")

    if only in (None, "bench"):
        bench = commands.add_parser(
            "bench",
            help="measure each stage on a synthetic workload and project a big run",
            description="Run N synthetic users through the real pipeline (the emulator, started "
            "in-process, unless --endpoint-url or --profile point elsewhere: a real account costs "
            "money and needs --i-understand-this-costs-money and the job options) and print per "
            "stage records/s and MB/s, submit latency, job run time, merge rate, peak RSS and CPU, "
            "and how long --project users would take at the quota. The run is an ordinary run.",
        )
        bench.add_argument("--users", type=_positive_int, default=100_000, help="users (100000)")
        bench.add_argument("--id-length", type=_positive_int, default=12, help="ID length (12)")
        bench.add_argument("--num-results", type=_positive_int, default=25, help="items (25)")
        bench.add_argument(
            "--recipe",
            default="user-personalization",
            choices=["user-personalization", "user-personalization-v2", "popularity-count"],
            help="emulator recipe (user-personalization)",
        )
        bench.add_argument(
            "--project", type=_positive_int, default=50_000_000, help="users to project (50M)"
        )
        bench.add_argument("--i-understand-this-costs-money", action="store_true", dest="consent")
        for option in ("--solution-version-arn", "--role-arn", "--job-input", "--job-output"):
            bench.add_argument(option, help="for a real account")
        _run_options(bench)
        _limit_options(bench)
        bench.add_argument("--poll-interval", type=_positive_float, help="seconds between polls")
        _aws_options(bench)
        bench.add_argument("--output", choices=["text", "json"], default="text")

    if only in (None, "merge"):
        merge = commands.add_parser(
            "merge",
            help="merge a run's job outputs into one result file, with errors and missing IDs",
            description="Merge every shard's output (finishing whatever the run had left to do "
            "first) into one result file, and reconcile it with the input: every input line ends "
            "in exactly one of results, errors.jsonl, rejects, duplicates or missing.txt (in the "
            "run directory). Exit code 3 if some IDs errored or are missing.",
        )
        merge.add_argument("run_id", metavar="RUN", nargs="?", help="the run (or use --from)")
        merge.add_argument(
            "--from",
            dest="source",
            metavar="LOCATION",
            help="merge any batch outputs instead: a folder or s3://bucket/prefix/ of *.out files "
            "(no input to reconcile; errors and corrupt lines go beside the result)",
        )
        merge.add_argument(
            "--input-kind",
            choices=["userId", "itemId", "itemList", "itemAttributes"],
            help="with --from: the lines' key (default: from the first line)",
        )
        merge.add_argument("--state-dir", type=Path, help="where run state lives")
        _merge_options(merge, required=True)
        _aws_options(merge)
        _text_or_json(merge)

    if only in (None, "iam-policy"):
        iam = commands.add_parser(
            "iam-policy",
            help="print the least-privilege IAM, bucket and KMS key policies for a setup",
            description="Print, for these prefixes, role and keys: the caller's identity policy, "
            "the service role's permissions and trust policies (with confused-deputy conditions), "
            "the bucket policies and the KMS key policy statements. No AWS call is made.",
        )
        iam.add_argument("--job-input", required=True, metavar="VALUE", help="S3 path or shorthand")
        iam.add_argument(
            "--job-output", required=True, metavar="VALUE", help="S3 path or shorthand"
        )
        iam.add_argument("--role-arn", required=True)
        iam.add_argument("--kms-key-arn", action="append", default=[], help="repeatable")
        iam.add_argument("--region", help="default: the profile's or environment's region")
        iam.add_argument("--account-id", help="default: the role's account")
        iam.add_argument("--partition", help="default: the role ARN's partition")
        iam.add_argument("--tags", action="store_true", help="the caller tags jobs")
        iam.add_argument("--segments", action="store_true", help="batch segment jobs too")
        iam.add_argument("--solution-version-arn", action="append", default=[])
        iam.add_argument("--filter-arn", action="append", default=[])
        iam.add_argument("--ids", action="append", default=[], help="s3:// ID lists read by runs")
        iam.add_argument(
            "--out",
            action="append",
            default=[],
            metavar="S3_FOLDER",
            help="s3://…/ result datasets runs write (repeatable; a local --out needs nothing)",
        )
        iam.add_argument("--format", choices=["json", "text"], default="json")

    if only in (None, "report"):
        report = commands.add_parser(
            "report",
            help="draw a run as a timeline: a self-contained HTML page",
            description="Write a run's timeline (one row per shard: upload, queue wait, job "
            "states, merge; throughput over time) as one HTML file with inline SVG that needs no "
            "network, from the run's journal.",
        )
        report.add_argument("run_id", metavar="RUN")
        report.add_argument("--html", required=True, type=Path, metavar="FILE", help="the page")
        report.add_argument(
            "--overwrite", action="store_true", help="replace a FILE that is not a fanout report"
        )
        report.add_argument("--state-dir", type=Path, help="where run state lives")

    if only in (None, "retry"):
        retry = commands.add_parser(
            "retry",
            help="send a merged run's errored and missing IDs again, and merge them in",
            description="Collect the IDs in the run's errors.jsonl and missing.txt, run them as a "
            "run of their own (<run>-rN: same settings and job options, resumable), append their "
            "results to the run's result file, and replace errors.jsonl and missing.txt with what "
            "still failed. Exit code 3 if some still did.",
        )
        retry.add_argument("run_id", metavar="RUN")
        retry.add_argument("--state-dir", type=Path, help="where run state lives")
        retry.add_argument(
            "--allow-partial", action="store_true", help="exit 0 even if some IDs still failed"
        )
        retry.add_argument(
            "--role-arn",
            help="the service role for the retry's jobs, when the run's was wrong (default: the "
            "run's; checked in IAM first)",
        )
        retry.add_argument(
            "--missing-only",
            action="store_true",
            help="send only the missing IDs again (their jobs failed or timed out), not those the "
            "service answered with an error, which mostly come back the same (an item not in the "
            "training data); they stay in errors.jsonl",
        )
        retry.add_argument(
            "--poll-interval", type=_positive_float, help="seconds between polls (the run's)"
        )
        retry.add_argument(
            "--job-timeout", type=_positive_float, help="seconds to wait per job (the run's)"
        )
        _aws_options(retry)
        _text_or_json(retry)

    if only in (None, "status"):
        status = commands.add_parser(
            "status",
            help="show a run: shards, jobs by status, counts and times",
            description="Show what a run's journal says: its shards, their jobs by status, "
            "records and times. With --job-output, read the journal mirrored on S3 (a run started "
            "elsewhere). No job is created or changed.",
        )
        status.add_argument("run_id", metavar="RUN")
        status.add_argument("--state-dir", type=Path, help="where run state lives")
        status.add_argument(
            "--job-output", metavar="VALUE", help="the run's --job-output, to read its S3 journal"
        )
        _aws_options(status)
        status.add_argument("--output", choices=["text", "json", "yaml"], default="text")
    return parser


# The options of `aws personalize create-batch-inference-job` (tests check them against the
# botocore model), and their member names. `--job-name` is the prefix of fanout's job names.
JOB_OPTIONS = {
    "--job-name": "jobName",
    "--solution-version-arn": "solutionVersionArn",
    "--filter-arn": "filterArn",
    "--num-results": "numResults",
    "--job-input": "jobInput",
    "--job-output": "jobOutput",
    "--role-arn": "roleArn",
    "--batch-inference-job-config": "batchInferenceJobConfig",
    "--tags": "tags",
    "--batch-inference-job-mode": "batchInferenceJobMode",
    "--theme-generation-config": "themeGenerationConfig",
}


# create-batch-segment-job has the same options but the three about inference modes.
SEGMENT_JOB_OPTIONS = {
    option: member
    for option, member in JOB_OPTIONS.items()
    if member not in {"batchInferenceJobConfig", "batchInferenceJobMode", "themeGenerationConfig"}
}


def _job_options(
    parser: argparse.ArgumentParser,
    options: dict[str, str] = JOB_OPTIONS,
    command: str = "create-batch-inference-job",
) -> None:
    group = parser.add_argument_group(f"job options (as for aws personalize {command})")
    for option, member in options.items():
        if member == "tags":
            group.add_argument(option, nargs="+", metavar="TAG", dest=member)
        else:
            group.add_argument(option, metavar="VALUE", dest=member)
    group.add_argument("--cli-input-json", metavar="JSON", help="JSON or file://PATH")
    group.add_argument("--cli-input-yaml", metavar="YAML", help="YAML or file://PATH")


def _merge_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("results")
    add = group.add_argument
    add(
        "--out",
        required=required,
        metavar="PATH",
        help="the result file, in the format its name says: .jsonl, .csv or .parquet (.gz for "
        "text), or --out-format" + ("" if required else "; merged as each job turns ACTIVE"),
    )
    add(
        "--out-format",
        choices=["jsonl", "csv", "parquet"],
        help="the result format, if not from --out's name",
    )
    add("--overwrite", action="store_true", help="replace an existing result file")
    add("--raw", action="store_true", help="JSON lines as the service wrote them")
    add("--separator", default="|", help="joins lists in CSV (|)")
    add(
        "--order",
        choices=["completion", "input"],
        default="completion",
        help="row order: as jobs finish (completion, the default, fastest) or the input's "
        "(input: results wait on disk beside --out for every earlier shard)",
    )
    add(
        "--allow-partial",
        action="store_true",
        help="exit 0 even if some IDs errored or are missing (they are listed either way)",
    )


def _merge_settings(args: argparse.Namespace) -> Any:
    if not args.out:
        return None
    from .pipeline import MergeSettings

    return MergeSettings(
        out=args.out,
        fmt=args.out_format,
        overwrite=args.overwrite,
        raw=args.raw,
        separator=args.separator,
        order=args.order,
    )


def _submit_options(parser: argparse.ArgumentParser, *, quota: bool = True) -> None:
    group = parser.add_argument_group("submission")
    add = group.add_argument
    if quota:  # `fanout run` has it among the limits: the planner fills the same quota
        add(
            "--max-concurrent-jobs",
            type=_positive_int,
            default=5,
            help="the account's batch inference jobs in progress at once, everybody's (5)",
        )
    add("--tps", type=_positive_float, default=2.0, help="Personalize calls per second (2)")
    add(
        "--job-retries",
        type=_non_negative_int,
        default=2,
        help="new attempts for a job that fails for a transient reason (2)",
    )
    add(
        "--poll-interval",
        type=_positive_float,
        help="seconds between polls (60; 1 when the endpoint is on loopback: the emulator)",
    )
    add("--job-timeout", type=_positive_float, help="stop waiting for a job after this many s")


def _input_options(
    parser: argparse.ArgumentParser, *, job_fields: bool = True, ids_required: bool = True
) -> None:
    """The input options; `job_fields=False` leaves out the two that `fanout run` takes as job
    options (--solution-version-arn, --batch-inference-job-mode)."""
    from .records import MAX_ITEM_LIST

    group = parser.add_argument_group("input")
    add = group.add_argument
    add(
        "--ids",
        required=ids_required,
        metavar="SRC",
        help="a file, a directory or s3://bucket/prefix/ (every file under it but _ and . names),"
        " s3://bucket/key, or - for stdin",
    )
    add(
        "--format",
        choices=["auto", "text", "csv", "tsv", "jsonl", "parquet"],
        default="auto",
        help="input format (auto: by extension, else sniffed); gzip is detected by content",
    )
    add("--id-column", help="the ID column of CSV/TSV/Parquet input")
    add(
        "--input-kind",
        choices=["userId", "itemId", "itemList", "itemAttributes"],
        help="line shape; default: from --solution-version-arn's recipe, else userId",
    )
    if job_fields:
        add("--solution-version-arn", help="the solution version the jobs will use")
    add(
        "--filter-values",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="filter placeholder values added to every line (repeatable; per-line "
        "filterValues in JSON-lines input win); a JSON list is accepted: NAME='[\"a,b\"]'",
    )
    add("--keep-duplicates", action="store_true", help="send repeated IDs (default: remove)")
    add(
        "--max-item-list",
        type=_positive_int,
        default=MAX_ITEM_LIST,
        metavar="N",
        help=f"personalized ranking: a line whose itemList has more than N items is rejected "
        f"({MAX_ITEM_LIST}: real-time ranking's limit; batch's is undocumented)",
    )
    if job_fields:
        add(
            "--batch-inference-job-mode",
            choices=["BATCH_INFERENCE", "THEME_GENERATION"],
            default="BATCH_INFERENCE",
            help="THEME_GENERATION limits files to 100 records",
        )


def _limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (service defaults)")
    add = group.add_argument
    add("--max-job-bytes", type=_size, default=1_000_000_000, help="input bytes per job (1GB)")
    add("--max-job-files", type=_positive_int, default=1000, help="files per job (1000)")
    add(
        "--max-file-records",
        type=_positive_int,
        default=50_000_000,
        help="records per file (50000000)",
    )
    add("--part-bytes", type=_size, default=16 * 1024 * 1024, help="part file size (16MiB)")
    add(
        "--max-concurrent-jobs",
        type=_positive_int,
        default=5,
        help="the account's batch job quota the plan fills (5)",
    )
    add("--job-overhead-minutes", type=float, default=20.0, help="fixed minutes per job (20)")
    add(
        "--records-per-minute",
        type=float,
        default=250_000.0,
        help="assumed per-job throughput for the time estimate (250000)",
    )


def _limits(args: argparse.Namespace) -> tuple[Any, Any]:
    """The `Limits` and `Timing` that `_limit_options` asked for (pydantic validates them)."""
    from .config import Limits, Timing

    limits = Limits(
        max_job_bytes=args.max_job_bytes,
        max_job_files=args.max_job_files,
        max_file_records=args.max_file_records,
        part_bytes=args.part_bytes,
        max_concurrent_jobs=args.max_concurrent_jobs,
    )
    timing = Timing(
        job_overhead_minutes=args.job_overhead_minutes,
        records_per_minute=args.records_per_minute,
    )
    return limits, timing


def _given_run_id(text: str) -> str:
    """--run-id's value: an empty one (a script's unset $RUN) is refused, not replaced by a new
    ID each time."""
    if not text:
        raise argparse.ArgumentTypeError(
            "empty: give 1 to 32 letters, digits or -, or leave --run-id out for a new ID"
        )
    return text


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id", type=_given_run_id, help="name the run (default: a new timestamped ID)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where run state lives (default ${XDG_STATE_HOME:-~/.local/state}/fanout/runs)",
    )


def _aws_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS (as for the AWS CLI)")
    add = group.add_argument
    add("--region")
    add("--profile")
    add("--endpoint-url", help="Personalize endpoint (default: AWS_ENDPOINT_URL_PERSONALIZE)")
    add("--s3-endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)")
    add("--no-verify-ssl", action="store_true", help="do not verify TLS certificates (unsafe)")
    add("--ca-bundle", help="CA bundle for TLS verification")
    add("--cli-read-timeout", type=float, default=60.0)
    add("--cli-connect-timeout", type=float, default=60.0)
    add("--no-sign-request", action="store_true", help="do not sign requests (public buckets)")
    add("--debug", action="store_true", help="log every AWS request and response to stderr")


def _text_or_json(parser: argparse.ArgumentParser) -> None:
    """--output for the summary and --log-format for progress, on the commands that run jobs."""
    parser.add_argument("--output", choices=["text", "json", "yaml"], default="text")
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="progress on stderr (json: one event a line)"
    )


def _jobs_command(parser: argparse.ArgumentParser, options: dict[str, str], command: str) -> None:
    """What `fanout run` and `fanout segment` share after their input options."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML mapping of option names (without --) to values; the command line wins",
    )
    _job_options(parser, options, command)
    parser.add_argument(
        "--generate-cli-skeleton",
        nargs="?",
        const="input",
        choices=["input", "yaml-input", "output"],
        help="print a skeleton for --cli-input-json/--cli-input-yaml, as the AWS CLI does",
    )
    _merge_options(parser, required=False)
    _run_options(parser)
    _limit_options(parser)
    _submit_options(parser, quota=False)
    parser.add_argument(
        "--upload-concurrency", type=_positive_int, default=8, help="parts uploading at once (8)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="stop after the plan and the preflight checks"
    )
    _aws_options(parser)
    _cli_output_options(parser)


def _cli_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output (as for the AWS CLI)")
    add = group.add_argument
    add("--output", choices=["text", "json", "yaml"], default="text", help="the summary's form")
    add("--query", help="JMESPath applied to the summary (as with the AWS CLI)")
    add("--color", choices=["on", "off", "auto"], default="auto", help="accepted; no colors")
    add("--no-cli-pager", action="store_true", help="accepted; fanout never pages")
    add(
        "--log-format",
        choices=["text", "json"],
        help="progress on stderr: text lines, or one JSON event per line (default: json when "
        "stderr is not a terminal)",
    )


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def _size(text: str) -> int:
    """A byte count: 1000000000, 1GB, 32MiB, 1.5G."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes or a unit (KB, MB, GB, KiB, MiB, GiB)"
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least one byte")
    return value


def _emulator_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (127.0.0.1; loopback is the safe one)")
    add("--s3-port", type=int, default=0, help="S3/KMS/IAM/STS port (0 = a free port)")
    add("--personalize-port", type=int, default=0, help="Personalize port (0 = a free port)")
    add("--region", default="us-east-1", help="the region of every ARN and of S3 (us-east-1)")
    add("--bucket", default="fanout-emulator", help="the bucket to create (fanout-emulator)")
    add("--quota", type=_positive_int, default=5, help="non-terminal batch inference jobs (5)")
    add("--segment-quota", type=_positive_int, default=5, help="non-terminal segment jobs (5)")
    add("--job-seconds", type=float, default=0.5, help="minimum seconds in each job state (0.5)")
    add(
        "--seconds-per-million-records",
        type=float,
        default=0.0,
        help="extra job time per million input records (0)",
    )
    add("--interactions", type=Path, help="train on this CSV (USER_ID,ITEM_ID,TIMESTAMP)")
    add("--items", type=Path, help="item metadata CSV (ITEM_ID + attribute columns)")
    add("--seed", type=int, default=0, help="seeds data, model, shuffles and faults (0)")
    add("--synthetic-users", type=_positive_int, default=20_000, help="synthetic users (20000)")
    add("--synthetic-items", type=_positive_int, default=1_000, help="synthetic items (1000)")
    add("--throttle-rate", type=float, default=0.0, help="fraction of calls throttled (0)")
    add("--fail-rate", type=float, default=0.0, help="fraction of jobs that fail (0)")
    add("--info-file", type=Path, help="write the endpoints and seeded ARNs here as JSON")
    add(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other emulator setting (see docs/emulator.md), e.g. --set output_naming=relative",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # argparse would say "invalid _positive_int value"
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _emulator_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from .emulator import EmulatorSettings

    values: dict[str, Any] = {
        "host": args.host,
        "s3_port": args.s3_port,
        "personalize_port": args.personalize_port,
        "region": args.region,
        "bucket": args.bucket,
        "quota": args.quota,
        "segment_quota": args.segment_quota,
        "job_seconds": args.job_seconds,
        "seconds_per_million_records": args.seconds_per_million_records,
        "interactions": args.interactions,
        "items": args.items,
        "seed": args.seed,
        "synthetic_users": args.synthetic_users,
        "synthetic_items": args.synthetic_items,
        "throttle_rate": args.throttle_rate,
        "fail_rate": args.fail_rate,
    }
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set takes NAME=VALUE, got {item!r}")
        if name not in EmulatorSettings.model_fields:
            known = ", ".join(sorted(EmulatorSettings.model_fields))
            raise ConfigError(f"--set {name}: no such emulator setting; known settings: {known}")
        values[name] = value
    try:
        return EmulatorSettings.model_validate(values)
    except ValidationError as exc:
        from .config import model_errors

        raise ConfigError(f"invalid emulator settings: {model_errors(exc)}") from None


def _run_emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    settings = _emulator_settings(args)
    for path in (settings.interactions, settings.items):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path}: no such file")
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        print(
            f"fanout emulator: WARNING: binding to {settings.host}, not loopback: anyone who can "
            "reach this address can use the emulator. It has no authentication.",
            file=sys.stderr,
        )
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    if args.info_file is not None:  # a stale one would send a waiting script to dead ports
        args.info_file.unlink(missing_ok=True)
    emulator = Emulator(settings)
    try:
        info = emulator.start()
    except ValueError as exc:  # a bad interactions/items file
        raise ConfigError(str(exc)) from None
    try:
        for name, value in info.environment().items():
            print(f"export {name}={value}")
        for name, value in info.seed_variables().items():
            print(f"export {name}={value}")
        sys.stdout.flush()
        if args.info_file is not None:
            tmp = args.info_file.with_name(args.info_file.name + ".tmp")
            tmp.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
            os.replace(tmp, args.info_file)
        print(
            f"fanout emulator: listening on {settings.host} "
            f"(S3 {info.s3_endpoint}, Personalize {info.personalize_endpoint}); "
            "Ctrl-C or SIGTERM stops it",
            file=sys.stderr,
        )
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        if args.info_file is not None:
            args.info_file.unlink(missing_ok=True)
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(users=args.users, num_results=args.num_results)


# -- plan and prepare ------------------------------------------------------------------------------


def _filter_values(items: Sequence[str]) -> dict[str, list[str]]:
    from ._encode import FILTER_NAME, MAX_FILTER_VALUES, filter_value_problem

    values: dict[str, list[str]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not FILTER_NAME.fullmatch(name):
            raise ConfigError(
                f"--filter-values {item!r}: use NAME=V1,V2 where NAME is the placeholder "
                "without $ (1 to 50 letters, digits or _)"
            )
        if raw.lstrip().startswith("["):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--filter-values {name}: bad JSON list: {exc}") from None
            if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
                raise ConfigError(f"--filter-values {name}: the JSON must be a list of strings")
            found = parsed
        else:
            if "\\" in raw:
                raise ConfigError(
                    f"--filter-values {item!r}: NAME=V1,V2 takes no backslash (it would not "
                    "escape a comma); give values with commas, backslashes or spaces at their "
                    f"ends as a JSON list: {name}='[\"a,b\"]'"
                )
            # "comedy, drama" means "drama": a space after a comma is not part of a value
            # (a JSON list keeps every character).
            found = [value.strip() for value in raw.split(",")]
        if not found or any(not v for v in found):
            raise ConfigError(f"--filter-values {name}: empty value in {raw!r}")
        if name in values:
            raise ConfigError(
                f"--filter-values {name} is given twice ({','.join(values[name])} and {raw}): "
                f"give every value once, e.g. {name}={','.join([*values[name], *found])}"
            )
        values[name] = found
    for name, found in values.items():
        why = filter_value_problem(name, ",".join(json.dumps(v) for v in found), None)
        if why is not None:
            raise ConfigError(f"--filter-values {name}: {why}")
    if len(values) > MAX_FILTER_VALUES:
        raise ConfigError(
            f"--filter-values gives {len(values)} names; the service takes at most "
            f"{MAX_FILTER_VALUES} on a line"
        )
    return values


def _aws_settings(args: argparse.Namespace) -> Any:
    from .aws import AwsOptions

    if args.no_verify_ssl:
        print(
            "fanout: WARNING: --no-verify-ssl: TLS certificates are not verified; anyone on the "
            "network path can read and change what fanout sends, credentials included.",
            file=sys.stderr,
        )
    return AwsOptions(
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        s3_endpoint_url=args.s3_endpoint_url,
        verify_ssl=not args.no_verify_ssl,
        ca_bundle=args.ca_bundle,
        connect_timeout=args.cli_connect_timeout,
        read_timeout=args.cli_read_timeout,
        sign=not args.no_sign_request,
        max_pool_connections=max(32, 2 * getattr(args, "upload_concurrency", 8)),
    )


def _warn(message: str) -> None:
    """What the AWS clients say while a command waits on them (a request sent again)."""
    print(f"fanout: {message}", file=sys.stderr, flush=True)


def _aws(args: argparse.Namespace) -> Any:
    """The command's AWS clients (`aws.Aws`, to open with `async with`), saying what they wait
    on."""
    from .aws import Aws

    return Aws(_aws_settings(args), _warn)


def _needs_aws(args: argparse.Namespace) -> bool:
    return bool(
        args.ids.startswith("s3://")
        or getattr(args, "job_input", None)
        or args.solution_version_arn  # its recipe decides, or checks, the input kind
    )


def _job_option(member: str, text: str) -> Any:
    """An option of create-batch-inference-job in any AWS CLI syntax (loads botocore's model)."""
    from .awsargs import OperationArgs

    return OperationArgs.for_operation("CreateBatchInferenceJob").parse_value(member, text)


def _prepare_settings(
    args: argparse.Namespace, kind: Any, run_id: str, request: dict[str, Any] | None = None
) -> Any:
    """Every setting of plan/prepare, validated; `kind` None means "resolve it later".

    `request` (for `fanout run`) gives jobInput and jobOutput, already parsed."""
    from pydantic import ValidationError

    from .config import JobInput, JobOutput, UploadSettings
    from .pipeline import PrepareSettings
    from .records import MAX_ITEM_LIST, InputKind
    from .source import SourceOptions

    try:
        job_input = job_output = None
        if request is not None:
            job_input = JobInput.model_validate(request["jobInput"]).s3_data_source
            job_output = JobOutput.model_validate(request["jobOutput"]).s3_data_destination
        elif getattr(args, "job_input", None):
            job_input = JobInput.model_validate(
                _job_option("jobInput", args.job_input)
            ).s3_data_source
        if getattr(args, "job_output", None):
            job_output = JobOutput.model_validate(
                _job_option("jobOutput", args.job_output)
            ).s3_data_destination
        limits, timing = _limits(args)
        upload = UploadSettings(concurrency=getattr(args, "upload_concurrency", 8))
    except ValidationError as exc:
        from .config import model_errors

        raise ConfigError(model_errors(exc)) from None
    return PrepareSettings(
        ids=args.ids,
        run_id=run_id,
        state_dir=_state_dir(args),
        job_input=job_input,
        job_output=job_output,
        local_dir=getattr(args, "local_dir", None),
        source=SourceOptions(
            format=args.format,
            id_column=args.id_column,
            kind=kind or InputKind.USER,
            dedupe=not args.keep_duplicates,
            filter_values=_filter_values(args.filter_values),
            max_item_list=getattr(args, "max_item_list", MAX_ITEM_LIST),  # not for segments
        ),
        limits=limits,
        timing=timing,
        upload=upload,
        theme_generation=args.batch_inference_job_mode == "THEME_GENERATION",
    )


async def _input_kind(args: argparse.Namespace, aws: Any) -> Any:
    """The input kind of plan/prepare: `--input-kind`, checked against the recipe of
    `--solution-version-arn` when one is given (which otherwise decides it), and against
    `--batch-inference-job-mode THEME_GENERATION` (themes are for Similar-Items: itemId)."""
    from .records import InputKind

    given = InputKind(args.input_kind) if args.input_kind else None
    mode = getattr(args, "batch_inference_job_mode", None)
    if not args.solution_version_arn:
        kind = given or InputKind.USER
        if mode == "THEME_GENERATION" and kind is not InputKind.ITEM:
            raise ConfigError(
                "THEME_GENERATION jobs take itemId lines (Similar-Items): give --input-kind "
                "itemId, or the solution version with --solution-version-arn"
            )
        return kind
    from .aws import describe_solution_version
    from .preflight import check_recipe

    info = await describe_solution_version(aws.personalize, args.solution_version_arn)
    return check_recipe(info, given, mode)


def _print_plan(plan: Any, ids: str) -> None:
    """The plan as rows; `ids` is the `--ids` it was made for."""
    from .plan import Plan

    assert isinstance(plan, Plan)
    label = "exact" if plan.exact else "estimated"
    parts = f"{plan.parts} of ≤ {plan.part_bytes:,} bytes"
    if plan.file_records:
        parts += f" and ≤ {plan.file_records:,} records (the limit per file of these jobs)"
    elif plan.records and plan.nbytes > plan.part_bytes * plan.records:
        parts += " (one record each: a record is larger)"
    per_shard = min(plan.shard_bytes, -(-plan.nbytes // max(plan.shards, 1)))
    rows = [
        ("records", f"{plan.records:,} ({label}: {plan.estimate_how})"),
        ("bytes", f"{plan.nbytes:,}"),
        ("job shards", f"{plan.shards} (minimum the limits allow: {plan.minimum_shards})"),
        ("bytes per shard", f"about {per_shard:,}"),
        ("part files", parts),
        ("quota", f"{plan.quota} concurrent jobs"),
        ("waves", str(plan.waves)),
        ("time estimate", f"{plan.minutes:.0f} min"),
        ("why", plan.reason),
    ]
    if plan.records == 0:  # size unknown (stdin), or counted and empty: the rest says nothing
        rows = [("records", rows[0][1] if plan.exact else plan.estimate_how), ("why", plan.reason)]
    if plan.skipped:
        rows.append(("left out", _left_out(plan.skipped, ids)))
    _print_rows(rows)


def _left_out(skipped: Sequence[str], ids: str) -> str:
    """The objects under the S3 input prefix (or the files under the input folder) `ids` that
    are not read, named (the first few)."""
    shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    where = (
        "object(s) under the input prefix"
        if ids.startswith("s3://")
        else ("file(s) under the input folder")
    )
    return (
        f"{len(skipped)} {where} whose path has a name starting with _ or . (markers and "
        f"leftovers of Spark, Hadoop, Databricks): {shown}"
    )


async def _resolved(args: argparse.Namespace, settings: Any, action: Any) -> Any:
    """`await action(settings, aws)` with the input kind resolved; `aws` is None unless needed.

    AWS is opened only when an option needs it (S3 input or output, a solution version to
    describe), so local runs never import the AWS SDK.
    """

    async def run(aws: Any) -> Any:
        source = dataclasses.replace(settings.source, kind=await _input_kind(args, aws))
        return await action(dataclasses.replace(settings, source=source), aws)

    if not _needs_aws(args):
        return await run(None)

    async with _aws(args) as aws:
        return await run(aws)


def _shown(value: object) -> object:
    """A summary's value as text shows it: a mapping as `key n, key n` (not a Python dict)."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {count}" for key, count in value.items()) or "none"
    return value


def _print_rows(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _run_plan(args: argparse.Namespace) -> int:
    with _importing():
        from .pipeline import new_run_id, plan_input

    async def plan(settings: Any, aws: Any) -> Any:
        # stdin or a pipe is read to its end: a plan is all it is read for
        return await plan_input(args.ids, aws.s3 if aws else None, settings, whole=True)

    settings = _prepare_settings(args, None, new_run_id())
    result = _arun(_resolved, args, settings, plan)
    if args.json:
        print(json.dumps(_plan_json(result), indent=2))
    else:
        _print_plan(result, args.ids)
    if result.exact and not result.records:  # as prepare and run end on it: a failure
        print("fanout: the input holds no ID to send: a run of it would fail", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _plan_json(plan: Any) -> dict[str, Any]:
    """`fanout plan --json`: the plan, with null for what an input of unknown size (stdin, a
    pipe) leaves unknown, not 0."""
    found: dict[str, Any] = plan.to_dict()
    if not plan.records and not plan.exact:
        unknown = ("records", "nbytes", "shards", "parts", "waves", "minutes", "minimum_shards")
        found.update(dict.fromkeys(unknown))
    return found


@contextlib.contextmanager
def _memory_ahead(args: argparse.Namespace) -> Iterator[None]:
    """The encoder's output buffers and (unless --keep-duplicates) the dedupe table for a local
    input file, faulted in on the idle core while the pipeline is imported (see `_ahead`); let
    go at the end if the run did not take them. Nothing for --dry-run."""
    if not args.ids or getattr(args, "dry_run", False):
        yield
        return
    from . import _ahead

    _ahead.prefault_for(args.ids, table=not args.keep_duplicates)
    try:
        yield
    finally:
        _ahead.discard()


@contextlib.contextmanager
def _importing() -> Iterator[None]:
    """The cyclic garbage collector paused while a command imports what it needs, and what the
    imports made frozen (`gc.freeze`) after: imports make ~100k objects and no garbage. The
    collector's ~100 passes over them took 20 ms of the start of a prepare (0.43 → 0.41 s median
    for a tiny input, ten runs each); unfrozen, its first two passes after the imports still
    went over all of them, 11 ms each, just as a 10M-ID prepare's pipeline started. `main` gives
    them back to the collector when the command ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _run_prepare(args: argparse.Namespace) -> int:
    with _memory_ahead(args):
        with _importing():
            from .pipeline import new_run_id, prepare

        if bool(args.job_input) == bool(args.local_dir):
            raise ConfigError("give exactly one of --job-input (upload to S3) and --local-dir")
        args.run_id = args.run_id or new_run_id()  # an interruption names it
        settings = _prepare_settings(args, None, args.run_id)
        result = _arun(_resolved, args, settings, prepare)
    summary = result.summary()
    if args.output != "text":
        _print_data(summary, args.output, None)
    else:
        _print_plan(result.plan, args.ids)
        print()
        _print_rows([(name, _shown(value)) for name, value in summary.items()])
    if not summary["records"]:  # for a nightly job, an empty export is a failure (as for run)
        print(
            f"fanout: the input held no ID to send ({summary['lines']:,} lines: "
            f"{summary['blank']:,} blank, {summary['rejected']:,} rejected (rejects.jsonl), "
            f"{summary['duplicates']:,} duplicates): no shard was written",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


# -- submit, resume, status ------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace) -> Path:
    """--state-dir (or the default), refused if it is something other than a folder."""
    from .config import default_state_dir

    where: Path = getattr(args, "state_dir", None) or default_state_dir()
    if where.exists() and not where.is_dir():
        raise ConfigError(f"--state-dir {where} is a file, not a folder: give a folder for runs")
    return where


def _run_dir(args: argparse.Namespace) -> Path:
    from .config import check_run_id

    return _state_dir(args) / check_run_id(args.run_id)


def _job_request(
    args: argparse.Namespace,
    name: str = "CreateBatchInferenceJob",
    options: dict[str, str] = JOB_OPTIONS,
) -> dict[str, Any]:
    """The create-batch-*-job parameters from the options, as the AWS CLI reads them."""
    from .awsargs import OperationArgs

    operation = OperationArgs.for_operation(name)
    if args.cli_input_json and args.cli_input_yaml:
        raise ConfigError("give only one of --cli-input-json and --cli-input-yaml")
    cli_input: dict[str, Any] = {}
    if args.cli_input_json:
        cli_input = operation.load_cli_input(args.cli_input_json)
    elif args.cli_input_yaml:
        cli_input = operation.load_cli_input(args.cli_input_yaml, yaml=True)
    explicit: dict[str, Any] = {}
    for member in options.values():
        value = getattr(args, member)
        if value is None:
            continue
        if member == "tags":
            explicit[member] = operation.parse_list_value(member, value)
        else:
            explicit[member] = operation.parse_value(member, value)
    return operation.merge(cli_input, explicit)


def _poll_interval(args: argparse.Namespace, given: float | None) -> float:
    """60 s against AWS; 1 s against an endpoint on loopback (the emulator)."""
    if given is not None:
        return given
    from urllib.parse import urlsplit

    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_PERSONALIZE") or ""
    host = urlsplit(endpoint).hostname or ""
    return 1.0 if host in {"127.0.0.1", "localhost", "::1"} else 60.0


def _report(message: str) -> None:
    print(f"fanout: {message}", file=sys.stderr, flush=True)


def _json_report(message: str) -> None:
    import time

    event = {"t": round(time.time(), 3), "level": "info", "message": message}
    print(json.dumps(event, ensure_ascii=False), file=sys.stderr, flush=True)


def _reporter(args: argparse.Namespace) -> Any:
    """Progress lines for people on a terminal; JSON events for schedulers and log shippers."""
    chosen = getattr(args, "log_format", None)
    if chosen is None:
        chosen = "text" if sys.stderr.isatty() else "json"
    return _json_report if chosen == "json" and hasattr(args, "log_format") else _report


def _live(args: argparse.Namespace) -> Any:
    """A live status line when stderr is a terminal and text logs were asked for (or implied)."""
    if getattr(args, "log_format", None) == "json" or not sys.stderr.isatty():
        return None
    from .progress import Progress

    return Progress()


def outcome_summary(outcome: Any) -> dict[str, Any]:
    """The end-of-run summary as data (what --output json prints)."""
    from .pipeline import RunOutcome

    assert isinstance(outcome, RunOutcome)
    submitted = outcome.submitted
    summary: dict[str, Any] = {"run_id": outcome.run_id, "run_dir": str(outcome.run_dir)}
    if submitted is not None:
        summary.update(
            active=len(submitted.active),
            failed={str(k): v for k, v in submitted.failed.items()},
            timed_out={str(k): v for k, v in submitted.timed_out.items()},
            jobs={str(k): v for k, v in submitted.active.items()},
        )
    if outcome.merged is not None:
        summary["result"] = outcome.result
        summary["reconciliation"] = dataclasses.asdict(outcome.merged)
        reports = outcome.reports_dir or outcome.run_dir
        summary["errors_file"] = str(reports / "errors.jsonl")
        summary["missing_file"] = str(reports / "missing.txt")
        if outcome.retries:
            summary["retries"] = list(outcome.retries)
        if outcome.kept_errors:  # --missing-only: in errors.jsonl, not sent again
            summary["kept_errors"] = outcome.kept_errors
    if (counts := _input_counts(outcome)) is not None:
        summary["input"] = counts
    summary["seconds"] = round(outcome.seconds, 3)
    return summary


def _input_counts(outcome: Any) -> dict[str, Any] | None:
    """What prepare made of the run's input lines, with where the lines not sent are listed;
    None before the run is prepared."""
    from .journal import JOURNAL_NAME, read_events
    from .state import RunState

    run_dir = outcome.run_dir
    counted = outcome.state.input_lines()
    if counted is None and (run_dir / JOURNAL_NAME).exists():  # prepared by this process
        counted = RunState.replay(read_events(run_dir)).input_lines()
    if counted is None:
        return None
    files = {
        "rejects_file": str(run_dir / "rejects.jsonl"),
        "duplicates_file": str(run_dir / "duplicates.txt"),
    }
    return {**counted, **files}


def _may_carry_filter_values(ids: str, fmt: str) -> bool:
    """Whether the input's lines may carry their own filterValues: JSON lines, or a format
    only its content will tell (stdin, S3, a name without a known extension)."""
    from ._formats import _declared_format

    name = "" if ids == "-" or ids.endswith("/") else ids.rsplit("/", 1)[-1]
    return _declared_format(name, fmt) in (None, "jsonl")


def _has_journal(args: argparse.Namespace, run: str) -> bool:
    """Whether run `run` has a journal to resume from (its directory may not be readable)."""
    from .journal import JOURNAL_NAME

    try:
        return (_state_dir(args) / run / JOURNAL_NAME).is_file()
    except (OSError, FanoutError):
        return False


# The commands whose work a run journal holds, for `fanout resume` to continue.
_RESUMABLE = frozenset({"prepare", "submit", "resume", "run", "segment"})


def _begun(args: argparse.Namespace, run: str) -> bool:
    """Whether run `run` has begun: its journal holds an event (before, nothing was uploaded)."""
    from .journal import JOURNAL_NAME

    try:
        return (_state_dir(args) / run / JOURNAL_NAME).stat().st_size > 0
    except (OSError, FanoutError):
        return False


def _how_to_go_on(args: argparse.Namespace) -> str:
    """What to add to "interrupted": how the command's work goes on, if it began. A merge is
    run again (a resume would finish the run's last merge, which may not be this one); a
    retry is finished as `fanout status` says; a run, prepare, submit or segment resumes once
    its journal has its first event (before, nothing was uploaded: the command is run again)."""
    run = getattr(args, "run_id", None)
    if not run:
        return ""
    if args.command == "merge":
        return f"; run the same `fanout merge {run} …` again to write its results"
    if args.command == "retry":
        return f"; `fanout status {run}` says how to finish the retry"
    if args.command not in _RESUMABLE:
        return ""
    if not _begun(args, run):
        return f"; run {run} had not begun (nothing was uploaded): run the command again"
    return f"; every finished step is in the run journal: `fanout resume {run}` continues"


def _say_how_to_resume(args: argparse.Namespace) -> None:
    """After an upload or a local write failed: how the run goes on, if it began."""
    run = getattr(args, "run_id", None)
    if args.command in _RESUMABLE and run and _begun(args, run):
        print(
            f"fanout: every finished step is in the run journal: once the cause is fixed, "
            f"`fanout resume {run}` continues",
            file=sys.stderr,
        )


def _say_running_jobs(args: argparse.Namespace) -> None:
    """After a run stopped on an error: the jobs it created that still run, if any. Personalize
    cannot stop a batch job, so they run (and cost) to the end whatever fanout does next."""
    run = getattr(args, "run_id", None)
    if not run or not _has_journal(args, run):
        return
    from .journal import read_events
    from .state import RunState

    try:
        state = RunState.replay(read_events(_state_dir(args) / run))
    except (OSError, FanoutError):
        return
    running = [
        job.name
        for shard in sorted(state.jobs)
        if (job := state.job(shard)) is not None and not job.status.terminal
    ]
    if running:
        names = ", ".join(running[:3]) + (f" and {len(running) - 3} more" if running[3:] else "")
        print(
            f"fanout: {len(running)} job(s) of run {run} still run ({names}): a batch job cannot "
            f"be stopped. `fanout resume {run}` waits for them and merges their results once "
            f"the cause is fixed; `fanout status {run}` lists them",
            file=sys.stderr,
        )


def _check_query(query: str | None) -> None:
    """A --query that is not JMESPath is refused before the command runs, not after it."""
    if query:
        import jmespath

        try:
            jmespath.compile(query)
        except jmespath.exceptions.JMESPathError as exc:
            raise ConfigError(f"--query {query!r}: {exc}") from None


def _print_data(data: Any, output: str, query: str | None) -> None:
    """Print `data` as the AWS CLI would with --output json|yaml and --query."""
    if query:
        import jmespath

        try:
            data = jmespath.search(query, data)
        except jmespath.exceptions.JMESPathError as exc:
            raise ConfigError(f"--query {query!r}: {exc}") from None
    if output == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    elif output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif query:
        if text := _as_text(data):  # the AWS CLI prints nothing for an empty result
            print(text)
    else:
        print(data)


def _as_text(data: Any) -> str:
    """A --query result as the AWS CLI's `--output text` prints it (its `awscli.text` rules):
    a scalar on a line of its own (None, True as Python writes them); a list of scalars on one
    line, tab-separated, or inside an object one line each after the key in capitals; an object
    as one line of its scalar values in key order (after its key in capitals when nested), then
    each nested value by the same rules under its own key; a list of objects as a line each,
    with the columns every object's scalar keys give. Nothing for an empty list or object."""
    lines: list[str] = []

    def nested(value: Any) -> bool:
        return isinstance(value, dict | list)

    def scalars(values: list[Any], key: str | None) -> None:
        if key is None:
            lines.append("\t".join(map(str, values)))
        else:
            lines.extend(f"{key.upper()}\t{value}" for value in values)

    def put(item: Any, key: str | None = None, columns: list[str] | None = None) -> None:
        if isinstance(item, dict):
            if columns is None:
                cells = [str(item[k]) for k in sorted(item) if not nested(item[k])]
                rest = [(k, item[k]) for k in sorted(item) if nested(item[k])]
            else:
                cells = [str(item.get(k, "")) for k in columns]
                rest = [(k, item[k]) for k in sorted(set(item) - set(columns))]
            if cells:
                lines.append("\t".join([key.upper(), *cells] if key is not None else cells))
            for name, value in rest:
                put(value, name)
        elif isinstance(item, list):
            if any(isinstance(element, dict) for element in item):
                found = {
                    k for e in item if isinstance(e, dict) for k, v in e.items() if not nested(v)
                }
                for element in item:
                    put(element, key, sorted(found))
            elif any(isinstance(element, list) for element in item):
                if flat := [element for element in item if not nested(element)]:
                    scalars(flat, key)
                for element in item:
                    if nested(element):
                        put(element, key)
            elif item:
                scalars(item, key)
        else:
            lines.append(str(item))

    put(data)
    return "\n".join(lines)


def _print_outcome(outcome: Any, args: argparse.Namespace) -> int:
    from .pipeline import RunOutcome
    from .submit import outcome_lines

    assert isinstance(outcome, RunOutcome)
    submitted = outcome.submitted
    query = getattr(args, "query", None)
    if args.output != "text" or query:
        _print_data(outcome_summary(outcome), args.output, query)
    else:
        rows: list[tuple[str, object]] = [("run", outcome.run_id)]
        if (counts := _input_counts(outcome)) is not None:
            rows.append(
                (
                    "input",
                    f"{counts['lines']:,} lines: {counts['rejected']:,} rejected "
                    f"(rejects.jsonl), {counts['duplicates']:,} duplicates (duplicates.txt), "
                    f"{counts['blank']:,} blank",
                )
            )
        if submitted is None:
            rows.append(("state", "prepared (not submitted: `fanout submit` creates the jobs)"))
        else:
            rows += [
                ("active jobs", len(submitted.active)),
                ("failed shards", len(submitted.failed)),
                ("timed out", len(submitted.timed_out)),
            ]
        merged = outcome.merged
        if merged is not None:
            rows += [
                ("result", outcome.result),
                ("results", f"{merged.results:,}"),
                ("errors", f"{merged.errors:,} (errors.jsonl)"),
                ("missing", f"{merged.missing:,} (missing.txt)"),
            ]
            if outcome.kept_errors:  # --missing-only: errors of the run not sent again
                kept = f"{outcome.kept_errors:,} (errors.jsonl too: not sent again)"
                rows.insert(-1, ("errors kept", kept))
            if merged.duplicated_in_input:  # --keep-duplicates: answered once in their shard
                rows.append(
                    (
                        "sent again",
                        f"{merged.duplicated_in_input:,} lines repeated an ID of their shard "
                        "(--keep-duplicates): one row for each such ID",
                    )
                )
            if merged.corrupt:
                rows.append(("corrupt lines", f"{merged.corrupt:,} (corrupt.jsonl)"))
            if not merged.sent and not outcome.earlier_results:
                rows.append(("no IDs", "the input held none to send: nothing, blank lines or "
                             "rejects only (exit code 1)"))  # fmt: skip
        rows.append(("seconds", f"{outcome.seconds:.1f}"))
        _print_rows(rows)
        for line in outcome_lines(submitted) if submitted else []:
            print(f"  {line}")
        if outcome.retries and submitted and (submitted.failed or submitted.timed_out):
            print(
                f"  (`fanout retry` sent their IDs again as {', '.join(outcome.retries)}: "
                "the counts above include what came back)"
            )
    return exit_code(outcome, getattr(args, "allow_partial", False))


def exit_code(outcome: Any, allow_partial: bool) -> int:
    """0 complete; 1 failed shards or jobs still running and no result at all (no merge, or
    one without a single recommendation, an input with no ID to send included: for a nightly
    job an empty export is a failure; `--allow-partial` does not make that a success);
    3 partial results (a retry that recovered nothing, of a run with results, is partial)."""
    merged = outcome.merged
    if outcome.submitted is not None and not outcome.ok and merged is None:
        return EXIT_FAILED
    if merged is not None and not merged.results and not outcome.earlier_results:
        return EXIT_FAILED  # not one recommendation, not even for want of an ID to send
    if merged is not None and not outcome.complete and not allow_partial:
        return EXIT_PARTIAL
    return EXIT_OK


def _run_submit(args: argparse.Namespace) -> int:
    from .pipeline import submit
    from .submit import SubmitSettings

    run_dir = _run_dir(args)
    request = _job_request(args)
    settings = SubmitSettings(
        job_name_prefix=request.get("jobName") or "fanout",
        max_concurrent_jobs=args.max_concurrent_jobs,
        tps=args.tps,
        job_retries=args.job_retries,
        poll_interval=_poll_interval(args, args.poll_interval),
        job_timeout=args.job_timeout,
    )

    merge = _merge_settings(args)

    async def go() -> Any:
        async with _aws(args) as aws:
            return await submit(run_dir, request, settings, aws, _reporter(args), merge)

    return _print_outcome(_arun(go), args)


def _job_output_path(text: str | None) -> str | None:
    """`--job-output` of status and resume (where the journal's mirror is): the job option's
    shorthand or JSON, or the bare `s3://…/` path, as `fanout iam-policy` takes it."""
    if not text:
        return None
    from pydantic import ValidationError

    from .config import JobOutput, model_errors

    given = {"s3DataDestination": {"path": text}} if text.startswith("s3://") else None
    option = given or _job_option("jobOutput", text)
    try:
        return str(JobOutput.model_validate(option).s3_data_destination.path)
    except ValidationError as exc:
        raise ConfigError(f"--job-output {text}: {model_errors(exc)}") from None


def _run_resume(args: argparse.Namespace) -> int:
    from .pipeline import adopt_remote_journal, load_state, needs_aws, resume

    run_dir = _run_dir(args)
    output = _job_output_path(args.job_output)
    overrides = {"poll_interval": args.poll_interval, "job_timeout": args.job_timeout}

    async def go() -> Any:
        if not output and not needs_aws(await load_state(run_dir), args.ids):
            return await resume(run_dir, None, overrides, _reporter(args), args.ids)

        async with _aws(args) as aws:
            if output:
                await adopt_remote_journal(run_dir, aws, output)
            return await resume(run_dir, aws, overrides, _reporter(args), args.ids)

    return _print_outcome(_arun(go), args)


def _run_run(args: argparse.Namespace) -> int:
    return _run_jobs(args, "inference")


def _run_segment(args: argparse.Namespace) -> int:
    if not args.generate_cli_skeleton:
        if not (args.items or args.item_attributes):
            raise ConfigError("give --items SRC (Item-Affinity) or --item-attributes SRC")
        args.ids = args.items or args.item_attributes
        args.input_kind = "itemId" if args.items else "itemAttributes"
        args.filter_values = []
    return _run_jobs(args, "segment")


def _run_jobs(args: argparse.Namespace, job_type: str) -> int:
    operation = "CreateBatchInferenceJob" if job_type == "inference" else "CreateBatchSegmentJob"
    if args.generate_cli_skeleton:
        from .awsargs import OperationArgs

        skeleton = OperationArgs.for_operation(operation)
        print(skeleton.skeleton(args.generate_cli_skeleton), end="")
        return EXIT_OK
    live = _live(args)
    try:
        report = live.message if live is not None else _reporter(args)
        with _memory_ahead(args):
            event = live.event if live is not None else None
            outcome = execute_run(args, report, job_type, event)
    finally:
        if live is not None:
            live.close()
    if outcome is None:  # --dry-run
        return EXIT_OK
    return _print_outcome(outcome, args)


def execute_run(
    args: argparse.Namespace, report: Any, job_type: Any = "inference", listener: Any = None
) -> Any:
    """`fanout run` (or `segment`): preflight, plan, then prepare, submit and merge at once.

    None if --dry-run."""
    with _importing():
        from .pipeline import begin, check_destination, new_run_id, plan_input, submit
        from .preflight import check_request, preflight
        from .records import InputKind
        from .submit import SubmitSettings, check_job_names

    if not args.ids:
        raise ConfigError("--ids is required: the IDs to get recommendations for")
    if not args.out and not args.dry_run:
        raise ConfigError("--out is required: where the merged results go (.jsonl, .csv, .parquet)")
    if job_type == "segment":
        request = _job_request(args, "CreateBatchSegmentJob", SEGMENT_JOB_OPTIONS)
    else:
        request = _job_request(args)
    missing = [
        name
        for name in ("solutionVersionArn", "roleArn", "jobInput", "jobOutput")
        if not request.get(name)
    ]
    if missing:
        from .awsargs import cli_name

        names = ", ".join(cli_name(name) for name in missing)
        raise ConfigError(f"missing {names}: every job needs them (or give --cli-input-json)")
    args.solution_version_arn = request["solutionVersionArn"]
    args.batch_inference_job_mode = request.get("batchInferenceJobMode") or "BATCH_INFERENCE"
    run_id = args.run_id = args.run_id or new_run_id()  # an interruption names it
    settings = dataclasses.replace(
        _prepare_settings(args, None, run_id, request), job_type=job_type
    )
    merge = _merge_settings(args) if args.out else None
    if merge is not None:  # checked before the run exists, or costs anything
        from .pipeline import check_dataset_outside_jobs, check_writes_outside_ids

        check_writes_outside_ids(settings, out=merge.out)
        if merge.dataset:
            check_dataset_outside_jobs(merge.out, request)
        else:
            from ._writers import check_result_path

            check_result_path(Path(merge.out), merge.overwrite)
    submit_settings = SubmitSettings(
        job_name_prefix=request.get("jobName") or "fanout",
        max_concurrent_jobs=args.max_concurrent_jobs,
        tps=args.tps,
        job_retries=args.job_retries,
        poll_interval=_poll_interval(args, args.poll_interval),
        job_timeout=args.job_timeout,
    )
    longest = check_job_names(
        submit_settings.job_name_prefix, run_id, 100_000, submit_settings.job_retries + 1
    )
    check_request(request, run_id, longest, job_type)
    given_kind = InputKind(args.input_kind) if args.input_kind else None

    async def go() -> Any:
        async with _aws(args) as aws:
            checked = await preflight(
                aws,
                request,
                given_kind,
                job_type,
                filter_values=settings.source.filter_values,
                per_line=_may_carry_filter_values(args.ids, settings.source.format),
            )
            source = dataclasses.replace(
                settings.source, kind=checked.kind, placeholders=checked.placeholders
            )
            ready = dataclasses.replace(settings, source=source)
            if args.dry_run:
                plan = await plan_input(ready.ids, aws.s3, ready)
                await check_destination(ready, aws, request, submit_settings.job_name_prefix)
                passed = "every check passed; nothing was uploaded or created"
                if args.output != "text" or args.query:
                    found = {"run_id": run_id, "plan": _plan_json(plan), "preflight": passed}
                    _print_data(found, args.output, args.query)
                else:
                    _print_plan(plan, args.ids)
                    print(f"preflight   {passed}")
                return None
            plan = await begin(ready, aws, (request, submit_settings, merge))
            report(
                f"run {run_id}: {plan.records:,} records → {plan.shards} job shard(s), "
                f"{plan.waves} wave(s) at the quota of {plan.quota}; {plan.reason}"
            )
            if plan.skipped:
                report(f"run {run_id}: left out {_left_out(plan.skipped, args.ids)}")
            return await submit(
                ready.run_dir, request, submit_settings, aws, report, merge, listener, ready.ids
            )

    return _arun(go)


def _run_bench(args: argparse.Namespace) -> int:
    import contextlib
    import random
    import tempfile

    from .bench import measure, project, usage
    from .journal import read_events
    from .pipeline import new_run_id

    external = bool(args.endpoint_url or args.profile)
    if external and not args.consent:
        raise ConfigError(
            "fanout bench against a real account creates batch jobs, which cost money: add "
            "--i-understand-this-costs-money (or leave out --endpoint-url/--profile to use "
            "the emulator)"
        )
    state_dir = _state_dir(args)
    run_id = args.run_id or "bench-" + new_run_id()
    workdir = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    ids = workdir / "users.txt"
    rng = random.Random(args.users)
    with ids.open("w") as handle:
        for _ in range(args.users):
            handle.write(f"{rng.getrandbits(4 * args.id_length):0{args.id_length}x}\n")
    with contextlib.ExitStack() as stack:
        if external:
            job = [
                "--solution-version-arn", args.solution_version_arn or "",
                "--role-arn", args.role_arn or "",
                "--job-input", args.job_input or "", "--job-output", args.job_output or "",
            ]  # fmt: skip
        else:
            from .emulator import Emulator, EmulatorSettings

            emulator = stack.enter_context(Emulator(EmulatorSettings(job_seconds=0.5)))
            info = emulator.info
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                os.environ.pop(name, None)
            os.environ.update(info.environment())
            key = info.kms_key_arn
            job = [
                "--solution-version-arn", info.solution_versions[args.recipe],
                "--role-arn", info.role_arn,
                "--job-input", f"s3DataSource={{path=s3://{info.bucket}/bench/in/,kmsKeyArn={key}}}",
                "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/bench/out/}}",
            ]  # fmt: skip
        argv = [
            "run", "--ids", str(ids), "--out", str(workdir / "results.jsonl"),
            "--num-results", str(args.num_results), "--run-id", run_id,
            "--state-dir", str(state_dir), "--log-format", "text",
            "--max-job-bytes", str(args.max_job_bytes), "--max-job-files", str(args.max_job_files),
            "--max-file-records", str(args.max_file_records), "--part-bytes", str(args.part_bytes),
            "--max-concurrent-jobs", str(args.max_concurrent_jobs),
            "--job-overhead-minutes", str(args.job_overhead_minutes),
            "--records-per-minute", str(args.records_per_minute), *job,
        ]  # fmt: skip
        if args.poll_interval:
            argv += ["--poll-interval", str(args.poll_interval)]
        if args.region:
            argv += ["--region", args.region]
        for flag in ("endpoint_url", "profile", "s3_endpoint_url", "ca_bundle"):
            if getattr(args, flag):
                argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
        outcome = execute_run(_parser().parse_args(argv), _report)
    events = read_events(outcome.run_dir)
    stages = measure(events)
    used = usage()
    prepared = next(e for e in events if e["event"] == "prepared")
    limits, timing = _limits(args)
    per_record = prepared["nbytes"] / max(1, prepared["records"])
    projection = project(stages, args.project, per_record, limits, timing)
    record = {
        "run_id": outcome.run_id,
        "run_dir": str(outcome.run_dir),
        "users": args.users,
        "endpoint": "external" if external else "emulator (in-process)",
        "wall seconds": round(outcome.seconds, 2),
        "stages": [stage.row() for stage in stages],
        **used,
        "projection": projection,
    }
    from .report import write_report

    page = outcome.run_dir / "report.html"
    write_report(outcome.run_dir, page)
    record["report"] = str(page)
    if args.output == "json":
        print(json.dumps(record, indent=2))
    else:
        from .bench import format_table

        print(format_table([stage.row() for stage in stages]))
        print()
        _print_rows([(k, v) for k, v in record.items() if k not in {"stages", "projection"}])
        print()
        _print_rows([("projection: " + k, v) for k, v in projection.items()])
    return exit_code(outcome, allow_partial=False)


def _run_merge(args: argparse.Namespace) -> int:
    from .pipeline import resume

    if args.source is not None:
        return _merge_from(args)
    if args.run_id is None:
        raise ConfigError("give the RUN to merge, or --from LOCATION for other outputs")
    run_dir = _run_dir(args)
    merge = _merge_settings(args)

    async def go() -> Any:
        async with _aws(args) as aws:
            return await resume(run_dir, aws, None, _reporter(args), None, merge)

    return _print_outcome(_arun(go), args)


def _iam_path(text: str, member: str) -> tuple[str, str | None]:
    """A plain s3:// path, or the AWS CLI value of jobInput/jobOutput: (path, kmsKeyArn)."""
    if text.startswith("s3://"):
        return text, None
    value = _job_option(member, text)
    config = value.get("s3DataSource") or value.get("s3DataDestination") or {}
    return str(config.get("path", "")), config.get("kmsKeyArn")


def _run_iam_policy(args: argparse.Namespace) -> int:
    from .iam import policies, render

    job_input, input_key = _iam_path(args.job_input, "jobInput")
    job_output, output_key = _iam_path(args.job_output, "jobOutput")
    keys = list(dict.fromkeys([*args.kms_key_arn, *(k for k in (input_key, output_key) if k)]))
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    arn_parts = args.role_arn.split(":")
    partition = args.partition or (arn_parts[1] if len(arn_parts) > 1 else "aws")
    found = policies(
        job_input=job_input,
        job_output=job_output,
        role_arn=args.role_arn,
        kms_key_arns=keys,
        account_id=args.account_id,
        region=region,
        tags=args.tags,
        segments=args.segments,
        solution_version_arns=args.solution_version_arn,
        filter_arns=args.filter_arn,
        id_sources=[spec for spec in args.ids if spec.startswith("s3://")],
        datasets=[out for out in args.out if out.startswith("s3://")],
        partition=partition,
    )
    print(render(found, args.format))
    return EXIT_OK


def _run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    write_report(_run_dir(args), args.html, overwrite=args.overwrite)
    print(f"report of run {args.run_id}: {args.html}")
    return EXIT_OK


def _run_retry(args: argparse.Namespace) -> int:
    from .pipeline import retry
    from .retry import error_lines

    run_dir = _run_dir(args)

    async def go() -> Any:
        async with _aws(args) as aws:
            return await retry(
                run_dir,
                aws,
                _reporter(args),
                role_arn=args.role_arn,
                missing_only=args.missing_only,
                overrides={"poll_interval": args.poll_interval, "job_timeout": args.job_timeout},
            )

    outcome = _arun(go)
    if outcome is None:
        errors = run_dir / "errors.jsonl"
        left = error_lines(errors) if args.missing_only and errors.exists() else 0
        if not left:
            text = "nothing to retry, every ID has recommendations"
        else:
            text = (
                f"nothing to retry, no ID is missing; {left:,} errored IDs were not sent again "
                f"(--missing-only): {errors}"
            )
        query = getattr(args, "query", None)
        if args.output != "text" or query:
            data = {"run_id": args.run_id, "retried": False, "errors_left": left, "note": text}
            _print_data(data, args.output, query)
        else:
            print(f"run {args.run_id}: {text}")
        return EXIT_OK if not left or args.allow_partial else EXIT_PARTIAL
    return _print_outcome(outcome, args)


def _merge_from(args: argparse.Namespace) -> int:
    from .collect import collect
    from .records import InputKind

    if args.run_id is not None:
        raise ConfigError("give either a RUN or --from, not both")
    if args.order == "input":
        raise ConfigError(
            "--order input needs the input the outputs answer, and --from has none: merge a "
            "fanout run (fanout merge RUN --order input) to get results in input order"
        )
    if args.out.startswith("s3://"):
        raise ConfigError(
            f"--out {args.out}: merge --from writes one local file (.jsonl, .csv or .parquet); "
            "an S3 dataset is written by merging a fanout run (fanout merge RUN --out s3://…/)"
        )
    kind = InputKind(args.input_kind) if args.input_kind else None
    options = {
        "kind": kind,
        "fmt": args.out_format,
        "overwrite": args.overwrite,
        "raw": args.raw,
        "separator": args.separator,
    }

    async def go() -> Any:
        if not args.source.startswith("s3://"):
            return await collect(args.source, args.out, None, **options)

        async with _aws(args) as aws:
            return await collect(args.source, args.out, aws, **options)

    found = _arun(go)
    summary = dataclasses.asdict(found)
    if args.output != "text":
        _print_data(summary, args.output, None)
    else:
        _print_rows(list(summary.items()))
    if not found.results:  # as for a run: not one recommendation is a failure
        return EXIT_FAILED
    if (found.errors or found.corrupt) and not args.allow_partial:
        return EXIT_PARTIAL
    return EXIT_OK


def _run_status(args: argparse.Namespace) -> int:
    from .pipeline import load_state
    from .status import status_record, status_rows

    run_dir = _run_dir(args)
    output = _job_output_path(args.job_output)

    async def go() -> Any:
        if output is None:
            return await load_state(run_dir)

        async with _aws(args) as aws:
            return await load_state(run_dir, aws, output)

    state = _arun(go)
    if args.output != "text":
        _print_data(status_record(state), args.output, None)
    else:
        _print_rows(status_rows(state))
    return EXIT_OK


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to report for a group: its first FanoutError or interrupt, else itself."""
    return first_of(group, (FanoutError, KeyboardInterrupt, OSError)) or group


def _command_parser(
    parser: argparse.ArgumentParser, command: str
) -> argparse.ArgumentParser | None:
    """The parser of the subcommand `command`, if `parser` has it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return None


def _repeatable(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The options of `command` that take several values (repeated, or several at once)."""
    sub = _command_parser(parser, command)
    return {
        name
        for option in (sub._actions if sub is not None else [])
        if isinstance(option, argparse._AppendAction) or option.nargs in ("+", "*")
        for name in option.option_strings
    }


def _known_options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    sub = _command_parser(parser, command)
    return {
        name
        for option in (sub._actions if sub is not None else [])
        for name in option.option_strings
    }


def _with_config(argv: list[str], parser: argparse.ArgumentParser | None = None) -> list[str]:
    """`fanout run --config run.yaml …`: the file's options go first, so the command line wins.

    The file maps option names (without --) to values: strings and numbers as given, `true` for
    a flag, a list for a repeatable or multi-value option, a mapping for a structure (given on as
    JSON, e.g. `job-output: {s3DataDestination: {path: s3://…}}`).
    """
    commands = [name for name in ("run", "segment") if name in argv]
    if not commands:
        return argv
    at = argv.index(commands[0])
    rest = argv[at + 1 :]
    path = None
    for index, token in enumerate(rest):
        if token == "--config" and index + 1 < len(rest):
            path = rest[index + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
    if path is None:
        return argv
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    tokens: list[str] = []
    several = _repeatable(parser, commands[0]) if parser is not None else None
    known = _known_options(parser, commands[0]) if parser is not None else None
    given = {token.split("=", 1)[0] for token in rest if token.startswith("--")}
    for name, value in loaded.items():
        option = "--" + str(name).removeprefix("--")
        if known is not None and option not in known | {"--config"}:
            import difflib

            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f" (did you mean {close[0].removeprefix('--')}?)" if close else ""
            raise ConfigError(
                f"--config {path}: {name} is not an option of fanout {commands[0]}{hint}"
            )
        if option in given:  # the command line's values replace the file's, lists included
            continue
        if option == "--filter-values" and isinstance(value, dict):  # {GENRE: [a, b]}
            value = [f"{key}={_placeholder_values(item)}" for key, item in value.items()]
        scalars = isinstance(value, list) and not (value and isinstance(value[0], dict))
        if scalars and several is not None and option not in several:
            raise ConfigError(
                f"--config {path}: {name} takes one value, not a list ({value!r}): give one"
            )
        if value is True:
            tokens.append(option)
        elif value is False or value is None:
            continue
        elif isinstance(value, list) and not (value and isinstance(value[0], dict)):
            for item in value:
                tokens += [option, item if isinstance(item, str) else json.dumps(item)]
        elif isinstance(value, dict | list):
            tokens += [option, json.dumps(value)]
        else:
            tokens += [option, str(value)]
    if "--tags" in tokens:  # one --tags with every value, as the AWS CLI takes it
        values = [tokens[i + 1] for i, t in enumerate(tokens) if t == "--tags"]
        tokens = [t for i, t in enumerate(tokens) if t != "--tags" and tokens[i - 1] != "--tags"]
        tokens += ["--tags", *values]
    return [*argv[: at + 1], *tokens, *rest]


def _check_utf8(tokens: Sequence[str]) -> None:
    """Refuse an argument that is not valid UTF-8 (a file name in another encoding, which the
    system hands over with its bytes escaped): the run journal, JSON, could not record it."""
    for token in tokens:
        try:
            token.encode()
        except UnicodeEncodeError:
            raw = os.fsencode(token)
            raise ConfigError(
                f"argument {raw!r} is not valid UTF-8 (a file name in another encoding?): fanout "
                "records paths in its run journal as JSON text; rename the file, or give a "
                "symbolic link to it whose name is UTF-8"
            ) from None


def _placeholder_values(value: object) -> str:
    """A `filter-values` mapping's value in --filter-values form: a YAML list as the JSON list
    (whose items may hold commas), anything else as written (`a,b`)."""
    return json.dumps(value) if isinstance(value, list) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    tokens = list(sys.argv[1:] if argv is None else argv)
    handlers = {
        "emulator": _run_emulator,
        "demo": _run_demo,
        "plan": _run_plan,
        "prepare": _run_prepare,
        "submit": _run_submit,
        "resume": _run_resume,
        "merge": _run_merge,
        "run": _run_run,
        "bench": _run_bench,
        "segment": _run_segment,
        "retry": _run_retry,
        "report": _run_report,
        "iam-policy": _run_iam_policy,
        "status": _run_status,
    }
    parser = _parser(tokens[0] if tokens and tokens[0] in handlers else None)
    try:
        _check_utf8(tokens)
        args, unknown = parser.parse_known_args(_with_config(tokens, parser))
        if unknown:  # said by the command's own parser: its usage is the one to show
            sub = _command_parser(parser, args.command) or parser
            sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    except FanoutError as exc:
        print(f"fanout: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    if getattr(args, "debug", False):
        import logging

        from ._redact import install

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
        install()  # botocore logs headers: keys, signatures and tokens are masked
    release_large_buffers()
    with _stop_signals(args.command != "emulator"):
        return _dispatch(args, handlers)


@contextlib.contextmanager
def _stop_signals(install: bool) -> Iterator[None]:
    """SIGTERM, and SIGINT unless it is ignored (a script's background job: then Ctrl-C at
    the terminal is not for this process), handled by `_stop_command` while the command runs;
    the handlers before, and the unraisable hook, are put back after it (tests and embedders
    call `main` again). Only the main thread may set handlers."""
    _terminated.clear()
    _stop_asked.clear()
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    if before[0] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
        sys.unraisablehook = hook


def _dispatch(args: argparse.Namespace, handlers: dict[str, Callable[..., int]]) -> int:
    """The command's handler, what it raised said in one line with its exit code."""
    try:
        try:
            _check_query(getattr(args, "query", None))
            return handlers[args.command](args)
        except BaseExceptionGroup as group:  # task groups wrap what their tasks raise
            cause = _first_cause(group)
            if cause is group:
                raise
            raise cause from group
    except FanoutError as exc:
        print(f"fanout: {type(exc).__name__}: {exc}", file=sys.stderr)
        if isinstance(exc, UploadError) and "fanout resume" not in str(exc):
            _say_how_to_resume(args)  # S3 or a disk that failed: nothing of the run is lost
        if args.command in {"run", "submit", "resume"}:
            _say_running_jobs(args)
        return exc.exit_code
    except KeyboardInterrupt:
        terminated = _terminated.is_set()
        said = "terminated" if terminated else "interrupted"
        print(f"fanout: {said}{_how_to_go_on(args)}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:  # `fanout status … | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a full disk, a directory that went away: the journal is intact
        where = f" ({exc.filename})" if exc.filename else ""
        run = getattr(args, "run_id", None)
        started = run is not None and _has_journal(args, run)
        then = (
            f"Every finished step is in the run journal: free space or fix the cause, then "
            f"`fanout resume {run}` continues."
            if started
            else "Nothing was started: fix the cause (free space, a folder fanout may write), "
            "then run the command again."
        )
        print(f"fanout: {exc.strerror or exc}{where}. {then}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        gc.unfreeze()  # what `_importing` froze: an embedder's collector works as before


def entry() -> NoReturn:
    """The `fanout` command: `main`, then a quick exit.

    When `main` returns, everything fanout writes is written and closed. What the interpreter's
    own teardown still does (freeing hundreds of modules and the buffers of a big run object by
    object) took 0.08-0.1 s at the end of a 10M-ID `fanout prepare`, so the command flushes its
    output and logging and leaves with `os._exit`. Tests and embedders call `main`.

    The command loads no pydantic plugins unless `PYDANTIC_DISABLE_PLUGINS` says otherwise:
    pydantic reads the entry points of every installed package for them when the first model is
    built (13-18 ms of each start here), and fanout has none to load.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    code = main()
    with contextlib.suppress(BrokenPipeError):  # the reader left (`fanout status | head`)
        sys.stdout.flush()
    sys.stderr.flush()
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
