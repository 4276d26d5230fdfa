"""The report as one self-contained HTML page: the per-country table, HQ's review of the
bureaus' requests (its own lag, per requesting country), the national copies (each country's
latest copy check, the differences still there by kind) and three charts.

plotly.js is inlined once in the page's head, so the file opens offline (from a mail attachment
or a USB stick) and references no external URL. The dashboard serves the same page once, and a
script of its own updates the table and the charts in place (``Plotly.react``; the figures'
fixed ``uirevision`` keeps a viewer's zoom and legend choices).
A banner warns when the tracker's last sample is older than ``stale_after_s``: the figures are
then as of that time, whatever the page's own time says. Another names the countries with
security events (acknowledgements or answers whose MAC failed), when there are any. Every text
that comes from the data (country codes, notice ids) is escaped, in the table here and in the
charts (:mod:`notice_bus.reports.charts`), whose labels plotly reads as HTML.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import plotly.offline
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from notice_bus.reports.charts import (
    MATRIX_NOTICES,
    NOTHING,
    Key,
    Sent,
    chart_html,
    lag_chart,
    matrix_chart,
    notice_matrix,
    outstanding_chart,
    outstanding_series,
    recent_notices,
)
from notice_bus.reports.html_tables import (
    age_text,
    body,
    copy_rows,
    copy_table,
    copy_td,
    review_rows,
    review_table,
    table,
)
from notice_bus.reports.metrics import last_sample_at
from notice_bus.reports.report import CountryReport
from notice_bus.runtime.db import as_utc, translate_errors
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK, SENT
from notice_bus.wire.model import AckStatus, utcnow

__all__ = ["PageParts", "default_stale_after_s", "page_parts", "render_html"]

_DONE = (AckStatus.RECORDED.value, AckStatus.REJECTED.value)
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.country, td.status { text-align: left; font-weight: 600; }
td.status-ok { background: #d9f2d9; color: #1e6b1e; }
td.status-lagging { background: #fff0c2; color: #7a5a00; }
td.status-copy-drift { background: #d4eef2; color: #0b5563; }
td.copy-drift { background: #d4eef2; color: #0b5563; font-weight: 600; }
td.copy-unverifiable { color: #7a5a00; }
td.status-stalled { background: #ecdcf5; color: #5e2a7e; }
td.status-security { background: #5e2a7e; color: #fff; }
td.status-down { background: #f9d0d0; color: #9b1111; }
td.status-never-connected { background: #b71c1c; color: #fff; }
.generated { color: #666; }
.banner { padding: 0.6em 1em; margin: 0.8em 0; border-radius: 4px; font-weight: 600; }
.stale { background: #fff0c2; color: #7a5a00; border: 1px solid #e0b000; }
.refresh-error { background: #f9d0d0; color: #9b1111; border: 1px solid #d08080; }
.security { background: #ecdcf5; color: #5e2a7e; border: 1px solid #5e2a7e; }
.banner[hidden] { display: none; }
/* The table scrolls in its own box, so a narrow screen scrolls neither the page nor the charts. */
.table-box { overflow-x: auto; max-width: 100%; }
.chart { max-width: 100%; }
@media (max-width: 600px) {
  body { margin: 0.5em; }
  h1 { font-size: 1.3em; }
  table { font-size: 0.8em; }
}
"""
_COLUMNS: tuple[str, ...] = ("Country", "Status", "Sent", "Recorded", "Rejected")
_COLUMNS += ("Outstanding", "Overdue")
_COLUMNS += ("P50 lag (s)", "P95 lag (s)", "Max lag (s)", "Delivery p95 (s)", "Answer p95 (s)")
_COLUMNS += ("Oldest waiting (s)", "Group lag", "Clock skew (s)", "Copy")


def default_stale_after_s(settings: Settings) -> float:
    """How old the tracker's last sample may be before the page warns: three sampling
    rounds, and at least 30 seconds."""
    return max(3 * settings.sample_interval_s, 30.0)


def render_html(
    engine: Engine,
    settings: Settings,
    reports: Sequence[CountryReport],
    *,
    clock: Callable[[], datetime] = utcnow,
    stale_after_s: float | None = None,
    script: str = "",
) -> str:
    """The page for ``reports`` (rows in their given order, worst first), with charts drawn
    from the tracker's tables for the same countries, and a warning when the tracker's last
    sample is older than ``stale_after_s`` (default: :func:`default_stale_after_s`).
    ``script`` ends the body (the dashboard's refresh)."""
    parts = page_parts(engine, settings, reports, clock(), stale_after_s)
    now = parts.now
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    hidden = "" if parts.stale else " hidden"
    security, security_hidden = html.escape(parts.security), "" if parts.security else " hidden"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>notice-bus report, {stamp}</title>
<style>{_CSS}</style>
<script>{_plotly_js()}</script>
</head>
<body>
<h1>notice-bus response lag</h1>
<p class="generated">Generated <time id="generated" datetime="{now.isoformat()}">{stamp}</time>;
<span id="summary">{html.escape(parts.summary)}</span></p>
<div id="stale" class="banner stale" role="alert"{hidden}>{html.escape(parts.stale)}</div>
<div id="security" class="banner security" role="alert"{security_hidden}>{security}</div>
<div id="refresh-error" class="banner refresh-error" role="alert" hidden></div>
<div class="table-box">{table("countries", _COLUMNS, parts.rows)}</div>
<h2>HQ's review</h2>
<p class="generated">Requests for notices from the bureaus: waiting for a reviewer, published
(time from the request's arrival to its publication), refused, invalid.</p>
<div class="table-box">{review_table(parts.reviews)}</div>
<h2>National copies</h2>
<p class="generated">Each country's latest check of its national copy against HQ's manifest:
the differences still there by kind (those the adapter did not mend).</p>
<div class="table-box">{copy_table(parts.copies)}</div>
<h2>Lag per country</h2>
{chart_html(parts.figures["chart-lag"], "chart-lag")}
<h2>Outstanding notices over time</h2>
{chart_html(parts.figures["chart-outstanding"], "chart-outstanding")}
<h2>The {MATRIX_NOTICES} most recent notices</h2>
{chart_html(parts.figures["chart-matrix"], "chart-matrix")}
{script}</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class PageParts:
    """Everything a page shows: its time, the summary line, the stale warning ("" if
    none), the table's rows as escaped HTML, the plotly figures by element id, the
    security warning ("" if none), the rows of HQ's review (table ``reviews``) and of the
    national copies (table ``copies``) as escaped HTML."""

    now: datetime
    summary: str
    stale: str
    rows: str
    figures: dict[str, Any]
    security: str
    reviews: str = ""
    copies: str = ""


def page_parts(
    engine: Engine,
    settings: Settings,
    reports: Sequence[CountryReport],
    now: datetime,
    stale_after_s: float | None,
) -> PageParts:
    """The parts of the page for ``reports`` at ``now``."""
    countries = [r.country for r in reports]
    sent, done, acks, last_sample = _load(engine, countries)
    times, series = outstanding_series(sent, done, countries, now, settings.window_s * 12)
    limit = default_stale_after_s(settings) if stale_after_s is None else stale_after_s
    summary = f"{len(reports)} countries, worst first."
    if last_sample is not None:
        summary += f" Tracker's last sample: {last_sample.strftime('%H:%M:%S UTC')}."
    figures = {
        "chart-lag": lag_chart(reports),
        "chart-outstanding": outstanding_chart(times, series),
        "chart-matrix": matrix_chart(*notice_matrix(sent, acks, countries), countries),
    }
    stale = _stale(now, last_sample, limit)
    return PageParts(
        now,
        summary,
        stale,
        _rows(reports, now),
        figures,
        _security(reports),
        review_rows(reports),
        copy_rows(reports, now),
    )


def _security(reports: Sequence[CountryReport]) -> str:
    """The warning naming the countries with security events, else ""."""
    found = ", ".join(f"{r.country} {r.security_events}" for r in reports if r.security_events)
    if not found:
        return ""
    return (
        f"Security events: {found}. Acknowledgements or answers whose MAC failed (none,"
        " another bureau's, or altered) are not counted as deliveries; they are kept in the"
        " tracker's table tracker_security_event."
    )


def _stale(now: datetime, last_sample: datetime | None, limit_s: float) -> str:
    """The warning when the tracker has not sampled for ``limit_s``, else ""."""
    if last_sample is None:
        return (
            "The tracker has not sampled the consumer groups yet: is it running? These figures"
            " may be out of date."
        )
    age = (now - last_sample).total_seconds()
    if age <= limit_s:
        return ""
    return (
        f"The tracker's last sample is {age_text(age)} old"
        f" ({last_sample.strftime('%Y-%m-%d %H:%M:%S UTC')}): is it running?"
        " These figures are as of then and the statuses may be out of date."
    )


def _load(
    engine: Engine, countries: Sequence[str]
) -> tuple[list[Sent], dict[Key, datetime], dict[Key, set[str]], datetime | None]:
    """The events sent to ``countries``; when each was first RECORDED or REJECTED; the
    acknowledgement statuses of the most recent notices; and the tracker's last sample."""
    sent: list[Sent] = []
    done: dict[Key, datetime] = {}
    acks: dict[Key, set[str]] = defaultdict(set)
    key = (ACK.c.country, ACK.c.notice_id, ACK.c.version)
    with translate_errors(str(engine.url)), engine.connect() as conn:
        last_sample = last_sample_at(conn)
        if not countries:
            return sent, done, acks, last_sample
        query = select(SENT.c.country, SENT.c.notice_id, SENT.c.version, SENT.c.broker_at)
        for c, n, v, at in conn.execute(query.where(SENT.c.country.in_(countries))):
            sent.append((c, n, v, as_utc(at)))
        first_done = (
            select(*key, func.min(ACK.c.broker_at))
            .where(ACK.c.status.in_(_DONE), ACK.c.country.in_(countries))
            .group_by(*key)
        )
        done = {(c, n, v): as_utc(at) for c, n, v, at in conn.execute(first_done)}
        recent = recent_notices(sent)
        if recent:
            statuses = select(*key, ACK.c.status).distinct()
            for c, n, v, status in conn.execute(statuses.where(ACK.c.notice_id.in_(recent))):
                acks[(c, n, v)].add(status)
    return sent, done, acks, last_sample


@cache
def _plotly_js() -> str:
    # A few megabytes read from plotly's package; the same for every page.
    js: str = plotly.offline.get_plotlyjs()
    return js


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if round(value, 1) == 0:
        return "0.0"  # not "-0.0" (nor "+0.0") for a value that rounds to nothing
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _rows(reports: Sequence[CountryReport], now: datetime) -> str:
    """The table's rows, as escaped HTML."""
    rows = []
    for r in reports:
        cc, status = html.escape(r.country), html.escape(r.status.value)
        # The oldest waiting notices show on hovering the outstanding count.
        waiting = html.escape(
            ", ".join(f"{n} v{v} ({a:.0f}s)" for n, v, a in r.outstanding_notices)
        )
        values = (
            *(r.p50_lag_s, r.p95_lag_s, r.max_lag_s, r.delivery_p95_s, r.response_p95_s),
            *(r.oldest_outstanding_s, r.consumer_lag),
        )
        css = "status-" + r.status.value.lower().replace("_", "-")
        events = f' title="security events: {r.security_events}"' if r.security_events else ""
        rows.append(
            f'<tr data-country="{cc}" data-status="{status}">'
            f'<td class="country">{cc}</td><td class="status {css}"{events}>{status}</td>'
            f"<td>{r.sent}</td><td>{r.recorded}</td><td>{r.rejected}</td>"
            f'<td title="{waiting}">{r.outstanding}</td>'
            f"<td>{r.overdue_record + r.overdue_answer}</td>"
            + "".join(f"<td>{_num(v)}</td>" for v in values)
            + f"<td>{_num(r.clock_skew_s, signed=True)}</td>{copy_td(r, now)}</tr>"
        )
    return body(rows, _COLUMNS, NOTHING)
