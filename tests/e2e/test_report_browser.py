"""The report of a real run, opened in headless Chromium with JavaScript off: every shard's row
and bars are laid out on screen, and nothing is fetched from anywhere.

Needs the system's Chromium (Debian: `apt-get install chromium`) and the playwright package;
skipped, saying which is missing, without them. `FANOUT_CHROMIUM` names another binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated import User

from fanout.cli import main
from fanout.emulator import Emulator
from fanout.journal import read_events
from fanout.report import STAGES, render_html, write_report
from fanout.state import RunState

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def _find_chromium() -> tuple[str | None, str]:
    """The browser binary, or None and why the browser tests cannot run."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # pragma: no cover - dev installs have it
        return None, f"the playwright package is not installed ({exc}): scripts/install adds it"
    named = os.environ.get("FANOUT_CHROMIUM")
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None or not Path(found).exists():
        missing = f" ({named} does not exist)" if named else ""
        return None, (
            f"no Chromium for the browser test{missing}: install Debian's `chromium`, or set "
            "FANOUT_CHROMIUM to a Chromium binary"
        )
    return found, ""


CHROMIUM, WHY_NOT = _find_chromium()
# Decided at collection, so a machine without a browser skips before any emulator run.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=WHY_NOT)


@pytest.fixture
def chromium() -> str:
    assert CHROMIUM is not None
    return CHROMIUM


class Opened:
    """A report page in headless Chromium, JavaScript off, with every request it made."""

    def __init__(self, page: Any, path: Path) -> None:
        self.page = page
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.goto(path.as_uri())
        page.screenshot(path=str(path.with_suffix(".png")), full_page=True)

    def box(self, selector: str) -> dict[str, float]:
        found: dict[str, float] | None = self.page.locator(selector).bounding_box()
        assert found is not None, f"{selector} is not laid out"
        return found


@contextlib.contextmanager
def opened(executable: str, path: Path) -> Iterator[Opened]:
    """Open `path` in a new browser. Only outside fanout's own event loops: playwright's sync
    API keeps one running in this thread while the browser is open."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            context = browser.new_context(
                java_script_enabled=False, viewport={"width": 1200, "height": 900}
            )
            yield Opened(context.new_page(), path)
        finally:
            browser.close()


def _visible(box: dict[str, float] | None) -> bool:
    return box is not None and box["width"] > 0 and box["height"] > 0


def test_report_of_a_real_run_shows_every_shard_row(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    chromium: str,
) -> None:
    """A 4-shard, 2-wave run: 4 visible rows in shard order, each with non-empty bars through
    merge, inside the chart; both throughput lines drawn; only the file itself was loaded."""
    user = User(emulator.info, tmp_path, monkeypatch)
    info, key = user.info, user.info.kms_key_arn
    code = main([
        "run", "--ids", str(user.ids(4000)), "--out", str(tmp_path / "recs.jsonl"),
        "--run-id", "seen", "--state-dir", str(user.state),
        "--solution-version-arn", info.solution_versions["user-personalization"],
        "--role-arn", info.role_arn,
        "--job-input", f"s3DataSource={{path=s3://{info.bucket}/in/,kmsKeyArn={key}}}",
        "--job-output", f"s3DataDestination={{path=s3://{info.bucket}/out/,kmsKeyArn={key}}}",
        "--poll-interval", "0.05", "--tps", "50", "--log-format", "json",
        "--max-job-bytes", "20KB", "--max-concurrent-jobs", "2",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    shards = sorted(RunState.replay(read_events(user.state / "seen")).shards)
    assert len(shards) >= 3
    report = tmp_path / "seen.html"
    write_report(user.state / "seen", report)

    with opened(chromium, report) as view:
        check_real_report(view, report, shards)


def check_real_report(view: Opened, report: Path, shards: list[int]) -> None:
    page = view.page
    assert view.requests == [report.as_uri()]
    rows = page.locator("svg.timeline g.row[data-shard]")
    assert rows.count() == len(shards)
    assert [rows.nth(i).get_attribute("data-shard") for i in range(len(shards))] == [
        str(n) for n in shards
    ]
    chart = view.box("svg.timeline")
    tops = []
    for number in shards:
        row = page.locator(f'svg.timeline g.row[data-shard="{number}"]')
        assert row.is_visible()
        label = row.locator("text.label")
        assert label.text_content() == f"shard {number}" and _visible(label.bounding_box())
        bars = row.locator("rect[data-stage]")
        drawn = {bars.nth(i).get_attribute("data-stage") for i in range(bars.count())}
        assert {"upload", "queue", "active", "merge"} <= drawn <= set(STAGES)
        for i in range(bars.count()):
            box = bars.nth(i).bounding_box()
            assert _visible(box), f"shard {number}: bar {i} has an empty box"
            assert chart["x"] <= box["x"] <= chart["x"] + chart["width"]
            assert chart["y"] <= box["y"] <= chart["y"] + chart["height"]
        tops.append(view.box(f'svg.timeline text.label[data-shard="{number}"]')["y"])
    assert tops == sorted(tops) and len(set(tops)) == len(tops)  # one row under the other
    for series in ("uploaded", "merged"):
        assert _visible(
            page.locator(f'svg.throughput polyline[data-series="{series}"]').bounding_box()
        )
    assert page.locator("tr[data-shard]").count() == len(shards)


def test_hostile_partial_journal_renders_as_text(tmp_path: Path, chromium: str) -> None:
    """A crashed run with markup in its run ID and failure reason: the markup shows as text, no
    element comes from it, and the rows drawn so far are on screen."""
    hostile = '<img src="http://127.0.0.1:9/x" onerror="x()"><b>bold</b>'
    t0 = 1_700_000_000.0
    events: list[dict[str, Any]] = [
        {"t": t0, "event": "run-started", "run_id": hostile, "plan": {"shards": 4}, "settings": {}},
        {"t": t0 + 1, "event": "shard-ready", "shard": 0, "parts": 1, "records": 5, "nbytes": 50,
         "prefix": "p/"},
        {"t": t0 + 2, "event": "job-created", "shard": 0, "attempt": 1, "name": "j", "arn": "a"},
        {"t": t0 + 3, "event": "job-status", "shard": 0, "attempt": 1, "arn": "a",
         "status": "CREATE FAILED", "reason": hostile},
        {"t": t0 + 3.5, "event": "shard-ready", "shard": 1, "parts": 1, "records": 5,
         "nbytes": 50, "prefix": "q/"},
        {"t": t0 + 4, "event": "something-new", "shard": 0},
    ]  # fmt: skip
    report = tmp_path / "hostile.html"
    report.write_text(render_html(events))
    with opened(chromium, report) as view:
        page = view.page
        assert view.requests == [report.as_uri()]  # the <img> was never an element
        assert page.locator("img, b, script").count() == 0
        assert hostile in page.locator("h1").inner_text()
        assert page.locator("svg.timeline g.row[data-shard]").count() == 2
        failed = page.locator('rect[data-shard="0"][data-stage="failed"]')
        assert _visible(failed.bounding_box())
        assert hostile in (failed.locator("title").text_content() or "")
