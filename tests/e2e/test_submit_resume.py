"""`fanout submit`, `resume` and `status` against emulators over HTTP, as a user drives them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from emulated import User, start

from fanout.cli import main
from fanout.emulator import Emulator
from fanout.journal import read_events
from fanout.state import RunState

FANOUT = [sys.executable, "-c", "import sys; from fanout.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def roomy() -> Iterator[Emulator]:
    """Quota 10 on the service side, so fanout's own limit is what is tested."""
    emulator = start(quota=10, job_seconds=0.15)
    yield emulator
    emulator.stop()


@pytest.fixture
def user(roomy: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    return User(roomy.info, tmp_path, monkeypatch)


def in_flight_peak(emulator: Emulator, since: float) -> int:
    """The most non-terminal jobs at any moment, from the emulator's own history."""
    changes: list[tuple[float, int]] = []
    for _, history in emulator.service.job_history():
        created = history[0][0]
        if created < since:
            continue
        ended = next((t for t, status in history if status in {"ACTIVE", "FAILED"}), None)
        changes.append((created, 1))
        if ended is not None:
            changes.append((ended, -1))
    peak = current = 0
    for _, delta in sorted(changes, key=lambda c: (c[0], c[1])):
        current += delta
        peak = max(peak, current)
    return peak


def test_submit_stays_within_the_quota_counting_other_users_jobs(
    roomy: Emulator, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.ids(4000)
    code, _, err = user.cli(
        user.prepare_args("quota2", ids, "--max-job-bytes", "12KB", "--part-bytes", "6KB"),
        capsys,
    )
    assert code == 0, err
    shards = len(RunState.replay(read_events(user.state / "quota2")).shards)
    assert shards >= 8
    since = time.time()
    # Another user's job, on another solution version, running when fanout starts.
    other_input = f"s3://{user.info.bucket}/in/quota2/shard-00000/"
    user.personalize.create_batch_inference_job(
        jobName="someone-else",
        solutionVersionArn=user.info.solution_versions["popularity-count"],
        jobInput={"s3DataSource": {"path": other_input}},
        jobOutput={"s3DataDestination": {"path": f"s3://{user.info.bucket}/other-out/"}},
        roleArn=user.info.role_arn,
    )
    code, out, err = user.cli(user.submit_args("quota2", "--max-concurrent-jobs", "2"), capsys)
    assert code == 0, err
    assert "active jobs    " in out
    assert in_flight_peak(roomy, since) <= 2  # ours and the other user's, seen by the service
    jobs = user.jobs("quota2")
    assert len(jobs) == shards and {j["status"] for j in jobs} == {"ACTIVE"}

    code, out, _ = user.cli(["status", "quota2", "--state-dir", str(user.state)], capsys)
    assert code == 0 and f"{shards} active" in out and "submitted" in out
    code, out, _ = user.cli(
        ["status", "quota2", "--state-dir", str(user.state), "--output", "json"], capsys
    )
    record = json.loads(out)
    assert record["jobs"] == {"active": shards}
    assert all(s["job"]["status"] == "ACTIVE" for s in record["shards"])


def test_status_and_resume_from_the_s3_journal_on_another_machine(
    user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.ids(500)
    assert user.cli(user.prepare_args("mirror", ids), capsys)[0] == 0
    assert user.cli(user.submit_args("mirror"), capsys)[0] == 0
    head = user.s3.head_object(Bucket=user.info.bucket, Key="out/mirror/_fanout/journal.jsonl")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == user.info.kms_key_arn
    body = user.s3.get_object(Bucket=user.info.bucket, Key="out/mirror/_fanout/journal.jsonl")
    text = body["Body"].read().decode()
    assert "testing" not in text and "SECRET" not in text.upper()  # no credentials, ever

    elsewhere = tmp_path / "other-machine"
    output = f"s3DataDestination={{path=s3://{user.info.bucket}/out/}}"
    code, out, err = user.cli(
        ["status", "mirror", "--state-dir", str(elsewhere), "--job-output", output,
         "--output", "json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["phase"] == "submitted"
    code, out, err = user.cli(
        ["resume", "mirror", "--state-dir", str(elsewhere), "--job-output", output], capsys
    )
    assert code == 0, err
    assert (elsewhere / "mirror" / "journal.jsonl").exists()
    assert len(user.jobs("mirror")) == 1  # nothing created twice


def _create_first_job(user: User, run: str, num_results: int) -> None:
    """Create the run's first job by hand, under the name and paths fanout gives it."""
    info = user.info
    user.personalize.create_batch_inference_job(
        jobName=f"fanout-{run}-00000",
        solutionVersionArn=info.solution_versions["user-personalization"],
        jobInput={"s3DataSource": {"path": f"s3://{info.bucket}/in/{run}/shard-00000/"}},
        jobOutput={"s3DataDestination": {"path": f"s3://{info.bucket}/out/{run}/shard-00000/"}},
        roleArn=info.role_arn,
        numResults=num_results,
    )


def test_a_job_created_just_before_a_crash_is_adopted(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = user.ids(300)
    assert user.cli(user.prepare_args("adopt", ids), capsys)[0] == 0
    # The previous process created shard 0's job as this one would, then died before
    # journalling it.
    _create_first_job(user, "adopt", num_results=5)
    code, _, err = user.cli(user.submit_args("adopt"), capsys)
    assert code == 0, err
    assert "adopted job fanout-adopt-00000" in err
    assert len(user.jobs("adopt")) == 1


def test_a_job_of_the_run_s_name_made_with_other_options_is_refused(
    user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job under the run's first job name, made with another numResults (a run of the same
    ID whose directory was deleted), is described and refused, not adopted: its results are
    not this run's."""
    ids = user.ids(300)
    assert user.cli(user.prepare_args("other", ids), capsys)[0] == 0
    _create_first_job(user, "other", num_results=3)
    code, _, err = user.cli(user.submit_args("other"), capsys)
    assert code == 1
    assert "with other options than this run's (numResults 3, not 5)" in err
    assert len(user.jobs("other")) == 1


def test_submit_usage_errors(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    ids = user.ids(10)
    assert user.cli(user.prepare_args("usage", ids), capsys)[0] == 0
    code, _, err = user.cli(
        ["submit", "usage", "--state-dir", str(user.state), "--role-arn", user.info.role_arn],
        capsys,
    )
    assert code == 2 and "missing --solution-version-arn, --job-output" in err
    code, _, err = user.cli(user.submit_args("usage", "--job-name", "x" * 50), capsys)
    assert code == 2 and "too long" in err
    inside = f"s3DataDestination={{path=s3://{user.info.bucket}/in/usage/out/}}"
    code, _, err = user.cli(user.submit_args("usage", "--job-output", inside), capsys)
    assert code == 2 and "at or under --job-input" in err
    code, _, err = user.cli(user.submit_args("nosuchrun"), capsys)
    assert code == 2 and "no run journal" in err
    assert user.jobs("usage") == []


def test_throttling_never_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = start(throttle_rate=0.5)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(2000)
        args = user.prepare_args("throttled", ids, "--max-job-bytes", "20KB")
        assert user.cli(args, capsys)[0] == 0
        code, _, err = user.cli(user.submit_args("throttled"), capsys)
        assert code == 0, err
        state = RunState.replay(read_events(user.state / "throttled"))
        assert state.submitted is not None and state.submitted["active"] == len(state.shards) > 1
    finally:
        emulator.stop()


def test_failed_jobs_are_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = start(fail_rate=0.5, seed=5)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(3000)
        args = user.prepare_args("flaky", ids, "--max-job-bytes", "10KB")
        assert user.cli(args, capsys)[0] == 0
        code, out, err = user.cli(user.submit_args("flaky", "--job-retries", "1"), capsys)
        events = read_events(user.state / "flaky")
        retried = [e for e in events if e["event"] == "job-created" and e["attempt"] == 2]
        failed = [e for e in events if e["event"] == "shard-failed"]
        assert retried, "with half the jobs failing, some must have been retried"
        assert code == (1 if failed else 0), err
        if failed:
            assert "failed 2 times" in out and "Please try again" in out
        per_shard: dict[int, int] = {}
        for job in user.jobs("flaky"):
            shard = int(job["jobName"].split("-")[2])
            per_shard[shard] = per_shard.get(shard, 0) + (job["status"] == "ACTIVE")
        assert all(count <= 1 for count in per_shard.values())  # never two ACTIVE per shard
    finally:
        emulator.stop()


def test_the_service_quota_below_fanouts_means_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = start(quota=2, job_seconds=0.1)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(2000)
        assert user.cli(user.prepare_args("tight", ids, "--max-job-bytes", "10KB"), capsys)[0] == 0
        code, _, err = user.cli(user.submit_args("tight", "--max-concurrent-jobs", "5"), capsys)
        assert code == 0, err  # botocore's 3 attempts, then fanout's wait, absorb the refusals
        assert {j["status"] for j in user.jobs("tight")} == {"ACTIVE"}
        assert in_flight_peak(emulator, 0) <= 2
    finally:
        emulator.stop()


# -- kill -9 at random moments, then resume ----------------------------------------------


def _kill_at_random(
    args: list[str], env: dict[str, str], rng: random.Random, least: float, most: float
) -> None:
    process = subprocess.Popen(
        FANOUT + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=rng.uniform(least, most))
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def _phase(run_dir: Path) -> str:
    """Where the run was when it was killed, from its journal."""
    if not (run_dir / "journal.jsonl").exists() or not read_events(run_dir):
        return "before the run began"
    state = RunState.replay(read_events(run_dir))
    if state.prepared is None:
        return f"preparing ({len(state.parts)} parts uploaded)"
    if state.submit is None:
        return "prepared"
    if state.submitted is None:
        return f"submitting ({len(state.jobs)} jobs created)"
    if state.merge is not None and state.merged is None:
        return "merging"
    return "finished"


def kill_and_resume(
    user: User, run: str, seed: int, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    """kill -9 `prepare`, resume; kill -9 `submit`, resume; check the result. Returns where
    each kill landed."""
    rng = random.Random(seed)
    ids = user.ids(20_000, f"{run}.txt")
    env = {**os.environ, **user.env}
    run_dir = user.state / run
    prepare = user.prepare_args(run, ids, "--max-job-bytes", "60KB", "--part-bytes", "20KB")
    # At a journal event, not a time: prepare became fast enough that kills at 0.7-1.8 s all
    # landed before the run began or after it was prepared, some series none while preparing.
    _kill_at_event(prepare, env, run_dir, rng, fewest=0)  # 0: at once, before the run begins
    first = _phase(run_dir)
    if first == "before the run began":
        code, _, err = user.cli(prepare, capsys)
    else:
        code, _, err = user.cli(["resume", run, "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    _kill_at_random(user.submit_args(run), env, rng, 0.7, 3.0)
    second = _phase(run_dir)
    if second == "prepared":  # killed before submit began: submit again
        code, _, err = user.cli(user.submit_args(run), capsys)
    else:
        code, _, err = user.cli(["resume", run, "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    state = RunState.replay(read_events(run_dir))
    jobs = user.jobs(run)
    names = [j["jobName"] for j in jobs]
    assert len(names) == len(set(names)) == len(state.shards)  # one job per shard, none twice
    assert {j["status"] for j in jobs} == {"ACTIVE"}
    sent = user.sent_ids(run)
    assert sorted(sent) == sorted(f"user-{i}" for i in range(20_000))  # no ID lost or doubled
    return first, second


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_then_resume(seed: int, user: User, capsys: pytest.CaptureFixture[str]) -> None:
    kill_and_resume(user, f"kill{seed}", seed, capsys)


# Twenty kills and resumes take 80-120 s here, past the suite's 120 s per test: the timeout
# stopped one inside a kill, and its process, left running, failed the next test too.
SLOW_TIMEOUT = 600


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
def test_kill_9_at_twenty_moments(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    landed = [kill_and_resume(user, f"kills{seed}", seed, capsys) for seed in range(100, 120)]
    with capsys.disabled():
        for seed, (first, second) in zip(range(100, 120), landed, strict=True):
            print(f"seed {seed}: prepare killed {first}; submit killed {second}")
    assert any(first.startswith("preparing") for first, _ in landed)
    assert any(second.startswith("submitting") for _, second in landed)


def _writes_fail_after(monkeypatch: pytest.MonkeyPatch, written: int, error: Exception) -> None:
    """S3 part writes fail with `error` from the one after the first `written` on, once those
    are written (and so journaled: that starts with no checkpoint in between, and is shielded),
    not while they are still in flight, which cancelling them would lose."""
    from fanout import upload_s3

    real_write = upload_s3.S3PartWriter.write
    count = {"started": 0, "written": 0}
    all_written: list[anyio.Event] = []

    async def write(self: Any, part: Any) -> Any:
        if not all_written:  # one per run: an Event belongs to the event loop it was made in
            all_written.append(anyio.Event())
        count["started"] += 1
        if count["started"] > written:
            await all_written[0].wait()
            raise error
        result = await real_write(self, part)
        count["written"] += 1
        if count["written"] == written:
            all_written[0].set()
        return result

    monkeypatch.setattr(upload_s3.S3PartWriter, "write", write)


def test_resume_mid_upload_skips_parts_already_uploaded(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fanout import upload_s3

    ids = user.ids(6000)
    args = user.prepare_args("midway", ids, "--max-job-bytes", "40KB", "--part-bytes", "10KB")
    real_write = upload_s3.S3PartWriter.write
    _writes_fail_after(monkeypatch, 5, OSError("the network went away"))
    assert main(args) == 1  # reported, not a traceback: resume continues it
    assert "fanout resume midway" in capsys.readouterr().err
    state = RunState.replay(read_events(user.state / "midway"))
    assert len(state.parts) == 5 and state.prepared is None
    before = len(state.parts)

    uploads: list[str] = []

    async def counting(self: Any, part: Any) -> Any:
        uploads.append(part.name)
        return await real_write(self, part)

    monkeypatch.setattr(upload_s3.S3PartWriter, "write", counting)
    code, _, err = user.cli(["resume", "midway", "--state-dir", str(user.state)], capsys)
    assert code == 0, err
    state = RunState.replay(read_events(user.state / "midway"))
    assert state.prepared is not None
    assert len(uploads) == len(state.parts) - before  # those were checked, not re-sent
    assert sorted(user.sent_ids("midway")) == sorted(f"user-{i}" for i in range(6000))
    events = read_events(user.state / "midway")
    assert len([e for e in events if e["event"] == "part-written"]) == len(state.parts)


def test_resume_refuses_an_input_that_changed(
    user: User, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fanout import upload_s3

    ids = user.ids(3000)
    args = user.prepare_args("changed", ids, "--part-bytes", "10KB")
    real_write = upload_s3.S3PartWriter.write
    _writes_fail_after(monkeypatch, 2, OSError("killed"))
    assert main(args) == 1
    journaled = [e for e in read_events(user.state / "changed") if e["event"] == "part-written"]
    assert len(journaled) == 2
    monkeypatch.setattr(upload_s3.S3PartWriter, "write", real_write)
    ids.write_text("".join(f"other-{i}\n" for i in range(3000)))
    capsys.readouterr()
    code, _, err = user.cli(["resume", "changed", "--state-dir", str(user.state)], capsys)
    assert code == 1 and "the input changed since the run started" in err


# -- crash equivalence: fanout run killed again and again gives the uninterrupted result ----------


def _kill_at_event(
    args: list[str], env: dict[str, str], run_dir: Path, rng: random.Random, fewest: int = 1
) -> None:
    """Run fanout and kill -9 it once its journal has a random number (from `fewest`) of events
    more than it had (and a random few milliseconds later): every stage gets hit, however fast
    the machine."""
    journal = run_dir / "journal.jsonl"

    def events() -> int:
        try:
            return journal.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    # A resume has fewer events left to write than a fresh run: aim within what it will write.
    target = events() + rng.randint(fewest, 60 if args[0] == "run" else 15)
    process = subprocess.Popen(
        FANOUT + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and events() < target and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.05))
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _run_to_the_end_with_kills(
    user: User, args: list[str], run: str, kills: int, rng: random.Random
) -> list[str]:
    """Start `fanout run`, kill -9 it `kills` times at random moments (resuming in between),
    then let a resume finish. Returns where each kill landed."""
    env = {**os.environ, **user.env}
    landed = []
    command = args
    for _ in range(kills):
        _kill_at_event(command, env, user.state / run, rng)
        landed.append(_phase(user.state / run))
        if landed[-1] == "before the run began":
            command = args  # nothing to resume yet
        else:
            command = ["resume", run, "--state-dir", str(user.state), "--log-format", "json"]
    if _phase(user.state / run) == "before the run began":
        result = subprocess.run(FANOUT + args, env=env, capture_output=True, text=True)
    else:
        result = subprocess.run(
            [*FANOUT, "resume", run, "--state-dir", str(user.state)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return landed


def crash_equivalence(user: User, seed: int, kills: int, order: str = "completion") -> list[str]:
    ids = user.ids(8000, f"eq{seed}.txt")
    info = user.info

    def args(run: str, out: Path) -> list[str]:
        return [
            "run", "--ids", str(ids), "--out", str(out), "--run-id", run,
            "--state-dir", str(user.state),
            "--solution-version-arn", info.solution_versions["user-personalization"],
            "--role-arn", info.role_arn, "--num-results", "5",
            "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/}}",
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/}}",
            "--max-job-bytes", "30KB", "--part-bytes", "10KB",
            "--poll-interval", "0.05", "--tps", "50", "--log-format", "json",
            "--order", order,
        ]  # fmt: skip

    clean = user.tmp / f"clean{seed}.jsonl"
    assert main(args(f"clean{seed}", clean)) == 0
    crashed = user.tmp / f"crashed{seed}.jsonl"
    run = f"crash{seed}"
    landed = _run_to_the_end_with_kills(user, args(run, crashed), run, kills, random.Random(seed))
    if order == "input":  # the same file, byte for byte, in the input's order
        assert crashed.read_bytes() == clean.read_bytes()
        wanted = ids.read_text().split()
        assert [json.loads(line)["userId"] for line in clean.read_bytes().splitlines()] == wanted
    assert sorted(crashed.read_bytes().splitlines()) == sorted(clean.read_bytes().splitlines())
    jobs = user.jobs(run)
    state = RunState.replay(read_events(user.state / run))
    active = [j["jobName"] for j in jobs if j["status"] == "ACTIVE"]
    assert len(active) == len(set(active)) == len(state.shards)
    assert not list(user.tmp.glob(f".crashed{seed}.jsonl.*"))  # no temporary file left behind
    return landed


@pytest.mark.parametrize("seed", [7, 8])
def test_crash_equivalence(seed: int, user: User) -> None:
    crash_equivalence(user, seed, kills=2)


def test_crash_equivalence_in_input_order(user: User) -> None:
    """Killed at random moments and resumed, an input-order run writes the very file a clean
    run writes, and leaves nothing held back beside it."""
    crash_equivalence(user, 9, kills=3, order="input")


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
def test_crash_equivalence_twenty_kills(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    landed = [where for seed in (20, 21, 22, 23) for where in crash_equivalence(user, seed, 5)]
    with capsys.disabled():
        print("kills landed:", landed)
    assert len(landed) == 20


def test_jobs_lost_by_the_service_are_reported_then_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    emulator = start(job_seconds=0.5)
    try:
        user = User(emulator.info, tmp_path, monkeypatch)
        ids = user.ids(3000)
        service = emulator.service

        def forget_jobs() -> None:  # the endpoint restarts and forgets every job it had
            deadline = time.monotonic() + 30
            while not service.jobs and time.monotonic() < deadline:
                time.sleep(0.01)
            with service._lock:
                service.jobs.clear()

        thread = threading.Thread(target=forget_jobs)
        thread.start()
        out = tmp_path / "recs.jsonl"
        info = user.info
        args = [
            "run", "--ids", str(ids), "--out", str(out), "--run-id", "lost",
            "--state-dir", str(user.state), "--job-retries", "0",
            "--solution-version-arn", info.solution_versions["user-personalization"],
            "--role-arn", info.role_arn,
            "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/}}",
            "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/}}",
            "--poll-interval", "0.05", "--tps", "50", "--log-format", "json",
        ]  # fmt: skip
        code, stdout, err = user.cli(args, capsys)
        thread.join()
        assert code == 1, err  # its one job is gone: not one recommendation
        assert "The job is gone" in err and "The job is gone" in stdout
        assert len((user.state / "lost" / "missing.txt").read_text().split()) == 3000
        code, _, err = user.cli(["retry", "lost", "--state-dir", str(user.state)], capsys)
        assert code == 0, err
        assert len(out.read_text().splitlines()) == 3000
    finally:
        emulator.stop()


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_at_any_stage_stops_with_one_line_and_resume_finishes(
    user: User, sigint: str
) -> None:
    """SIGTERM (a scheduler's stop) while jobs are tracked and shards merged: exit 143 and one
    line naming `fanout resume`, every time. Raised in whichever task was running (a merge
    reading S3), it used to escape that task, and asyncio logged a traceback through every task
    group at shutdown; cancelled natively as asyncio's SIGINT handler does, a merge once went on
    with its workers cancelled (`MergeError`, exit 1). Also as a script's background job, which
    ignores SIGINT (asyncio then handles no signal at all)."""
    ids = user.ids(8000, f"term-{sigint}.txt")
    info = user.info
    run = f"term-{sigint}"
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint == "ignored" else None
    args = [
        "run", "--ids", str(ids), "--out", str(user.tmp / f"{run}.jsonl"), "--run-id", run,
        "--state-dir", str(user.state),
        "--solution-version-arn", info.solution_versions["user-personalization"],
        "--role-arn", info.role_arn, "--num-results", "5",
        "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/}}",
        "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/}}",
        "--max-job-bytes", "30KB", "--poll-interval", "0.05", "--tps", "50",
    ]  # fmt: skip
    resume = ["resume", run, "--state-dir", str(user.state)]
    env = {**os.environ, **user.env}
    journal = user.state / run / "journal.jsonl"

    def count(event: bytes) -> int:
        try:
            return journal.read_bytes().count(b'"event":"' + event + b'"')
        except FileNotFoundError:
            return 0

    command = args
    for event, more in ((b"job-status", 3), (b"shard-merged", 1), (b"shard-merged", 2)):
        target = count(event) + more
        process = subprocess.Popen(FANOUT + command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=ignore)  # fmt: skip
        deadline = time.monotonic() + 60
        while process.poll() is None and count(event) < target and time.monotonic() < deadline:
            time.sleep(0.003)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        if process.returncode == 0:
            break  # it finished first
        assert process.returncode == 143, err
        assert "Traceback" not in err and "unhandled" not in err, err
        assert err.strip().splitlines()[-1].startswith("fanout: terminated; "), err
        command = resume
    result = subprocess.run(FANOUT + resume, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len((user.tmp / f"{run}.jsonl").read_text().splitlines()) == 8000
