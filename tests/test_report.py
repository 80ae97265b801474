"""The HTML report: rows, bars and labels drawn from a journal's events, and nothing unescaped."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.errors import ConfigError
from fanout.journal import JOURNAL_NAME
from fanout.report import STAGES, render_html, write_report
from fanout.state import RunState

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script> & \"quotes\""
T0 = 1_700_000_000.0


def ev(t: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "event": event, **fields}


def started(run_id: str = "r1", shards: int = 3) -> dict[str, Any]:
    return ev(0, "run-started", run_id=run_id, ids="ids.txt", input_base="s3://b/in/",
              plan={"shards": shards}, settings={})  # fmt: skip


def ready(t: float, shard: int, records: int = 100) -> list[dict[str, Any]]:
    part = ev(t - 0.4, "part-written", shard=shard, part=0, uri=f"s3://b/in/{shard}/0",
              etag="e", nbytes=records * 10, records=records, sha256="0")  # fmt: skip
    return [part, ev(t, "shard-ready", shard=shard, parts=1, records=records,
                     nbytes=records * 10, prefix=f"s3://b/in/{shard}/")]  # fmt: skip


def created(
    t: float, shard: int, attempt: int = 1, status: str = "CREATE PENDING"
) -> dict[str, Any]:
    arn = f"arn:job/{shard}-{attempt}"
    return ev(t, "job-created", shard=shard, attempt=attempt, name=f"j{shard}-{attempt}",
              arn=arn, adopted=False, status=status, created=T0 + t)  # fmt: skip


def status(
    t: float, shard: int, attempt: int, text: str, reason: str | None = None
) -> dict[str, Any]:
    return ev(t, "job-status", shard=shard, attempt=attempt, arn=f"arn:job/{shard}-{attempt}",
              status=text, reason=reason)  # fmt: skip


def merged_shard(t: float, shard: int, results: int, errors: int, missing: int) -> dict[str, Any]:
    return ev(t, "shard-merged", shard=shard, sent=results + errors + missing, results=results,
              errors=errors, missing=missing)  # fmt: skip


SOURCE = {"lines": 311, "blank": 2, "records": 300, "duplicates": 8, "rejected": {"too-long": 1}}


def full_run() -> list[dict[str, Any]]:
    """Three shards: 0 goes straight through, 1 fails once and is retried, 2 fails twice."""
    counts = {"sent": 300, "results": 190, "errors": 10, "missing": 100}
    return [
        started(),
        *ready(1.5, 0), *ready(2.5, 1), *ready(3.0, 2),
        ev(3.1, "prepared", shards=3, records=300, nbytes=3000, source=SOURCE),
        ev(3.2, "submit-started", request={}, output_base="s3://b/out/", submit={}),
        ev(3.3, "merge-started", settings={}),
        created(4.0, 0), created(4.2, 1),
        status(5.0, 0, 1, "CREATE IN_PROGRESS"), status(5.0, 1, 1, "CREATE IN_PROGRESS"),
        status(8.0, 0, 1, "ACTIVE"), status(8.0, 1, 1, "CREATE FAILED", "out of memory"),
        created(8.5, 2), created(9.0, 1, attempt=2),
        merged_shard(9.0, 0, 90, 10, 0),
        status(10.0, 1, 2, "CREATE IN_PROGRESS"), status(10.0, 2, 1, "CREATE IN_PROGRESS"),
        status(11.0, 2, 1, "CREATE FAILED", HOSTILE),
        created(11.5, 2, attempt=2),
        status(12.0, 1, 2, "ACTIVE"),
        status(13.0, 2, 2, "CREATE FAILED", HOSTILE),
        ev(13.0, "shard-failed", shard=2, attempt=2, reason=HOSTILE, hint="see the reason"),
        merged_shard(13.5, 1, 100, 0, 0), merged_shard(13.6, 2, 0, 0, 100),
        ev(13.7, "submitted", active=2, failed=1, timed_out=0),
        ev(14.0, "merged", out="recs.csv", counts=counts),
    ]  # fmt: skip


class _Page(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def svgs(page: str) -> list[ET.Element]:
    """The page's inline SVGs, parsed as XML (so they must be well-formed)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def timeline(page: str) -> ET.Element:
    (found,) = [svg for svg in svgs(page) if svg.get("class") == "timeline"]
    return found


def bars(svg: ET.Element, shard: int) -> list[ET.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("data-shard") == str(shard)]


def stages(svg: ET.Element, shard: int) -> list[tuple[str | None, str | None]]:
    return [(r.get("data-stage"), r.get("data-attempt")) for r in bars(svg, shard)]


def assert_safe(page: str) -> None:
    """No tag or attribute the journal could have smuggled in, and no raw hostile text."""
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in {"script", "img", "iframe", "object"}]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert "<script" not in page
    assert "alert('x')" not in page


def test_one_row_per_shard_with_its_label() -> None:
    """Each shard gets one row group and one `shard N` label, both with data-shard."""
    svg = timeline(render_html(full_run()))
    rows = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "row"]
    assert [g.get("data-shard") for g in rows] == ["0", "1", "2"]
    for row in rows:
        (label,) = row.iter(f"{SVG}text")
        assert label.text == f"shard {row.get('data-shard')}"
        assert label.get("data-shard") == row.get("data-shard")
        assert all(r.get("data-shard") == row.get("data-shard") for r in row.iter(f"{SVG}rect"))


def test_stages_of_a_shard_that_went_straight_through() -> None:
    """upload → queue → pending → running → ACTIVE → merge, in that order."""
    svg = timeline(render_html(full_run()))
    assert stages(svg, 0) == [
        ("upload", None), ("queue", None), ("pending", "1"), ("running", "1"), ("active", "1"),
        ("merge", None),
    ]  # fmt: skip
    xs = [float(r.get("x", "nan")) for r in bars(svg, 0)]
    assert xs == sorted(xs)


def test_a_retry_is_drawn_as_separate_segments_with_its_attempt() -> None:
    """A failed attempt ends in a failed mark, then a wait and the next attempt's states."""
    svg = timeline(render_html(full_run()))
    assert stages(svg, 1) == [
        ("upload", None), ("queue", None), ("pending", "1"), ("running", "1"), ("failed", "1"),
        ("queue", "2"), ("pending", "2"), ("running", "2"), ("active", "2"), ("merge", None),
    ]  # fmt: skip
    (failed,) = [r for r in bars(svg, 1) if r.get("data-stage") == "failed"]
    title = failed.find(f"{SVG}title")
    assert title is not None and "out of memory" in (title.text or "")


def test_a_failed_shard_has_no_merge_bar_and_no_retry_wait_after_its_last_attempt() -> None:
    """Shard 2 failed twice: two failed marks, no ACTIVE, no merge, nothing after the last."""
    svg = timeline(render_html(full_run()))
    assert stages(svg, 2) == [
        ("upload", None), ("queue", None), ("pending", "1"), ("running", "1"), ("failed", "1"),
        ("queue", "2"), ("pending", "2"), ("failed", "2"),
    ]  # fmt: skip


def test_every_bar_has_a_known_stage_a_colour_a_width_and_a_tooltip() -> None:
    """Bars sit inside the plot, are at least a pixel wide, and say their exact times."""
    svg = timeline(render_html(full_run()))
    rects = list(svg.iter(f"{SVG}rect"))
    assert rects
    for rect in rects:
        assert rect.get("data-stage") in STAGES
        assert rect.get("fill") == STAGES[rect.get("data-stage", "")][0]
        assert float(rect.get("width", "0")) >= 1
        assert 70 <= float(rect.get("x", "0")) <= 1000
        title = rect.find(f"{SVG}title")
        assert title is not None and title.text and f"shard {rect.get('data-shard')}" in title.text
        assert " s" in title.text and "2023-11-14T" in title.text  # relative and absolute


def test_upload_bars_run_from_the_previous_shard_ready() -> None:
    """Shard 1's upload starts when shard 0 was ready; shard 0's at the run's start."""
    svg = timeline(render_html(full_run()))
    uploads = {
        r.get("data-shard"): r.find(f"{SVG}title")
        for r in svg.iter(f"{SVG}rect")
        if r.get("data-stage") == "upload"
    }
    texts = {
        shard: (title.text or "") if title is not None else "" for shard, title in uploads.items()
    }
    assert texts["0"].startswith("shard 0 · upload: 0.000 s → 1.500 s")
    assert texts["1"].startswith("shard 1 · upload: 1.500 s → 2.500 s")
    assert texts["2"].startswith("shard 2 · upload: 2.500 s → 3.000 s")


def test_time_axis_has_ticks_from_zero_in_seconds() -> None:
    """Ticks start at 0 and cover the run (14 s here), labelled in seconds."""
    svg = timeline(render_html(full_run()))
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks[0] == "0" and ticks[-1] is not None and float(ticks[-1]) >= 14
    assert any("seconds since the run started" in (t.text or "") for t in svg.iter(f"{SVG}text"))


def test_throughput_has_cumulative_uploaded_and_merged_lines() -> None:
    """Two step lines: records uploaded (part-written) and merged (results + errors)."""
    page = render_html(full_run())
    (chart,) = [svg for svg in svgs(page) if svg.get("class") == "throughput"]
    lines = {p.get("data-series"): p for p in chart.iter(f"{SVG}polyline")}
    assert set(lines) == {"uploaded", "merged"}
    uploaded = lines["uploaded"].find(f"{SVG}title")
    merged = lines["merged"].find(f"{SVG}title")
    assert uploaded is not None and "records uploaded: 300 by" in (uploaded.text or "")
    assert merged is not None and "records merged: 200 by" in (merged.text or "")
    ys = [float(p.split(",")[1]) for p in lines["uploaded"].get("points", "").split()]
    assert ys == sorted(ys, reverse=True)  # cumulative: never goes down (y grows downwards)


def test_header_shows_run_phase_records_jobs_and_reconciliation() -> None:
    """The summary table says what `fanout status` says, plus the reconciled counts."""
    text = " ".join(parse(render_html(full_run())).text)
    for expected in ("r1", "merged", "300", "3 ready of 3 planned", "2 active", "1 failed",
                     "190 results", "10 errors", "100 missing", "recs.csv",
                     "311 lines: 1 rejected (rejects.jsonl), 8 duplicates (duplicates.txt), "
                     "2 blank"):  # fmt: skip
        assert expected in text, expected


def test_header_names_kept_repeats_for_what_they_are() -> None:
    """`duplicated_in_input` (repeats sent with --keep-duplicates) reads as such, not as an
    input's duplicates (which prepare removed and counts on the input row)."""
    counts = {"sent": 300, "duplicated_in_input": 2, "results": 300, "errors": 0, "missing": 0}
    events = [*full_run()[:-1], ev(14.0, "merged", out="recs.csv", counts=counts)]
    text = " ".join(parse(render_html(events)).text)
    assert "2 sent again (--keep-duplicates)" in text and "duplicated in input" not in text


def test_header_counts_what_a_retry_added_since_the_merge() -> None:
    """After `fanout retry`, the header says what the result holds now (as `fanout status`
    does), not the first merge's counts, and names the retry."""
    retried = {"sent": 100, "results": 95, "errors": 0, "missing": 5}
    events = [*full_run(), ev(20.0, "retried", child="r1-r1", counts=retried)]
    text = " ".join(parse(render_html(events)).text)
    for expected in ("285 results", "0 errors", "5 missing", "r1-r1"):
        assert expected in text, expected
    assert "190 results" not in text


def test_a_merge_that_added_retries_names_them_and_so_do_later_retries() -> None:
    """A run merged again after `fanout retry` journals the retries its result holds: the
    header names them, and a retry after that merge as well; a merge begun anew forgets them."""
    merged = next(e for e in full_run() if e["event"] == "merged")
    again = ev(30.0, "merged", out="again.csv", counts=merged["counts"], retries=["r1-r1"])
    later = ev(40.0, "retried", child="r1-r2", counts={"results": 5, "errors": 0, "missing": 0})
    events = [*full_run(), again, later]
    state = RunState.replay(events)
    assert state.retries() == ["r1-r1", "r1-r2"]
    text = " ".join(parse(render_html(events)).text)
    assert "r1-r1, r1-r2" in text
    assert RunState.replay([*events, ev(50.0, "merge-started", settings={})]).retries() == []


def test_legend_names_every_stage_and_says_upload_is_approximate() -> None:
    """The legend has one item per stage, and the upload item admits it is approximate."""
    tags = parse(render_html(full_run())).tags
    legend = [a.get("data-stage") for t, a in tags if t == "li" and "data-stage" in a]
    assert legend == list(STAGES)
    assert "approximate" in STAGES["upload"][1]


def test_hostile_strings_from_the_journal_are_escaped() -> None:
    """A failure reason or run ID with markup shows as text, never as markup."""
    events = full_run()
    events[0] = started(run_id=HOSTILE)
    page = render_html(events)
    assert_safe(page)
    text = "".join(parse(page).text)
    assert HOSTILE in text  # shown, as text (the title, the header, the shard table)
    svgs(page)  # and the SVG stays well-formed XML
    table = re.search(r'<tr data-shard="2">.*?</tr>', page, flags=re.S)
    assert table is not None and "&lt;script&gt;" in table.group(0)


def test_a_run_still_preparing() -> None:
    """Only some shards ready: those rows, an open queue wait, no jobs, no merged line."""
    events = [started(shards=5), *ready(1.0, 0), *ready(2.0, 1), ev(2.5, "part-written", shard=2,
              part=0, uri="u", etag="e", nbytes=1, records=7, sha256="0")]  # fmt: skip
    page = render_html(events)
    svg = timeline(page)
    assert stages(svg, 0) == [("upload", None), ("queue", None)]
    (queue,) = [r for r in bars(svg, 1) if r.get("data-stage") == "queue"]
    title = queue.find(f"{SVG}title")
    assert title is not None and "when the journal ends" in (title.text or "")
    (chart,) = [s for s in svgs(page) if s.get("class") == "throughput"]
    assert [p.get("data-series") for p in chart.iter(f"{SVG}polyline")] == ["uploaded"]
    assert "preparing" in "".join(parse(page).text)
    assert "2 ready of 5 planned" in "".join(parse(page).text)


def test_a_job_without_status_events_is_pending_until_the_journal_ends() -> None:
    """A run that crashed after creating a job: its pending bar runs to the last event."""
    events = [started(shards=1), *ready(1.0, 0), created(2.0, 0), ev(5.0, "from-the-future")]
    svg = timeline(render_html(events))
    pending = [r for r in bars(svg, 0) if r.get("data-stage") == "pending"]
    (title,) = [r.find(f"{SVG}title") for r in pending]
    assert title is not None and "2.000 s → 5.000 s" in (title.text or "")


def test_only_run_started_and_no_events_at_all_render() -> None:
    """A journal with nothing to draw still gives a page, saying so."""
    assert "No shard is ready yet" in render_html([started()])
    assert "no events to draw" in render_html([])


def test_unknown_and_malformed_events_are_skipped_not_fatal() -> None:
    """Unknown kinds are counted, broken fields skipped; the rest is still drawn."""
    events: list[dict[str, Any]] = [
        *full_run(),
        ev(20.0, "from-the-future", shard=0, whatever=[1, 2]),
        {"event": "shard-ready", "t": "yesterday", "shard": 9},
        ev(21.0, "job-status", shard="zero", status="ACTIVE"),
        ev(21.0, "job-status", shard=0, attempt=1, status=None),
        ev(21.0, "shard-merged", shard=5, results="many"),
        ev(22.0, "job-created", shard=7, attempt="first", status=42),
    ]
    page = render_html(events)
    assert "1 event(s) of unknown kinds ignored" in page
    assert_safe(page)
    svg = timeline(page)
    assert {g.get("data-shard") for g in svg.iter(f"{SVG}g")} >= {"0", "1", "2"}


def test_a_journal_that_cannot_be_replayed_still_draws_its_timeline() -> None:
    """A journal whose head is lost (no run-started) says so in the header and still draws."""
    page = render_html(full_run()[3:])
    assert "cannot be replayed" in page
    assert {r.get("data-shard") for r in timeline(page).iter(f"{SVG}rect")} >= {"1", "2"}


def test_merges_count_only_from_the_last_merge_started() -> None:
    """A merge run again (resume) starts from scratch: earlier shard-merged events drop out."""
    events = [*full_run(), ev(30.0, "merge-started", settings={}), merged_shard(31.0, 0, 5, 0, 95)]
    page = render_html(events)
    (chart,) = [s for s in svgs(page) if s.get("class") == "throughput"]
    lines = {p.get("data-series"): p for p in chart.iter(f"{SVG}polyline")}
    title = lines["merged"].find(f"{SVG}title")
    assert title is not None and "records merged: 5 by 31.000 s" in (title.text or "")
    merges = [r for r in timeline(page).iter(f"{SVG}rect") if r.get("data-stage") == "merge"]
    assert [r.get("data-shard") for r in merges] == ["0"]


def write_journal(run_dir: Path, events: list[dict[str, Any]]) -> None:
    run_dir.mkdir()
    (run_dir / JOURNAL_NAME).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


def test_write_report_writes_a_private_file_atomically(tmp_path: Path) -> None:
    """The page lands at the path, 0600, with no temporary file left beside it."""
    write_journal(tmp_path / "r1", full_run())
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    out.write_text("old")
    write_report(tmp_path / "r1", out, overwrite=True)
    assert out.read_text() == render_html(full_run())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert os.listdir(out.parent) == ["report.html"]


def test_a_report_replaces_an_earlier_report_but_no_other_file(tmp_path: Path) -> None:
    """Drawing a run again replaces its page; any other file is kept unless overwrite."""
    write_journal(tmp_path / "r1", full_run())
    out = tmp_path / "report.html"
    write_report(tmp_path / "r1", out)
    write_report(tmp_path / "r1", out)  # an earlier report: replaced
    page = tmp_path / "index.html"
    page.write_text("<!DOCTYPE html><title>our dashboard</title>")
    with pytest.raises(ConfigError, match=r"index.html exists and is not a fanout report"):
        write_report(tmp_path / "r1", page)
    assert page.read_text() == "<!DOCTYPE html><title>our dashboard</title>"
    write_report(tmp_path / "r1", page, overwrite=True)
    assert page.read_text() == render_html(full_run())


def test_write_report_of_a_missing_run_or_into_a_missing_folder_is_a_config_error(
    tmp_path: Path,
) -> None:
    """No journal, or nowhere to write: a ConfigError that names the path."""
    with pytest.raises(ConfigError, match="no run journal"):
        write_report(tmp_path / "nope", tmp_path / "r.html")
    write_journal(tmp_path / "r1", full_run())
    with pytest.raises(ConfigError, match="cannot write the report"):
        write_report(tmp_path / "r1", tmp_path / "missing" / "r.html")


def test_every_event_fanout_journals_is_known_to_the_report() -> None:
    """The report counts events of kinds it does not know as "ignored"; every kind the journal
    holds (the table in `fanout.state`) is known, so a merged run's page notes none (it noted
    `results-ready` on every one)."""
    from fanout import report, state

    assert state.__doc__ is not None
    kinds = set(re.findall(r"^    ([a-z]+(?:-[a-z]+)+) ", state.__doc__, re.MULTILINE))
    assert {"run-started", "results-ready", "retry-combining", "shard-refused"} <= kinds
    assert kinds <= report._KNOWN
