"""The report's charts as plotly figures, and the data they are drawn from.

Country colours come from a palette that stays distinct for many countries, in the order of
the sorted codes, so a country keeps its colour between refreshes. Every label that comes from
the data is escaped, since plotly.js reads labels as HTML. A chart with nothing to show says
so; a country with no figure yet is labelled "no data" rather than left a blank slot.
"""

from __future__ import annotations

import html
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go

from notice_bus.reports.report import CountryReport

__all__ = [
    "BUCKETS",
    "CHART_CONFIG",
    "MATRIX_NOTICES",
    "MATRIX_STATES",
    "NOTHING",
    "chart_html",
    "country_colours",
    "lag_chart",
    "matrix_chart",
    "notice_matrix",
    "outstanding_chart",
    "outstanding_series",
    "recent_notices",
]

Sent = tuple[str, str, int, datetime]  # country, notice id, version, broker time
Key = tuple[str, str, int]  # country, notice id, version

BUCKETS = 30
MATRIX_NOTICES = 30
#: Cell states of the notice x country matrix, in colour-scale order.
MATRIX_STATES = ("not sent", "OUTSTANDING", "RECEIVED", "REJECTED", "RECORDED")
_STATE_COLOURS = ("#e6e6e6", "#d62728", "#f0ad4e", "#9467bd", "#2ca02c")
NOTHING = "no notices tracked yet"
# plotly.js offers a "Share chart" button that uploads the chart's data to Plotly Cloud; these
# are red notices, so no button may send them anywhere.
CHART_CONFIG: dict[str, Any] = {"displaylogo": False, "showSendToCloud": False, "responsive": True}
# Kelly's colours of maximum contrast (white and black left out), in his order: each next one
# is the most distinct from those before, so any first few stay apart. Past them, hues a golden
# angle apart.
_PALETTE = (
    *("#875692", "#F38400", "#0067A5", "#BE0032", "#008856", "#A1CAF1", "#F3C300"),
    *("#848482", "#E68FAC", "#882D17", "#8DB600", "#604E97", "#F99379", "#C2B280"),
    *("#B3446C", "#DCD300", "#654522", "#E25822", "#2B3D26", "#F6A600"),
)


def _finish(fig: Any, height: int, *, empty: bool) -> Any:
    if empty:
        fig.add_annotation(text=NOTHING, showarrow=False, xref="paper", yref="paper")
    # A constant uirevision: Plotly.react keeps the viewer's zoom, pan and legend choices.
    fig.update_layout(
        height=height, margin={"t": 30, "b": 40}, template="plotly_white", uirevision="keep"
    )
    return fig


def chart_html(fig: Any, div_id: str) -> str:
    """The figure as a fragment that plotly.js (already in the page) draws into ``div_id``."""
    out: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{fig.layout.height}px",
        config=CHART_CONFIG,
    )
    return f'<div class="chart">{out}</div>'


def country_colours(countries: Sequence[str]) -> dict[str, str]:
    """A distinct colour per country, given in the order of the sorted codes, so a country
    keeps its colour from one refresh to the next while the set of countries stays."""
    out = {}
    for i, cc in enumerate(sorted(set(countries))):
        if i < len(_PALETTE):
            out[cc] = _PALETTE[i]
        else:
            out[cc] = f"hsl({(i - len(_PALETTE)) * 137.508 % 360:.0f}, 65%, 45%)"
    return out


def lag_chart(reports: Sequence[CountryReport]) -> Any:
    x = [html.escape(r.country) for r in reports]
    fig = go.Figure(
        [
            go.Bar(name="apply p50", x=x, y=[r.p50_lag_s for r in reports]),
            go.Bar(name="apply p95", x=x, y=[r.p95_lag_s for r in reports]),
            go.Bar(name="delivery p95", x=x, y=[r.delivery_p95_s for r in reports]),
        ]
    )
    fig.update_layout(barmode="group", yaxis_title="seconds", xaxis_type="category")
    for cc, r in zip(x, reports, strict=True):
        if r.p50_lag_s is None and r.p95_lag_s is None and r.delivery_p95_s is None:
            # Not a blank slot: nothing was acknowledged yet, and the chart says so.
            fig.add_annotation(
                x=cc, y=0, yref="paper", yanchor="bottom", text="no data", showarrow=False
            )
    return _finish(fig, 420, empty=not reports)


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


def outstanding_chart(times: list[datetime], series: dict[str, list[int]]) -> Any:
    x = [t.replace(tzinfo=None) for t in times]  # plotly.js ignores offsets; the axis says UTC
    colours = country_colours(list(series))
    # With many countries, only those that ever had something outstanding are drawn at first.
    traces = [
        go.Scatter(
            name=html.escape(c),
            x=x,
            y=ys,
            mode="lines+markers",
            line={"color": colours[c]},
            marker={"color": colours[c]},
            visible=any(ys) or "legendonly",
        )
        for c, ys in series.items()
    ]
    fig = go.Figure(traces)
    fig.update_layout(xaxis_title="broker time (UTC)", yaxis_title="outstanding events")
    return _finish(fig, 420, empty=not times)


def recent_notices(sent: Sequence[Sent]) -> list[str]:
    last: dict[str, datetime] = {}
    for _c, n, _v, at in sent:
        last[n] = max(at, last.get(n, at))
    return sorted(last, key=lambda n: (last[n], n), reverse=True)[:MATRIX_NOTICES]


def notice_matrix(
    sent: Sequence[Sent], acks: dict[Key, set[str]], countries: Sequence[str]
) -> tuple[list[str], list[list[str]], list[list[int | None]]]:
    """The most recent notices, newest first, and per notice and country the state of the
    latest version sent there (one of :data:`MATRIX_STATES`) and that version (None: none)."""
    notices = recent_notices(sent)
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


def matrix_chart(
    notices: list[str],
    states: list[list[str]],
    versions: list[list[int | None]],
    countries: Sequence[str],
) -> Any:
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
    return _finish(fig, max(300, 22 * len(notices) + 120), empty=not notices)
