"""The `fanout` command's own start and exit (`cli.entry`): output complete, codes kept, the
collector paused only while modules load, no pydantic plugins unless asked for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_FANOUT = [sys.executable, "-m", "fanout.cli"]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What `main(argv)` says on stderr as argparse refuses it (exit 2)."""
    from fanout.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_piped_output_is_complete_and_the_exit_code_is_kept(tmp_path: Path) -> None:
    """Output written just before the quick exit reaches a pipe, and the process exits with
    the code `main` returns (0 on success, an input error's own code)."""
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"user-{i}\n" for i in range(5000)))
    done = subprocess.run(
        [*_FANOUT, "plan", "--ids", str(ids), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("}") and '"records"' in done.stdout
    missing = ["plan", "--ids", str(tmp_path / "missing.txt")]
    bad = subprocess.run([*_FANOUT, *missing], capture_output=True, text=True)
    assert bad.returncode == main(missing) != 0
    assert "missing.txt" in bad.stderr


def test_a_reader_that_leaves_early_is_not_an_error() -> None:
    """`fanout … | head -1`: the pipe closes before the output is flushed; no traceback."""
    shell = f"{sys.executable} -m fanout.cli iam-policy --help | head -1"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], capture_output=True)
    assert b"Traceback" not in done.stderr


def test_a_reader_that_leaves_while_a_command_prints_is_not_an_error() -> None:
    """A broken pipe inside a command (not argparse's) exits 0 quietly: it is not taken for
    the disk errors that tell the user to resume (BrokenPipeError is an OSError too)."""
    script = (
        "import sys\n"
        "from fanout import cli\n"
        "def gone(args):\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "cli._run_plan = gone\n"
        "sys.exit(cli.main(['plan', '--ids', 'ids.txt']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_imports_run_with_the_collector_paused_and_it_comes_back() -> None:
    """`_importing` pauses the cyclic GC for a command's imports and restores it, even when they
    fail; a caller that had it off keeps it off. What exists after the imports is frozen (the
    collector's passes skip it) until `main` ends."""
    import gc

    from fanout import cli

    assert gc.isenabled()
    try:
        with cli._importing():
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    with pytest.raises(ImportError), cli._importing():
        raise ImportError("a module that is not there")
    assert gc.isenabled()
    gc.disable()
    try:
        with cli._importing():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(("given", "seen"), [(None, "__all__"), ("logfire", "logfire")])
def test_the_command_loads_no_pydantic_plugins_unless_told(
    monkeypatch: pytest.MonkeyPatch, given: str | None, seen: str
) -> None:
    """`entry` turns pydantic's plugin search off for the command (a user's own setting wins);
    `main`, which tests and embedders call, leaves it as it is."""
    from fanout import cli

    name = "PYDANTIC_DISABLE_PLUGINS"
    monkeypatch.setenv(name, given or "")  # restored (or removed) after the test
    if given is None:
        monkeypatch.delenv(name)
    during: list[str | None] = []

    def main() -> int:
        during.append(os.environ.get(name))
        return 3

    def leave(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(cli, "main", main)
    monkeypatch.setattr(os, "_exit", leave)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 3
    assert during == [seen]


@pytest.mark.parametrize(("extra", "numpy"), [("", False), ("user-7\n", True)])
def test_a_plain_prepare_does_not_import_numpy(tmp_path: Path, extra: str, numpy: bool) -> None:
    """One ID per line, none repeated, blank or rejected: the hot path passes memoryviews only,
    and numpy (60-90 ms of a start) is never imported. A repeat brings it in, to list it."""
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"user-{i}\n" for i in range(5000)) + extra)
    argv = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out")]
    argv += ["--state-dir", str(tmp_path / "state"), "--output", "json"]
    code = (
        "import sys; from fanout.cli import main; "
        f"code = main({argv!r}); print(code, 'numpy' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr.split()[-2:] == ["0", str(numpy)], done.stderr


@pytest.mark.parametrize(("name", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                    ("SIGTERM", 143, "terminated")])  # fmt: skip
def test_an_interrupted_prepare_exits_with_one_line(
    tmp_path: Path, name: str, code: int, said: str
) -> None:
    """Ctrl-C, or a scheduler's SIGTERM, in the middle of a local prepare (its source on
    threads of their own): exit code 130 (143), one line saying how to continue, no
    traceback, no half-written part left, every thread ended (the process exits)."""
    import signal
    import time

    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"".join(b"user-%08d\n" % i for i in range(3_000_000)))
    out = tmp_path / "out"
    argv = ["prepare", "--ids", str(ids), "--local-dir", str(out), "--run-id", "r"]
    argv += ["--state-dir", str(tmp_path / "state")]
    child = subprocess.Popen([*_FANOUT, *argv], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(out.glob("r/shard-*/part-*")) and child.poll() is None:
        assert time.monotonic() < deadline, "no part was started"
        time.sleep(0.005)
    child.send_signal(getattr(signal, name))
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"fanout: {said}; every finished step is in the run journal: `fanout resume r` continues"
    ), err
    assert not list(out.rglob("*.tmp")), "a half-written part was left behind"


def test_main_gives_what_it_froze_back_to_the_collector(tmp_path: Path) -> None:
    """After a command that imported its modules under `_importing` (frozen meanwhile), nothing
    stays frozen."""
    import gc

    from fanout import cli

    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    assert cli.main(["plan", "--ids", str(ids), "--json"]) == 0
    assert gc.get_freeze_count() == 0


def test_a_command_builds_only_its_own_parser_and_it_is_the_same() -> None:
    """`main` builds only the invoked command's options (the rest took 15-20 ms of every
    start); that parser is the one the whole tree has, help and all, and parses the same."""
    import argparse

    from fanout.cli import _parser

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    every = commands(_parser())
    assert len(every) == 14
    for name, whole in every.items():
        alone = commands(_parser(name))
        assert list(alone) == [name]
        assert alone[name].format_help() == whole.format_help()
    argv = ["prepare", "--ids", "x.txt", "--local-dir", "out", "--keep-duplicates"]
    assert _parser("prepare").parse_args(argv) == _parser().parse_args(argv)


def test_a_query_that_is_not_jmespath_is_refused_before_the_command_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the AWS CLI does: a bad --query is a usage error before anything is done (it was
    found only when the summary was printed, after every job had run)."""
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    out = tmp_path / "out.jsonl"
    argv = ["run", "--ids", str(ids), "--out", str(out), "--run-id", "q", "--query", "foo["]
    argv += ["--state-dir", str(tmp_path / "state"), "--endpoint-url", "http://127.0.0.1:9"]
    assert main(argv) == 2
    assert "--query 'foo['" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "state" / "q").exists()


def test_options_are_never_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    """`fanout resume RUN --out FILE` is refused: argparse took --out for --output (a choice
    of text or json) and failed with a confusing message, or worse, accepted it."""
    assert "unrecognized arguments: --out text" in usage_error(
        ["resume", "run-x", "--out", "text"], capsys
    )


def test_a_state_dir_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "Not a directory … free space or fix the cause, then `fanout resume`" (exit 1)."""
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    argv = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out")]
    assert main([*argv, "--state-dir", str(ids)]) == 2
    assert f"--state-dir {ids} is a file, not a folder" in capsys.readouterr().err
    assert main(["status", "r", "--state-dir", str(ids)]) == 2


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (20, "20"),
        (None, "None"),
        ([20, 0, None], "20\t0\tNone"),
        ([[1, "a"], [2, "b"]], "1\ta\n2\tb"),
        ({"results": 20, "errors": 0}, "0\t20"),  # by key, as the AWS CLI does
        ({"nested": {"a": 1}}, "NESTED\t1"),
        ({"r": 2000, "j": {"0": "arn:a", "1": "arn:b"}}, "2000\nJ\tarn:a\tarn:b"),
        ({}, ""),
        ({"failed": {}}, ""),
        ([], ""),
        (
            {"a": 1, "l": [1, 2], "d": {"x": [{"k": 1, "m": "z"}, {"k": 2, "n": [3]}]}},
            "1\nX\t1\tz\nX\t2\t\nN\t3\nL\t1\nL\t2",
        ),
        ([{"a": 1, "b": 2}, {"a": 3, "c": 4}], "1\t2\t\n3\t\t4"),
        ([1, [2, 3], [4, [5]]], "1\n2\t3\n4\n5"),
        (True, "True"),
    ],
)
def test_query_results_print_as_the_aws_cli_text_output(data: object, text: str) -> None:
    """`--output text --query …` gives what `read a b` can take, as the AWS CLI's does (each
    expected text is what awscli.text.format_text printed for the same data, less its last
    newline)."""
    from fanout.cli import _as_text

    assert _as_text(data) == text


def test_a_run_that_could_not_start_is_not_told_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only --state-dir: no journal was ever written, so `fanout resume` would only
    say there is no such run; the message says to fix the cause and run the command again."""
    import errno

    from fanout import pipeline
    from fanout.cli import main

    def read_only(path: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(pipeline, "private_dir", read_only)
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    argv = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out"), "--run-id", "ro"]
    assert main([*argv, "--state-dir", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "Nothing was started" in err, err
    assert "fanout resume" not in err


def test_a_config_list_for_a_one_value_option_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`num-results: [3, 7]` in --config used to mean 7 (the last of two --num-results); a
    list stays right for the options that take several values."""
    from fanout.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("num-results: [3, 7]\n")
    assert main(["run", "--config", str(config), "--ids", "x", "--out", "y.jsonl"]) == 2
    assert "num-results takes one value, not a list" in capsys.readouterr().err
    config.write_text("filter-values: [A=1, B=2]\nnum-results: [3]\n")
    assert main(["run", "--config", str(config), "--ids", "x", "--out", "y.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "num-results takes one value" in err and "filter-values" not in err


def test_the_command_line_replaces_a_config_files_list_and_a_mapping_gives_filter_values(
    tmp_path: Path,
) -> None:
    """A repeatable option on the command line replaces the file's values instead of adding to
    them (`GENRE is given twice` before); `filter-values` may be a YAML mapping."""
    from fanout.cli import _parser, _with_config

    config = tmp_path / "run.yaml"
    config.write_text(
        "filter-values: [GENRE=Comedy]\nnum-results: 5\ntags: [Key=a,Value=b]\n"
        "keep-duplicates: true\n"
    )
    argv = ["run", "--config", str(config), "--filter-values", "GENRE=Horror", "--tags", "Key=c"]
    tokens = _with_config(argv, _parser())
    assert tokens.count("--filter-values") == 1 and "GENRE=Horror" in tokens
    assert tokens.count("--tags") == 1 and "Key=a,Value=b" not in tokens
    assert "--keep-duplicates" in tokens and tokens[tokens.index("--num-results") + 1] == "5"
    config.write_text('filter-values: {GENRE: [Comedy, "Sci-Fi, Fantasy"], DECADE: 1990s}\n')
    tokens = _with_config(["run", "--config", str(config)], _parser())
    values = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--filter-values"]
    assert values == ['GENRE=["Comedy", "Sci-Fi, Fantasy"]', "DECADE=1990s"]


@pytest.mark.parametrize("command", ["prepare", "run", "segment"])
def test_an_empty_run_id_is_refused_not_replaced_by_a_new_one(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--run-id "$RUN"` with RUN unset made a new run every night instead of an error."""
    argv = [command, "--ids", "x", "--local-dir", "y", "--run-id", ""]
    assert "argument --run-id: empty: give 1 to 32 letters" in usage_error(argv, capsys)


def test_prepares_text_summary_shows_the_rejects_by_reason_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rejects by reason were printed as a Python dict (`{'wrong-shape': 1}`)."""
    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"u1\nbad\x01\n\xff\nu2\n")
    out, state = str(tmp_path / "out"), str(tmp_path / "state")
    assert main(["prepare", "--ids", str(ids), "--local-dir", out, "--state-dir", state]) == 0
    text = capsys.readouterr().out
    assert re.search(r"rejected_by_reason +(control-character 1, invalid-utf8 1|"
                     r"invalid-utf8 1, control-character 1)\n", text), text  # fmt: skip
    assert "{" not in text


def test_spaces_around_filter_values_are_not_part_of_them() -> None:
    """`GENRE=comedy, drama` sent " drama", which matches no item: the spaces around each value
    go; a JSON list keeps every character; a value of spaces only is an empty value."""
    from fanout.cli import _filter_values
    from fanout.errors import ConfigError

    assert _filter_values(["GENRE=comedy, drama ", "DECADE= 1990s"]) == {
        "GENRE": ["comedy", "drama"],
        "DECADE": ["1990s"],
    }
    assert _filter_values(['GENRE=["comedy", " drama"]']) == {"GENRE": ["comedy", " drama"]}
    with pytest.raises(ConfigError, match="empty value"):
        _filter_values(["GENRE=comedy, ,drama"])


def test_an_unknown_option_is_refused_with_its_commands_usage_and_a_config_key_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout retry R --tps 1` showed fanout's top-level usage; a key of --config that is no
    option said "unrecognized arguments: --numresults 5", naming no file."""
    from fanout.cli import main

    err = usage_error(["retry", "r", "--tps", "1"], capsys)
    assert err.startswith("usage: fanout retry ") and "unrecognized arguments: --tps 1" in err
    config = tmp_path / "run.yaml"
    config.write_text("numresults: 5\n")
    assert main(["run", "--config", str(config), "--ids", "x", "--out", "y.jsonl"]) == 2
    assert (
        f"--config {config}: numresults is not an option of fanout run (did you mean "
        "num-results?)" in capsys.readouterr().err
    )


def test_a_path_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Latin-1 file name came as a traceback from the journal's JSON (and left an empty
    journal that blocked the run ID); it is refused up front, naming the bytes."""
    from fanout.cli import main

    name = os.fsdecode(b"ids_\xe9.txt")  # as the system passes a Latin-1 name
    (tmp_path / name).write_text("a\n")
    state = tmp_path / "state"
    argv = ["prepare", "--ids", str(tmp_path / name), "--local-dir", str(tmp_path / "out")]
    assert main([*argv, "--state-dir", str(state), "--run-id", "lat"]) == 2
    err = capsys.readouterr().err
    assert "ids_\\xe9.txt' is not valid UTF-8" in err and "Traceback" not in err
    assert not state.exists()


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("s3://bkt//out/", "did you mean s3://bkt/out/?"),
        ("s3DataDestination={path=bkt/out/}", "path must be s3://BUCKET/PREFIX/"),
    ],
)
def test_status_job_output_takes_a_bare_path_and_says_what_is_wrong_with_a_bad_one(
    capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    """A bad --job-output of status/resume was a pydantic traceback; a bare s3://…/ path (as
    iam-policy takes it) was refused."""
    from fanout.cli import _job_output_path, main

    assert _job_output_path("s3://bkt/out/") == "s3://bkt/out/"
    assert main(["status", "r", "--job-output", given]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fanout: ConfigError: --job-output {given}: ") and said in err


def test_a_write_error_names_the_file_it_could_not_write() -> None:
    """`fanout: No space left on device.` said nothing of which disk: an OSError without a
    file name gets the file being written."""
    import errno

    from fanout.errors import naming

    with pytest.raises(OSError) as caught, naming("/data/recs.jsonl"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == "/data/recs.jsonl" and caught.value.errno == errno.ENOSPC
    with pytest.raises(FileNotFoundError) as found, naming("/data/recs.jsonl"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/other")
    assert found.value.filename == "/other"  # a name it had is kept


def test_merge_from_to_an_s3_dataset_says_it_writes_a_local_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fanout.cli import main

    assert main(["merge", "--from", str(tmp_path), "--out", "s3://bkt/results/"]) == 2
    assert "merge --from writes one local file" in capsys.readouterr().err


def test_status_prepare_and_merge_from_print_yaml_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-27: `--output yaml` was run's alone; status, prepare, merge and retry refused it."""
    import json

    import yaml

    from fanout.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    state = ["--state-dir", str(tmp_path / "state")]
    argv = ["prepare", "--ids", str(ids), "--local-dir", str(tmp_path / "out"), "--run-id", "y"]
    assert main([*argv, *state, "--output", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["records"] == 2
    assert main(["status", "y", *state, "--output", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["status", "y", *state, "--output", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == as_json


def _stop_inside_arun(
    raises: Exception | None, sigint: Any
) -> tuple[type[BaseException] | None, list[str]]:
    """`cli._arun` of a command that sends itself SIGTERM, with SIGINT set to `sigint` around
    it; what `_arun` raised, and what the command's tasks saw."""
    import signal

    import anyio
    import anyio.lowlevel

    from fanout import cli

    seen: list[str] = []

    async def task(name: str) -> None:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            seen.append(f"{name} cancelled")
            raise
        finally:
            with anyio.CancelScope(shield=True):  # a journal write, say: still done
                await anyio.lowlevel.checkpoint()
            seen.append(f"{name} unwound")

    async def command() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(task, "child")
            await anyio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                await task("main")
            finally:
                if raises is not None:
                    raise raises  # what a merge whose workers were cancelled says

    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGTERM, cli._on_sigterm)
    try:
        cli._arun(command)
    except BaseException as exc:  # what it raised is the result
        return type(exc), seen
    finally:
        assert signal.getsignal(signal.SIGINT) is sigint, "SIGINT's handler was not put back"
        signal.signal(signal.SIGINT, before_int)
        signal.signal(signal.SIGTERM, before_term)
        cli._terminated.clear()
        cli._stop_asked.clear()
    return None, seen


@pytest.mark.parametrize("sigint", ["default", "ignored"])
@pytest.mark.parametrize("raises", [None, "MergeError"])
def test_sigterm_cancels_the_commands_tasks_and_ends_as_an_interruption(
    sigint: str, raises: str | None
) -> None:
    """SIGTERM stops a command's async part by cancelling every task under one cancel scope:
    each task sees the cancellation where it waits and unwinds (a shielded cleanup still runs),
    and `_arun` raises KeyboardInterrupt after, which `main` reports as 143. Also where SIGINT
    is ignored (a script's background job), where a KeyboardInterrupt used to be raised in
    whichever task was running and asyncio printed a traceback of every task group around it;
    and when the command then fails (a merge whose workers were cancelled): the failure is the
    stop's doing, not the run's."""
    import signal

    from fanout.errors import MergeError

    handler = signal.default_int_handler if sigint == "default" else signal.SIG_IGN
    error = MergeError("8000 input lines but 3457 accounted for") if raises else None
    raised, seen = _stop_inside_arun(error, handler)
    assert raised is KeyboardInterrupt
    assert sorted(seen) == ["child cancelled", "child unwound", "main cancelled", "main unwound"]


def test_a_stop_asked_before_the_async_part_began_is_honoured_there() -> None:
    """helper-32: SIGTERM in the first second raised KeyboardInterrupt inside a `__del__`,
    where Python only prints it, and the run went on to exit 0. The stop is remembered: the
    command's async part does not begin, and the command ends as interrupted."""
    from fanout import cli

    began: list[bool] = []

    async def command() -> None:
        began.append(True)

    cli._stop_asked.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            cli._arun(command)
    finally:
        cli._stop_asked.clear()
    assert began == []


def test_an_interruption_says_how_to_go_on_only_where_that_works(tmp_path: Path) -> None:
    """helper-32: a run interrupted before its journal began was told `fanout resume RUN`,
    which then found no journal (exit 2); a `fanout merge RUN --out NEW` interrupted before
    it journalled its start was told the same, and the resume finished the run's earlier merge
    (exit 0, no NEW)."""
    import argparse

    from fanout import cli

    state = tmp_path / "state"
    (state / "begun").mkdir(parents=True)
    (state / "begun" / "journal.jsonl").write_text('{"event":"run-started"}\n')
    (state / "empty").mkdir()
    (state / "empty" / "journal.jsonl").write_text("")

    def said(command: str, run: str) -> str:
        args = argparse.Namespace(command=command, run_id=run, state_dir=state)
        return cli._how_to_go_on(args)

    assert said("run", "begun").endswith("`fanout resume begun` continues")
    for run in ("empty", "none"):
        assert (
            said("run", run)
            == f"; run {run} had not begun (nothing was uploaded): run the command again"
        )
    assert (
        said("merge", "begun") == "; run the same `fanout merge begun …` again to write its results"
    )
    assert said("retry", "begun") == "; `fanout status begun` says how to finish the retry"
