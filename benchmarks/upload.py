"""Upload throughput: boto3's TransferManager (`aws s3 cp`) against fanout's part uploader.

The same bytes (JSON lines, 64 bytes each) go to two targets:

- `emulator`: fanout's emulator (moto's S3 on 127.0.0.1, in this process), with SSE-KMS;
- `discard`: a loopback sink that drops the bytes (`discard_s3.py`): the client's own ceiling.

Clients, each measured in its own subprocess (its peak RSS is `ru_maxrss` of that child alone):

- `tm-1file`: TransferManager (10 threads, 16 MiB parts, threshold 16 MiB) uploading ONE file
  with `upload_file`, as `aws s3 cp` does; the baseline of the ratio column;
- `tm-parts`: the same TransferManager uploading the N part files fanout uploads (one manager,
  all files submitted at once, as `aws s3 cp --recursive` does);
- `fanout`: `PartFile`s through a bounded anyio stream into `fanout.upload.upload_parts` with
  `S3PartWriter` and `fanout.aws.Aws`: the code path of `fanout prepare`, default
  `UploadSettings` but `--concurrency`.

What each hashes: TransferManager, botocore's defaults, a CRC32 checksum per request and,
since both targets are http, the SHA-256 of every body for the SigV4 payload hash (over https
botocore leaves that out when a checksum is sent). fanout, the SHA-256 of each part, which the
run journal needs, sent as S3's checksum in a signed header, so it signs UNSIGNED-PAYLOAD on any
endpoint (`fanout.aws.S3Store`): one hash per part, where TransferManager does two here.

Target: fanout >= 1.0x TransferManager (one file) on both targets; peak RSS <= 300 MiB.
The machine may have few cores: the sink's server (this process) and the measured client
compete for them; the output says how many there are.

The data is written once to a temp file (and as part files, for `tm-parts`); the fanout worker
reads each part when the stream has room, so its RSS shows what fanout itself holds. Columns:
seconds and MiB/s of the best of `--repeat` runs (each in a fresh process, clients round-robin),
CPU seconds of the client and of the sink during that run, RSS after setup ("base") and peak.
Every run checks that the sink received all the bytes.

    .venv/bin/python benchmarks/upload.py [--mb 1024] [--part-mb 16] [--concurrency 8]
        [--repeat 3] [--targets emulator,discard] [--clients tm-1file,tm-parts,fanout]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import MiB, Timer, peak_rss_self, print_table, run_child

LINE_BYTES = 64
TM_CONCURRENCY = 10
TM_PART = 16 * MiB
RSS_LIMIT_MIB = 300.0
TARGETS = ("emulator", "discard")
CLIENTS = ("tm-1file", "tm-parts", "fanout")
BASELINE = "tm-1file"
REGION = "us-east-1"


# -- the data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    index: int
    offset: int
    nbytes: int
    records: int
    sha256: str
    path: str  # the same bytes as a file of its own (for tm-parts)


@dataclass(frozen=True, slots=True)
class Dataset:
    path: str  # every byte, one file
    nbytes: int
    parts: list[Part]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "nbytes": self.nbytes, "parts": [asdict(p) for p in self.parts]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dataset:
        return cls(data["path"], data["nbytes"], [Part(**p) for p in data["parts"]])


def _block(lines: int) -> bytes:
    """`lines` JSON lines of exactly LINE_BYTES bytes: {"userId":"<uuid>-<13 digits>"}."""
    out = []
    for i in range(lines):
        line = f'{{"userId":"{uuid.uuid4()}-{i:013d}"}}\n'.encode()
        assert len(line) == LINE_BYTES
        out.append(line)
    return b"".join(out)


def make_dataset(folder: Path, total_mib: int, part_mib: int) -> Dataset:
    """Write `total_mib` MiB of JSON lines to one file and to part files of `part_mib` MiB."""
    meta = folder / "dataset.json"
    if meta.exists():
        dataset = Dataset.from_json(json.loads(meta.read_text()))
        if dataset.nbytes == total_mib * MiB and dataset.parts[0].nbytes == part_mib * MiB:
            return dataset
    block = _block(4 * MiB // LINE_BYTES)  # repeated: 4 MiB of distinct lines
    total, part_bytes = total_mib * MiB, part_mib * MiB
    data_path = folder / "data.jsonl"
    (folder / "parts").mkdir(exist_ok=True)
    parts: list[Part] = []
    with open(data_path, "wb") as whole:
        offset = 0
        while offset < total:
            nbytes = min(part_bytes, total - offset)
            chunk = (block * (nbytes // len(block) + 1))[:nbytes]
            path = folder / "parts" / f"part-{len(parts):05d}.jsonl"
            path.write_bytes(chunk)
            whole.write(chunk)
            sha = hashlib.sha256(chunk).hexdigest()
            parts.append(Part(len(parts), offset, nbytes, nbytes // LINE_BYTES, sha, str(path)))
            offset += nbytes
    dataset = Dataset(str(data_path), total, parts)
    meta.write_text(json.dumps(dataset.to_json()))
    return dataset


# -- workers (one subprocess per measured upload) -------------------------------------------------


def _maxrss_mib() -> float:
    return peak_rss_self() / MiB


def _worker_tm(spec: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    client = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=spec["endpoint"])
    config = TransferConfig(
        max_concurrency=TM_CONCURRENCY, multipart_chunksize=TM_PART, multipart_threshold=TM_PART
    )
    # The same SSE-KMS headers as fanout's, less BucketKeyEnabled: s3transfer refuses that key
    # (not in ALLOWED_UPLOAD_ARGS); it only changes how S3 calls KMS, not the client's work.
    extra = {k: v for k, v in _sse_args(spec["kms"]).items() if k != "BucketKeyEnabled"}
    prefix = spec["prefix"]
    client.head_bucket(Bucket=spec["bucket"])  # resolve the endpoint and open a connection
    base_rss = _maxrss_mib()
    with Timer() as timer:
        if spec["client"] == "tm-1file":
            client.upload_file(
                dataset.path, spec["bucket"], f"{prefix}data.jsonl", ExtraArgs=extra, Config=config
            )
            files = 1
        else:
            with create_transfer_manager(client, config) as manager:
                futures = [
                    manager.upload(
                        part.path,
                        spec["bucket"],
                        f"{prefix}shard-00000/part-{part.index:05d}.jsonl",
                        extra_args=extra,
                    )
                    for part in dataset.parts
                ]
                for future in futures:
                    future.result()
            files = len(dataset.parts)
    return {
        "seconds": timer.seconds,
        "cpu_seconds": timer.cpu_seconds,
        "files": files,
        "base_rss_mib": base_rss,
    }


def _sse_args(kms: str | None) -> dict[str, Any]:
    from fanout.aws import Encryption

    return Encryption(kms).put_args()


def _worker_fanout(spec: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    import anyio

    from fanout._memory import release_large_buffers
    from fanout.aws import Aws, AwsOptions, Encryption
    from fanout.config import UploadSettings
    from fanout.shard import PartFile
    from fanout.storage import S3Uri
    from fanout.upload import UploadedPart, upload_parts
    from fanout.upload_s3 import S3PartWriter

    release_large_buffers()  # as the `fanout` command does at start-up
    settings = UploadSettings(concurrency=spec["concurrency"])
    written: list[UploadedPart] = []
    result: dict[str, Any] = {}

    async def on_written(part: UploadedPart) -> None:
        written.append(part)

    async def produce(send: Any, fd: int) -> None:
        async with send:
            for part in dataset.parts:
                await send.send(await _read_part(fd, part))

    async def _read_part(fd: int, part: Part) -> PartFile:
        data = await anyio.to_thread.run_sync(os.pread, fd, part.nbytes, part.offset)
        return PartFile.of(0, part.index, data, part.records)

    async def main() -> None:
        options = AwsOptions(s3_endpoint_url=spec["endpoint"], region=REGION)
        async with Aws(options) as aws:
            store = aws.s3
            await store.head(spec["bucket"], "no-such-key")  # open a connection, as tm does
            writer = S3PartWriter(
                store, S3Uri(spec["bucket"], spec["prefix"]), Encryption(spec["kms"]), settings
            )
            fd = os.open(dataset.path, os.O_RDONLY)
            try:
                result["base_rss_mib"] = _maxrss_mib()
                with Timer() as timer:
                    send, receive = anyio.create_memory_object_stream[PartFile](settings.queue)
                    async with anyio.create_task_group() as group:
                        group.start_soon(produce, send, fd)
                        group.start_soon(
                            upload_parts, receive, writer, settings.concurrency, on_written
                        )
                result["seconds"] = timer.seconds
                result["cpu_seconds"] = timer.cpu_seconds
            finally:
                os.close(fd)

    anyio.run(main)
    if sum(part.nbytes for part in written) != dataset.nbytes:
        raise RuntimeError("fanout reported fewer bytes written than it was given")
    expected = {part.index: part.sha256 for part in dataset.parts}
    wrong = sorted(part.part for part in written if expected.get(part.part) != part.sha256)
    if wrong:
        raise RuntimeError(f"parts {wrong[:5]} were sent with a SHA-256 other than their data's")
    return {**result, "files": len(written)}


def worker(spec: dict[str, Any]) -> None:
    dataset = Dataset.from_json(json.loads(Path(spec["dataset"]).read_text()))
    try:
        if spec["client"].startswith("tm-"):
            result = _worker_tm(spec, dataset)
        else:
            result = _worker_fanout(spec, dataset)
    except Exception as exc:  # reported in the table; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        result = {"error": f"{type(leaf).__name__}: {leaf}"[:300]}
    print(json.dumps(result), flush=True)


# -- the parent: targets, runs, table -------------------------------------------------------------


def clean_environment() -> dict[str, str]:
    """Dummy credentials, no real AWS_* settings, no proxy: only loopback is ever contacted."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in {"http_proxy", "https_proxy", "all_proxy"}:
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return dict(os.environ)


@dataclass
class Target:
    name: str
    endpoint: str
    bucket: str
    kms: str | None
    received: Any  # () -> bytes the sink holds under a prefix (and cleans it up)


@contextmanager
def emulator_target() -> Iterator[Target]:
    import boto3

    from fanout.emulator import Emulator, EmulatorSettings

    with Emulator(EmulatorSettings()) as emulator:
        info = emulator.info
        s3 = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=info.s3_endpoint)

        def received(prefix: str) -> int:
            total, keys = 0, []
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=info.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    total += int(obj["Size"])
                    keys.append({"Key": obj["Key"]})
            for start in range(0, len(keys), 1000):
                batch = keys[start : start + 1000]
                s3.delete_objects(Bucket=info.bucket, Delete={"Objects": batch})
            uploads = s3.list_multipart_uploads(Bucket=info.bucket, Prefix=prefix)
            for upload in uploads.get("Uploads", []):
                s3.abort_multipart_upload(
                    Bucket=info.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            return total

        yield Target("emulator", info.s3_endpoint, info.bucket, info.kms_key_arn, received)


@contextmanager
def discard_target() -> Iterator[Target]:
    from discard_s3 import serve_in_thread, stop_server

    server = serve_in_thread()
    marks = {"received": 0}

    def received(prefix: str) -> int:
        # Every body byte since the last call (requests are not told apart by prefix).
        got = server.received - marks["received"]
        marks["received"] = server.received
        return got

    try:
        yield Target("discard", server.url, "discard-bucket", None, received)
    finally:
        stop_server(server)


@dataclass
class Run:
    seconds: float | None
    client_cpu: float  # CPU seconds of the client in its timed upload
    sink_cpu: float  # CPU seconds of this process (the sink's server) while the client ran
    files: int
    peak_rss_mib: float
    base_rss_mib: float
    error: str | None


def measure(
    target: Target, client: str, rep: int, dataset_meta: Path, nbytes: int, concurrency: int
) -> Run:
    prefix = f"bench/{client}/{rep}/"
    spec = {
        "client": client,
        "endpoint": target.endpoint,
        "bucket": target.bucket,
        "kms": target.kms,
        "prefix": prefix,
        "dataset": str(dataset_meta),
        "concurrency": concurrency,
    }
    target.received(prefix)  # reset the discard counter
    with Timer() as sink:
        child = run_child([sys.executable, __file__, "--worker", json.dumps(spec)])
    lines = child.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if child.returncode != 0 and "error" not in result:
        result["error"] = f"worker exited with {child.returncode}"
    got = target.received(prefix)
    error = result.get("error")
    if error is None and got < nbytes:
        error = f"the sink holds {got:,} of {nbytes:,} bytes"
    return Run(
        None if error else float(result["seconds"]),
        float(result.get("cpu_seconds", 0.0)),
        sink.cpu_seconds,
        int(result.get("files", 0)),
        child.peak_rss_mib,
        float(result.get("base_rss_mib", 0.0)),
        error,
    )


def summarise(
    target: str, runs: dict[str, list[Run]], nbytes: int
) -> tuple[list[dict[str, object]], dict[str, float | None], dict[str, float]]:
    best: dict[str, float | None] = {}
    rss: dict[str, float] = {}
    for client, client_runs in runs.items():
        times = [r.seconds for r in client_runs if r.seconds is not None]
        best[client] = min(times) if times else None
        rss[client] = max(r.peak_rss_mib for r in client_runs)
    base = best.get(BASELINE)
    rows: list[dict[str, object]] = []
    for client, client_runs in runs.items():
        seconds = best[client]
        errors = {r.error for r in client_runs if r.error}
        ok = [r for r in client_runs if r.seconds is not None]
        fastest = min(ok, key=lambda r: r.seconds or 0.0) if ok else None
        rows.append(
            {
                "target": target,
                "client": client,
                "files": max(r.files for r in client_runs),
                "MiB": round(nbytes / MiB),
                "seconds": seconds if seconds is not None else "ERROR",
                "MiB/s": nbytes / MiB / seconds if seconds else "-",
                "vs tm-1file": base / seconds if seconds and base else "-",
                "client CPU s": fastest.client_cpu if fastest else "-",
                "sink CPU s": fastest.sink_cpu if fastest else "-",
                "ok": f"{len(ok)}/{len(client_runs)}",
                "base RSS MiB": max(r.base_rss_mib for r in client_runs),
                "peak RSS MiB": rss[client],
                "error": "; ".join(sorted(errors))[:90] if errors else "",
            }
        )
    return rows, best, rss


def verdicts(target: str, best: dict[str, float | None], rss: dict[str, float]) -> list[str]:
    base = best.get(BASELINE)
    lines = []
    for client in (c for c in best if c.startswith("fanout")):
        seconds = best[client]
        if seconds is None or base is None:
            speed = "FAIL (no successful run)" if seconds is None else "n/a (no baseline)"
        else:
            ratio = base / seconds
            speed = f"{'PASS' if ratio >= 1.0 else 'FAIL'} ({ratio:.2f}x)"
        if seconds is None:
            memory = "n/a (no successful run)"
        else:
            memory = f"{'PASS' if rss[client] <= RSS_LIMIT_MIB else 'FAIL'} ({rss[client]:.0f} MiB)"
        note = "" if client == "fanout" else "  [variant, informational]"
        lines.append(
            f"{target:8s} {client:13s} fanout >= 1.0x TransferManager: {speed:24s} "
            f"RSS <= {RSS_LIMIT_MIB:.0f} MiB: {memory}{note}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="MiB to upload (default 1024)")
    parser.add_argument("--part-mb", type=int, default=16, help="MiB per part file (default 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="fanout's (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the data here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    clean_environment()
    if args.worker:
        worker(json.loads(args.worker))
        return

    targets = [t for t in args.targets.split(",") if t]
    clients = [c for c in args.clients.split(",") if c]
    if unknown := (set(targets) - set(TARGETS)) | (set(clients) - set(CLIENTS)):
        parser.error(f"unknown target or client: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="fanout-bench-upload-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with Timer() as timer:
            dataset = make_dataset(folder, args.mb, args.part_mb)
        print(
            f"data: {dataset.nbytes / MiB:.0f} MiB of {LINE_BYTES}-byte JSON lines, "
            f"{len(dataset.parts)} parts of {args.part_mb} MiB ({timer.seconds:.1f} s to write)"
        )
        print(
            f"cores: {os.cpu_count()} (the sink, the emulator's moto server or the discard "
            "server, runs in this process and competes with the measured client for them); "
            f"fanout concurrency {args.concurrency}, TransferManager {TM_CONCURRENCY} threads, "
            f"{TM_PART // MiB} MiB parts; best of {args.repeat}",
            flush=True,
        )
        rows: list[dict[str, object]] = []
        summary: list[str] = []
        failed: list[str] = []
        for name in targets:
            with emulator_target() if name == "emulator" else discard_target() as target:
                runs: dict[str, list[Run]] = {c: [] for c in clients}
                for rep in range(args.repeat):
                    for client in clients:  # round robin, so drift hits every client alike
                        run = measure(
                            target,
                            client,
                            rep,
                            folder / "dataset.json",
                            dataset.nbytes,
                            args.concurrency,
                        )
                        runs[client].append(run)
                        if run.error:
                            failed.append(f"{name} {client} #{rep + 1}: {run.error}")
                        shown = f"{run.seconds:.2f} s" if run.seconds else f"ERROR {run.error}"
                        print(
                            f"  {name} {client} #{rep + 1}: {shown}, "
                            f"peak RSS {run.peak_rss_mib:.0f} MiB",
                            file=sys.stderr,
                            flush=True,
                        )
            target_rows, best, rss = summarise(name, runs, dataset.nbytes)
            rows.extend(target_rows)
            summary.extend(verdicts(name, best, rss))
        print()
        print_table(rows)
        print()
        for line in summary:
            print(line)
        if failed:  # a run that failed is a broken benchmark, not a slow client
            print("\n".join(["runs that failed:", *failed]), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
