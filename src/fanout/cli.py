"""The `fanout` command line: parse, build settings, call the library, map errors to exit codes.

No pipeline logic lives here. Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, FanoutError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout",
        description="Amazon Personalize batch recommendations for millions of users at once.",
    )
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    emulator = commands.add_parser(
        "emulator",
        help="run the local Personalize batch API with S3 and KMS",
        description="Start a local emulator of the Personalize batch API (AWS JSON 1.1) and of "
        "S3 with KMS, print the shell lines that point the AWS CLI and SDKs at it, and run "
        "until interrupted (SIGINT or SIGTERM).",
    )
    _emulator_options(emulator)

    demo = commands.add_parser(
        "demo",
        help="run a batch job end to end on an in-process emulator",
        description="Start the emulator in-process, generate users, run a batch inference job "
        "on them and print a summary in which every user is accounted for.",
    )
    demo.add_argument("--users", type=_positive_int, default=100_000, help="users (100000)")
    demo.add_argument("--num-results", type=_positive_int, default=25, help="items per user (25)")
    return parser


def _emulator_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (127.0.0.1; loopback is the safe one)")
    add("--s3-port", type=int, default=0, help="S3/KMS/IAM/STS port (0 = a free port)")
    add("--personalize-port", type=int, default=0, help="Personalize port (0 = a free port)")
    add("--region", default="us-east-1")
    add("--bucket", default="fanout-emulator", help="the bucket to create")
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


def _positive_int(text: str) -> int:
    value = int(text)
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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid emulator settings: {problems}") from None


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
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(users=args.users, num_results=args.num_results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            return _run_emulator(args)
        if args.command == "demo":
            return _run_demo(args)
    except FanoutError as exc:
        print(f"fanout: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fanout: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
