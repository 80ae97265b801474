"""The README's commands, run as written, so CI keeps them true."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def shell_block(heading: str) -> str:
    """The first ```sh block under the given `## heading` of the README."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    env["AWS_PAGER"] = ""
    return env


def test_quick_start_names_exactly_the_two_scripts() -> None:
    """The quick start is scripts/demo and scripts/test, and .ci/run calls scripts/test."""
    commands = [line.split("#")[0].strip() for line in shell_block("Quick start").splitlines()]
    assert [c for c in commands if c] == ["scripts/demo", "scripts/test"]
    assert "exec scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_demo_accounts_for_every_user(tmp_path: Path) -> None:
    """scripts/demo runs the main job and reports every user accounted for."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo"), "--users", "3000"],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    summary = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines()
    )
    assert summary["users sent"] == "3000"
    assert summary["users missing"] == "0"
    assert int(summary["users with recommendations"]) + int(summary["users with errors"]) == 3000


@pytest.mark.awscli
def test_emulator_section_runs_with_the_aws_cli(tmp_path: Path) -> None:
    """The emulator example in the README works word for word with the AWS CLI."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    # The EXIT trap stops the emulator the block starts in the background, even on failure.
    script = f"set -eu\ntrap 'kill %1 2>/dev/null; wait' EXIT\n{shell_block('The emulator')}"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "batchInferenceJobArn" in result.stdout
    assert "results        5,000" in result.stdout  # fanout run: every ID has recommendations
    rows = (tmp_path / "recs.csv").read_text().splitlines()
    assert rows[0] == "userId,recommendedItems,scores" and len(rows) == 5001
