"""The report as one self-contained HTML page: the per-country table and three charts.

plotly.js is inlined once in the page's head, so the file opens offline (from a mail attachment
or a USB stick) and references no external URL. The dashboard serves the same page with a
refresh. Every text that comes from the data (country codes, notice ids) is escaped, in the
table and in the charts, whose labels plotly reads as HTML.
"""

from __future__ import annotations

import html
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import plotly.graph_objects as go
import plotly.offline
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from notice_bus.db import as_utc, translate_errors
from notice_bus.model import AckStatus, utcnow
from notice_bus.report import CountryReport
from notice_bus.settings import Settings
from notice_bus.tables import ACK, SENT

__all__ = ["MATRIX_STATES", "notice_matrix", "outstanding_series", "render_html"]

Sent = tuple[str, str, int, datetime]  # country, notice id, version, broker time
Key = tuple[str, str, int]  # country, notice id, version

BUCKETS = 30
MATRIX_NOTICES = 30
#: Cell states of the notice x country matrix, in colour-scale order.
MATRIX_STATES = ("not sent", "OUTSTANDING", "RECEIVED", "REJECTED", "RECORDED")
_STATE_COLOURS = ("#e6e6e6", "#d62728", "#f0ad4e", "#9467bd", "#2ca02c")
_DONE = (AckStatus.RECORDED.value, AckStatus.REJECTED.value)
_NOTHING = "no notices tracked yet"
# plotly.js offers a "Share chart" button that uploads the chart's data to Plotly Cloud; these
# are red notices, so no button may send them anywhere.
_CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.country, td.status { text-align: left; font-weight: 600; }
td.status-ok { background: #d9f2d9; color: #1e6b1e; }
td.status-lagging { background: #fff0c2; color: #7a5a00; }
td.status-stalled { background: #ecdcf5; color: #5e2a7e; }
td.status-down { background: #f9d0d0; color: #9b1111; }
td.status-never-connected { background: #b71c1c; color: #fff; }
.generated { color: #666; }
"""
_COLUMNS: tuple[str, ...] = ("Country", "Status", "Sent", "Recorded", "Rejected")
_COLUMNS += ("Outstanding", "Overdue")
_COLUMNS += ("P50 lag (s)", "P95 lag (s)", "Max lag (s)", "Delivery p95 (s)", "Answer p95 (s)")
_COLUMNS += ("Oldest waiting (s)", "Group lag", "Clock skew (s)")


def render_html(
    engine: Engine,
    settings: Settings,
    reports: Sequence[CountryReport],
    *,
    clock: Callable[[], datetime] = utcnow,
    refresh_s: int | None = None,
) -> str:
    """The page for ``reports`` (rows in their given order, worst first), with charts drawn
    from the tracker's tables for the same countries; reloads every ``refresh_s`` if set."""
    now = clock()
    countries = [r.country for r in reports]
    sent, done, acks = _load(engine, countries)
    times, series = outstanding_series(sent, done, countries, now, settings.window_s * 12)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}
<title>notice-bus report, {stamp}</title>
<style>{_CSS}</style>
<script>{_plotly_js()}</script>
</head>
<body>
<h1>notice-bus response lag</h1>
<p class="generated">Generated <time datetime="{now.isoformat()}">{stamp}</time>;
{len(reports)} countries, worst first.</p>
{_table(reports)}
<h2>Lag per country</h2>
{_lag_chart(reports)}
<h2>Outstanding notices over time</h2>
{_outstanding_chart(times, series)}
<h2>The {MATRIX_NOTICES} most recent notices</h2>
{_matrix_chart(*notice_matrix(sent, acks, countries), countries)}
</body>
</html>
"""


def _load(
    engine: Engine, countries: Sequence[str]
) -> tuple[list[Sent], dict[Key, datetime], dict[Key, set[str]]]:
    """The events sent to ``countries``; when each was first RECORDED or REJECTED; and the
    acknowledgement statuses of the most recent notices."""
    sent: list[Sent] = []
    done: dict[Key, datetime] = {}
    acks: dict[Key, set[str]] = defaultdict(set)
    if not countries:
        return sent, done, acks
    key = (ACK.c.country, ACK.c.notice_id, ACK.c.version)
    with translate_errors(str(engine.url)), engine.connect() as conn:
        query = select(SENT.c.country, SENT.c.notice_id, SENT.c.version, SENT.c.broker_at)
        for c, n, v, at in conn.execute(query.where(SENT.c.country.in_(countries))):
            sent.append((c, n, v, as_utc(at)))
        first_done = (
            select(*key, func.min(ACK.c.broker_at))
            .where(ACK.c.status.in_(_DONE), ACK.c.country.in_(countries))
            .group_by(*key)
        )
        done = {(c, n, v): as_utc(at) for c, n, v, at in conn.execute(first_done)}
        recent = _recent_notices(sent)
        if recent:
            statuses = select(*key, ACK.c.status).distinct()
            for c, n, v, status in conn.execute(statuses.where(ACK.c.notice_id.in_(recent))):
                acks[(c, n, v)].add(status)
    return sent, done, acks


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
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _table(reports: Sequence[CountryReport]) -> str:
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
        rows.append(
            f'<tr data-country="{cc}" data-status="{status}">'
            f'<td class="country">{cc}</td><td class="status {css}">{status}</td>'
            f"<td>{r.sent}</td><td>{r.recorded}</td><td>{r.rejected}</td>"
            f'<td title="{waiting}">{r.outstanding}</td>'
            f"<td>{r.overdue_record + r.overdue_answer}</td>"
            + "".join(f"<td>{_num(v)}</td>" for v in values)
            + f"<td>{_num(r.clock_skew_s, signed=True)}</td></tr>"
        )
    if not rows:
        rows.append(f'<tr><td colspan="{len(_COLUMNS)}">{_NOTHING}</td></tr>')
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    body = "\n".join(rows)
    return (
        f'<table id="countries"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
    )


def _chart(fig: Any, div_id: str, height: int, *, empty: bool) -> str:
    """The figure as a fragment that plotly.js (already in the page) draws into ``div_id``."""
    if empty:
        fig.add_annotation(text=_NOTHING, showarrow=False, xref="paper", yref="paper")
    fig.update_layout(height=height, margin={"t": 30, "b": 40}, template="plotly_white")
    out: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px",
        config=_CONFIG,
    )
    return out


def _lag_chart(reports: Sequence[CountryReport]) -> str:
    x = [html.escape(r.country) for r in reports]
    fig = go.Figure(
        [
            go.Bar(name="apply p50", x=x, y=[r.p50_lag_s for r in reports]),
            go.Bar(name="apply p95", x=x, y=[r.p95_lag_s for r in reports]),
            go.Bar(name="delivery p95", x=x, y=[r.delivery_p95_s for r in reports]),
        ]
    )
    fig.update_layout(barmode="group", yaxis_title="seconds", xaxis_type="category")
    return _chart(fig, "chart-lag", 420, empty=not reports)


def outstanding_series(
    sent: Sequence[Sent],
    done: dict[Key, datetime],
    countries: Sequence[str],
    now: datetime,
    span_cap_s: float,
    buckets: int = BUCKETS,
) -> tuple[list[datetime], dict[str, list[int]]]:
    """Per country, at ``buckets`` evenly spaced times from the first event sent (but no
    earlier than ``span_cap_s`` before ``now``) to ``now``: the events sent at or before that
    time without a RECORDED or REJECTED acknowledgement at or before it."""
    if not sent:
        return [], {}
    start = max(min(at for *_, at in sent), now - timedelta(seconds=span_cap_s))
    span = max((now - start).total_seconds(), 1.0)
    times = [start + timedelta(seconds=span * i / (buckets - 1)) for i in range(buckets)]
    arrived: dict[str, list[datetime]] = defaultdict(list)
    settled: dict[str, list[datetime]] = defaultdict(list)
    for c, n, v, at in sent:
        arrived[c].append(at)
        if (c, n, v) in done:
            # Counted as settled only once it has arrived, whatever the ack's timestamp says.
            settled[c].append(max(at, done[(c, n, v)]))
    for series in (*arrived.values(), *settled.values()):
        series.sort()
    return times, {
        c: [bisect_right(arrived[c], t) - bisect_right(settled[c], t) for t in times]
        for c in countries
    }


def _outstanding_chart(times: list[datetime], series: dict[str, list[int]]) -> str:
    x = [t.replace(tzinfo=None) for t in times]  # plotly.js ignores offsets; the axis says UTC
    # With many countries, only those that ever had something outstanding are drawn at first.
    traces = [
        go.Scatter(
            name=html.escape(c), x=x, y=ys, mode="lines+markers", visible=any(ys) or "legendonly"
        )
        for c, ys in series.items()
    ]
    fig = go.Figure(traces)
    fig.update_layout(xaxis_title="broker time (UTC)", yaxis_title="outstanding events")
    return _chart(fig, "chart-outstanding", 420, empty=not times)


def _recent_notices(sent: Sequence[Sent]) -> list[str]:
    last: dict[str, datetime] = {}
    for _c, n, _v, at in sent:
        last[n] = max(at, last.get(n, at))
    return sorted(last, key=lambda n: (last[n], n), reverse=True)[:MATRIX_NOTICES]


def notice_matrix(
    sent: Sequence[Sent], acks: dict[Key, set[str]], countries: Sequence[str]
) -> tuple[list[str], list[list[str]], list[list[int | None]]]:
    """The most recent notices, newest first, and per notice and country the state of the
    latest version sent there (one of :data:`MATRIX_STATES`) and that version (None: none)."""
    notices = _recent_notices(sent)
    latest: dict[tuple[str, str], int] = {}
    for c, n, v, _at in sent:
        latest[(n, c)] = max(v, latest.get((n, c), v))
    states: list[list[str]] = []
    versions: list[list[int | None]] = []
    for n in notices:
        row = [latest.get((n, c)) for c in countries]
        versions.append(row)
        states.append([_state(acks, c, n, v) for c, v in zip(countries, row, strict=True)])
    return notices, states, versions


def _state(acks: dict[Key, set[str]], country: str, notice: str, version: int | None) -> str:
    if version is None:
        return "not sent"
    seen = acks.get((country, notice, version), set())
    # A version recorded after an earlier copy was rejected counts as recorded.
    return next((s for s in ("RECORDED", "REJECTED", "RECEIVED") if s in seen), "OUTSTANDING")


def _matrix_chart(
    notices: list[str],
    states: list[list[str]],
    versions: list[list[int | None]],
    countries: Sequence[str],
) -> str:
    x, y = [html.escape(c) for c in countries], [html.escape(n) for n in notices]
    hover = [
        [f"{n} in {c}: {s}" + (f" (v{v})" if v else "") for c, s, v in zip(x, ss, vs, strict=True)]
        for n, ss, vs in zip(y, states, versions, strict=True)
    ]
    k = len(MATRIX_STATES)
    # A stepped scale: the integer of each state owns one flat band of colour.
    scale = [[(i + e) / k, col] for i, col in enumerate(_STATE_COLOURS) for e in (0, 1)]
    heatmap = go.Heatmap(
        z=[[MATRIX_STATES.index(s) for s in row] for row in states],
        x=x,
        y=y,
        text=hover,
        hovertemplate="%{text}<extra></extra>",
        colorscale=scale,
        zmin=-0.5,
        zmax=k - 0.5,
        xgap=1,
        ygap=1,
        colorbar={"tickvals": list(range(k)), "ticktext": list(MATRIX_STATES)},
    )
    fig = go.Figure(heatmap)
    # Category axes, stated rather than guessed by plotly.js from the labels.
    fig.update_layout(xaxis_type="category", yaxis_type="category", yaxis_autorange="reversed")
    return _chart(fig, "chart-matrix", max(300, 22 * len(notices) + 120), empty=not notices)
