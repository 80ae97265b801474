"""What `fanout report` writes: one self-contained HTML page (inline CSS and SVG) of a run's
journal, a timeline of every shard's stages and the records uploaded and merged over time.

The page is drawn from the events alone and never fails on what it is given: a run still
preparing, a run that crashed, unknown events, malformed fields (skipped) all render. Every
string that comes from the journal is escaped. Times are seconds since `run-started` (or the
first event) on the axis, and absolute UTC times in each bar's tooltip.

Rows carry `data-shard="N"`, bars `data-stage="upload|queue|pending|running|active|failed|merge"`
and the throughput lines `data-series="uploaded|merged"`, so tests (and people) can find them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .journal import read_events
from .records import JobStatus
from .state import RunState
from .status import phase

__all__ = ["STAGES", "render_html", "write_report"]

# Stage → (colour, legend text), in the order a shard goes through them.
STAGES: dict[str, tuple[str, str]] = {
    "upload": ("#9ecae9", "upload (approximate: from the previous shard ready)"),
    "queue": ("#c7c7c7", "queued for a job slot"),
    "pending": ("#f1c232", "job CREATE PENDING"),
    "running": ("#4e79a7", "job CREATE IN_PROGRESS"),
    "active": ("#3b9a48", "job ACTIVE"),
    "failed": ("#d62728", "job CREATE FAILED"),
    "merge": ("#9467bd", "merge (job ACTIVE → shard merged)"),
}
_MARKERS = {"active", "failed"}  # instants: drawn as a narrow mark
_SERIES = {"uploaded": "#1f77b4", "merged": "#9467bd"}

# Geometry of the charts (SVG user units; the SVG scales to the page's width).
_WIDTH = 1000
_LABEL = 80  # left margin: row labels
_RIGHT = 20
_ROW = 18
_GAP = 6
_AXIS = 28
_CHART = 180  # the throughput plot's height
_MARK = 3  # width of an instant
_MAX_ROWS = 2000  # past this, rows are elided (the page stays a few MB)


@dataclass(slots=True)
class _Bar:
    shard: int
    stage: str
    start: float  # epoch seconds
    end: float
    attempt: int | None = None
    note: str = ""


@dataclass(slots=True)
class _Open:
    stage: str
    start: float
    attempt: int | None
    note: str = ""


@dataclass(slots=True)
class _Shard:
    records: int | None = None
    attempt: int | None = None  # the latest attempt's number
    status: str | None = None  # its status text
    reason: str | None = None  # why the latest attempt failed, or the shard-failed reason
    failed: bool = False
    timed_out: bool = False
    active_at: float | None = None
    merged: Mapping[str, Any] | None = None


@dataclass(slots=True)
class _Timeline:
    """The journal folded into bars and counts; built by `_fold`."""

    t0: float | None = None
    t1: float | None = None
    bars: list[_Bar] = field(default_factory=list)
    shards: dict[int, _Shard] = field(default_factory=dict)
    uploaded: list[tuple[float, int]] = field(default_factory=list)  # (t, cumulative records)
    merged: list[tuple[float, int]] = field(default_factory=list)
    unknown: int = 0  # events of kinds this fanout does not know
    skipped: int = 0  # events too malformed to draw


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _stage_of(status: str) -> str:
    return {
        JobStatus.PENDING: "pending",
        JobStatus.IN_PROGRESS: "running",
        JobStatus.ACTIVE: "active",
        JobStatus.FAILED: "failed",
    }[JobStatus.parse(status)]


_KNOWN = {
    "run-started", "part-written", "shard-ready", "prepared", "submit-started", "job-created",
    "job-status", "job-timeout", "shard-failed", "shard-refused", "submitted", "merge-started",
    "shard-merged", "results-ready", "merged", "retry-started", "retry-combining", "retried",
}  # fmt: skip


class _Folder:
    """Walks the events once, opening and closing each shard's current segment."""

    def __init__(self) -> None:
        self.line = _Timeline()
        self.open: dict[int, _Open] = {}
        self.last_ready: float | None = None
        self.uploaded = 0
        self.merges: dict[int, tuple[float, int]] = {}  # shard → (t, results + errors)

    def shard(self, number: int) -> _Shard:
        return self.line.shards.setdefault(number, _Shard())

    def close(self, shard: int, t: float, note: str = "") -> None:
        current = self.open.pop(shard, None)
        if current is not None:
            text = "; ".join(part for part in (current.note, note) if part)
            bar = _Bar(shard, current.stage, current.start, t, current.attempt, text)
            self.line.bars.append(bar)

    def status(self, number: int, t: float, attempt: int, status: str, reason: str | None) -> None:
        shard = self.shard(number)
        shard.status, shard.reason = status, reason
        self.close(number, t)
        stage = _stage_of(status)
        if stage not in _MARKERS:
            self.open[number] = _Open(stage, t, attempt, f"status {status}")
            return
        note = f"{status}: {reason}" if reason else status
        self.line.bars.append(_Bar(number, stage, t, t, attempt, note))
        if stage == "active":
            shard.active_at = t
        else:
            self.open[number] = _Open("queue", t, attempt + 1, "waiting to retry")

    def apply(self, event: Mapping[str, Any], t: float) -> None:
        kind = event.get("event")
        number = _int(event.get("shard"))
        if kind == "part-written" and number is not None:
            self.uploaded += _int(event.get("records")) or 0
            self.line.uploaded.append((t, self.uploaded))
        elif kind == "shard-ready" and number is not None:
            start = self.last_ready if self.last_ready is not None else self.line.t0
            start = t if start is None else start
            self.line.bars.append(_Bar(number, "upload", start, t))
            self.last_ready = t
            self.shard(number).records = _int(event.get("records"))
            self.close(number, t)
            self.open[number] = _Open("queue", t, None)
        elif kind == "job-created" and number is not None:
            new = _int(event.get("attempt")) or 1
            shard = self.shard(number)
            shard.attempt, shard.reason, shard.active_at = new, None, None
            self.status(number, t, new, str(event.get("status") or "PENDING"), None)
        elif kind == "job-status" and number is not None:
            attempt = _int(event.get("attempt"))
            if attempt is None or attempt != self.shard(number).attempt:
                return  # about an attempt that has since been replaced
            text = event.get("status")
            if not isinstance(text, str):
                raise TypeError("job-status without a status")
            self.status(number, t, attempt, text, _text(event.get("reason")))
        elif kind == "job-timeout" and number is not None:
            self.shard(number).timed_out = True
            self.close(number, t, "fanout stopped waiting (--job-timeout)")
        elif kind == "shard-failed" and number is not None:
            shard = self.shard(number)
            shard.failed, shard.reason = True, _text(event.get("reason")) or shard.reason
            current = self.open.get(number)
            if current is not None and current.stage == "queue" and current.attempt is not None:
                del self.open[number]  # the retry that will not come: nothing to draw
            self.close(number, t, "no more attempts")
        elif kind == "shard-refused" and number is not None:
            self.shard(number).reason = _text(event.get("reason"))
            self.close(number, t, "no job: its input on S3 changed; the run stopped")
        elif kind == "merge-started":
            self.merges.clear()  # a merge starts from scratch: only the last one counts
            for shard in self.line.shards.values():
                shard.merged = None
        elif kind == "shard-merged" and number is not None:
            done = (_int(event.get("results")) or 0) + (_int(event.get("errors")) or 0)
            self.merges[number] = (t, done)
            self.shard(number).merged = event
        elif kind not in _KNOWN:
            self.line.unknown += 1

    def finish(self) -> _Timeline:
        line = self.line
        end = line.t1 if line.t1 is not None else 0.0
        for number in list(self.open):
            self.close(number, end, "still open when the journal ends")
        total = 0
        for number, (t, done) in sorted(self.merges.items(), key=lambda item: item[1][0]):
            total += done
            line.merged.append((t, total))
            active = line.shards[number].active_at
            if active is not None:
                line.bars.append(_Bar(number, "merge", active, t, None, f"{done:,} records"))
        return line


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _fold(events: Iterable[object]) -> _Timeline:
    folder = _Folder()
    line = folder.line
    timed: list[tuple[Mapping[str, Any], float]] = []
    for event in events:
        t = _num(event.get("t")) if isinstance(event, Mapping) else None
        if t is None or not isinstance(event, Mapping):
            line.skipped += 1
            continue
        timed.append((event, t))
    if not timed:
        return line
    # The run's start is run-started's time: the first event, and the earliest, in any journal
    # fanout wrote; the earliest time keeps a stray event from falling left of the axis.
    line.t0 = min(t for _, t in timed)
    line.t1 = max(t for _, t in timed)
    for event, t in timed:
        try:
            folder.apply(event, t)
        except (TypeError, ValueError):  # a field of an unexpected type
            line.skipped += 1
    return folder.finish()


# Rendering ---------------------------------------------------------------------------------


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.3f}"


def _nice_step(span: float, ticks: int) -> float:
    """A 1-2-5 step that cuts `span` into about `ticks` intervals."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3g}"


class _Scale:
    """Seconds since the run's start → x in the SVG."""

    def __init__(self, t0: float, t1: float) -> None:
        self.t0 = t0
        self.span = max(t1 - t0, 1e-3)
        self.step = _nice_step(self.span, 8)
        self.top = math.ceil(self.span / self.step - 1e-9) * self.step

    def x(self, t: float) -> float:
        return _LABEL + (t - self.t0) / self.top * (_WIDTH - _LABEL - _RIGHT)

    def ticks(self) -> list[float]:
        count = round(self.top / self.step)
        return [i * self.step for i in range(count + 1)]


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _time_axis(scale: _Scale, y: float, height: float) -> list[str]:
    """Grid lines down the chart and tick labels below it."""
    out = []
    for tick in scale.ticks():
        x = scale.x(scale.t0 + tick)
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + height:.1f}"/>'
            f'<text class="tick" x="{x:.1f}" y="{y + height + 14:.1f}" '
            f'text-anchor="middle">{_fmt(tick)}</text>'
        )
    out.append(
        f'<text class="axis" x="{_WIDTH - _RIGHT}" y="{y + height + _AXIS:.1f}" '
        'text-anchor="end">seconds since the run started</text>'
    )
    return out


def _bar_svg(bar: _Bar, scale: _Scale, y: float) -> str:
    x0, x1 = scale.x(bar.start), scale.x(max(bar.end, bar.start))
    if bar.stage in _MARKERS:
        x0, width = x0 - _MARK, float(_MARK)  # ends where the next segment starts
    else:
        width = max(x1 - x0, 1.0)
    colour = STAGES[bar.stage][0]
    start, end = bar.start - scale.t0, bar.end - scale.t0
    what = f"shard {bar.shard} · {bar.stage}"
    if bar.attempt is not None:
        what += f" · attempt {bar.attempt}"
    if bar.stage in _MARKERS:
        when = f"at {start:.3f} s ({_utc(bar.start)})"
    else:
        when = (
            f"{start:.3f} s → {end:.3f} s ({bar.end - bar.start:.3f} s; "
            f"{_utc(bar.start)} → {_utc(bar.end)})"
        )
    tip = f"{what}: {when}" + (f" · {bar.note}" if bar.note else "")
    attempt = f' data-attempt="{bar.attempt}"' if bar.attempt is not None else ""
    return (
        f'<rect class="bar" data-shard="{bar.shard}" data-stage="{bar.stage}"{attempt} '
        f'x="{x0:.2f}" y="{y:.1f}" width="{width:.2f}" height="{_ROW}" fill="{colour}">'
        f"<title>{_attr(tip)}</title></rect>"
    )


def _timeline_svg(line: _Timeline, scale: _Scale, rows: list[int]) -> str:
    by_shard: dict[int, list[_Bar]] = {}
    for bar in line.bars:
        by_shard.setdefault(bar.shard, []).append(bar)
    height = len(rows) * (_ROW + _GAP) + _GAP
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" '
        f'viewBox="0 0 {_WIDTH} {height + _AXIS + 8}" role="img" '
        'aria-label="timeline: one row per shard">',
        *_time_axis(scale, 0, height),
    ]
    for index, number in enumerate(rows):
        y = _GAP + index * (_ROW + _GAP)
        out.append(f'<g class="row" data-shard="{number}">')
        out.append(
            f'<text class="label" data-shard="{number}" x="{_LABEL - 6}" y="{y + _ROW - 5:.1f}" '
            f'text-anchor="end">shard {number}</text>'
        )
        order = sorted(by_shard.get(number, []), key=lambda b: (b.start, b.stage not in _MARKERS))
        out.extend(_bar_svg(bar, scale, y) for bar in order)
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _throughput_svg(line: _Timeline, scale: _Scale) -> str:
    top = max([n for _, n in line.uploaded + line.merged] or [0])
    step = _nice_step(float(top), 4) if top else 1.0
    ymax = math.ceil(top / step - 1e-9) * step if top else 1.0

    def y(value: float) -> float:
        return 8 + _CHART - value / ymax * _CHART

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="throughput" '
        f'viewBox="0 0 {_WIDTH} {_CHART + 8 + _AXIS + 8}" role="img" '
        'aria-label="records uploaded and merged over time">',
        *_time_axis(scale, 8, _CHART),
    ]
    value = 0.0
    while value <= ymax + 1e-9:
        out.append(
            f'<line class="grid" x1="{_LABEL}" y1="{y(value):.1f}" x2="{_WIDTH - _RIGHT}" '
            f'y2="{y(value):.1f}"/><text class="tick" x="{_LABEL - 6}" y="{y(value) + 4:.1f}" '
            f'text-anchor="end">{_fmt(value)}</text>'
        )
        value += step
    for name, points in (("uploaded", line.uploaded), ("merged", line.merged)):
        if not points:
            continue
        coords = [(scale.x(scale.t0), y(0))]
        previous = 0
        for t, total in points:
            coords += [(scale.x(t), y(previous)), (scale.x(t), y(total))]
            previous = total
        text = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        last_t = points[-1][0] - scale.t0
        out.append(
            f'<polyline data-series="{name}" fill="none" stroke="{_SERIES[name]}" '
            f'stroke-width="2" points="{text}"><title>records {name}: {previous:,} '
            f"by {last_t:.3f} s</title></polyline>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _summary(events: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], str | None]:
    """Header rows (name, escaped value) and the run's ID, if the journal replays."""
    try:
        return _summary_rows(RunState.replay(events))
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as exc:
        first = events[0] if events and isinstance(events[0], Mapping) else {}
        rows = [
            ("run", escape(str(first.get("run_id", "unknown")))),
            ("journal", escape(f"cannot be replayed: {exc}")),
        ]
        return rows, None


# The reconciled counts whose field names read wrong on their own.
_COUNTED = {
    "duplicated_in_input": "sent again (--keep-duplicates)",
    "duplicated_in_output": "answered twice",
}


def _input_row(state: RunState) -> list[tuple[str, str]]:
    """What prepare made of every input line (as the run's summary says it), once prepared."""
    try:
        counted = state.input_lines()
    except (KeyError, TypeError, ValueError, AttributeError):  # a journal of another shape
        return []
    if not counted:
        return []
    text = (
        f"{counted['lines']:,} lines: {counted['rejected']:,} rejected (rejects.jsonl), "
        f"{counted['duplicates']:,} duplicates (duplicates.txt), {counted['blank']:,} blank"
    )
    return [("input", escape(text))]


def _summary_rows(state: RunState) -> tuple[list[tuple[str, str]], str]:
    plan = state.start.get("plan")
    planned = plan.get("shards") if isinstance(plan, Mapping) else None
    jobs = ", ".join(f"{n} {k}" for k, n in sorted(state.counts().items()))
    rows = [
        ("run", escape(state.run_id)),
        ("phase", escape(phase(state))),
        ("started", escape(_utc(state.started))),
        ("last event", escape(_utc(state.last_event or state.started))),
        ("duration", f"{max(state.last_event - state.started, 0.0):,.3f} s"),
        ("records", f"{sum(s.records for s in state.shards.values()):,}"),
        *_input_row(state),
        ("shards", escape(f"{len(state.shards)} ready of {planned or '?'} planned")),
        ("jobs", escape(jobs or "none yet")),
    ]
    if state.merged is not None:
        reconciled = state.reconciled()  # with what `fanout retry` added since the merge
        if isinstance(reconciled, Mapping):
            text = ", ".join(
                f"{v:,} {_COUNTED.get(str(k), str(k).replace('_', ' '))}"
                for k, v in reconciled.items()
            )
            rows.append(("reconciled", escape(text)))
        if retries := state.retries():
            text = f"{', '.join(retries)} (fanout retry: their results appended)"
            rows.append(("retried", escape(text)))
        rows.append(("result", escape(str(state.merged.get("out")))))
    return rows, state.run_id


def _shard_table(line: _Timeline, rows: list[int]) -> str:
    out = [
        '<table class="shards"><thead><tr><th>shard</th><th>records</th><th>attempt</th>'
        "<th>status</th><th>merged (results + errors / missing)</th><th>note</th></tr></thead>"
        "<tbody>"
    ]
    for number in rows:
        shard = line.shards[number]
        merged = ""
        if shard.merged is not None:
            results = _int(shard.merged.get("results")) or 0
            errors = _int(shard.merged.get("errors")) or 0
            missing = _int(shard.merged.get("missing")) or 0
            merged = f"{results:,} + {errors:,} / {missing:,}"
        status = shard.status or ("waiting for a job" if shard.attempt is None else "")
        notes = []
        if shard.failed:
            notes.append("FAILED")
        if shard.timed_out:
            notes.append("timed out")
        if shard.reason:
            notes.append(shard.reason)
        records = "" if shard.records is None else f"{shard.records:,}"
        out.append(
            f'<tr data-shard="{number}"><td>shard {number}</td><td>{records}</td>'
            f"<td>{shard.attempt or ''}</td><td>{escape(status)}</td><td>{merged}</td>"
            f"<td>{escape(': '.join(notes))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _legend() -> str:
    items = [
        f'<li data-stage="{stage}"><span class="swatch" style="background:{colour}"></span>'
        f"{escape(text)}</li>"
        for stage, (colour, text) in STAGES.items()
    ]
    return '<ul class="legend">' + "".join(items) + "</ul>"


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
table.shards td,table.shards th{border-bottom:1px solid #eee;padding:2px 12px 2px 0}
table.summary th{font-weight:600;white-space:nowrap}
svg{width:100%;height:auto;display:block;max-width:1200px}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .axis{fill:#666}
svg .grid{stroke:#e6e6e6;stroke-width:1}
.legend{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 16px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
.note{color:#666}
"""


def render_html(events: list[dict[str, Any]]) -> str:
    """The whole report page for a run's events (oldest first), as one HTML string."""
    line = _fold(events)
    header, run_id = _summary(events)
    title = f"fanout run {run_id}" if run_id is not None else "fanout run"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<table class="summary">',
        *(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in header),
        "</table>",
    ]
    if line.unknown or line.skipped:
        parts.append(
            f'<p class="note">{line.unknown} event(s) of unknown kinds ignored, '
            f"{line.skipped} malformed event(s) skipped.</p>"
        )
    rows = sorted(line.shards)
    elided = len(rows) - _MAX_ROWS
    rows = rows[:_MAX_ROWS]
    if line.t0 is None or line.t1 is None:
        parts.append('<p class="note">The journal has no events to draw.</p>')
    else:
        scale = _Scale(line.t0, line.t1)
        parts += ["<h2>Timeline</h2>", _legend()]
        if rows:
            parts.append(_timeline_svg(line, scale, rows))
            if elided > 0:
                parts.append(f'<p class="note">{elided:,} more shards not drawn.</p>')
        else:
            parts.append('<p class="note">No shard is ready yet.</p>')
        parts += [
            "<h2>Records uploaded and merged</h2>",
            '<ul class="legend">',
            *(
                f'<li data-series="{name}"><span class="swatch" style="background:{colour}">'
                f"</span>records {name} (cumulative)</li>"
                for name, colour in _SERIES.items()
            ),
            "</ul>",
            _throughput_svg(line, scale),
        ]
        if rows:
            parts += ["<h2>Shards</h2>", _shard_table(line, rows)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: Path, path: Path, overwrite: bool = False) -> None:
    """Render the run's journal to `path` (0600), atomically: a temporary file, then a rename.
    A file already there is replaced only if it is a fanout report, or with `overwrite`."""
    page = render_html(read_events(run_dir)).encode()
    if not overwrite and not _replaceable(path):
        raise ConfigError(
            f"{path} exists and is not a fanout report: pass --overwrite to replace it, or "
            "choose another file"
        )
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the report {path}: {exc.strerror}") from exc


def _replaceable(path: Path) -> bool:
    """Whether nothing is at `path`, or an earlier report (its title, near the top, says so)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
    except FileNotFoundError:
        return True
    except OSError:  # a folder, or unreadable: the write says what is wrong
        return True
    return b"<title>fanout run" in head
