"""Two tables of the report's page (:mod:`notice_bus.reports.html`), as escaped HTML: HQ's
review of the bureaus' requests, per requesting country, and the national copies, each
country's latest copy check; and the copy cell of the per-country table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from notice_bus.reports.formats import copy_cell
from notice_bus.reports.report import CountryReport

__all__ = [
    "age_text",
    "body",
    "copy_rows",
    "copy_table",
    "copy_td",
    "review_rows",
    "review_table",
    "table",
]


def age_text(seconds: float) -> str:
    """``seconds`` as "1h02m", "3m04s" or "5s"."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


_REVIEW_COLUMNS: tuple[str, ...] = ("Country", "Waiting", "Held for", "Oldest waiting")
_REVIEW_COLUMNS += ("Published",)
_REVIEW_COLUMNS += ("P50 request → publication", "P95 request → publication")
_REVIEW_COLUMNS += ("Refused", "Invalid")
_NO_REQUESTS = "no requests for notices from the bureaus"


def table(table_id: str, columns: Sequence[str], rows: str) -> str:
    """A table of the page: ``columns`` as its head, ``rows`` (escaped HTML) as its body."""
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    head = f'<table id="{table_id}"><thead><tr>{cells}</tr></thead>'
    return f"{head}\n<tbody>\n{rows}\n</tbody></table>"


def body(rows: Sequence[str], columns: Sequence[str], empty: str) -> str:
    """``rows`` one per line, or one row across every column that says ``empty``."""
    return "\n".join(rows or [f'<tr><td colspan="{len(columns)}">{empty}</td></tr>'])


def review_table(rows: str) -> str:
    return table("reviews", _REVIEW_COLUMNS, rows)


def review_rows(reports: Sequence[CountryReport]) -> str:
    """HQ's review table's rows, as escaped HTML: every country that sent a request, the
    longest waiting first. Reviews take hours: times as hours and minutes."""
    asked = [
        r
        for r in reports
        if r.requests_waiting + r.requests_published + r.requests_refused + r.requests_invalid
    ]
    asked.sort(key=lambda r: (-(r.request_oldest_waiting_s or 0), -r.requests_waiting, r.country))
    rows = []
    for r in asked:
        cc = html.escape(r.country)
        times = (r.request_oldest_waiting_s, r.request_p50_s, r.request_p95_s)
        oldest, p50, p95 = ("-" if t is None else age_text(round(t)) for t in times)
        held = html.escape(", ".join(r.requests_held_for)) or "-"
        rows.append(
            f'<tr data-requester="{cc}"><td class="country">{cc}</td>'
            f"<td>{r.requests_waiting}</td><td>{held}</td><td>{oldest}</td>"
            f"<td>{r.requests_published}</td>"
            f"<td>{p50}</td><td>{p95}</td>"
            f"<td>{r.requests_refused}</td><td>{r.requests_invalid}</td></tr>"
        )
    return body(rows, _REVIEW_COLUMNS, _NO_REQUESTS)


def copy_td(r: CountryReport, now: datetime) -> str:
    """The national copy's cell: "ok 2m03s", "drift 5" (by kind on hovering), "unverif."."""
    css = f"copy copy-{(r.copy_status or 'none').lower()}" if r.copy_status else "copy"
    if r.copy_status == "DRIFT" and not r.copy_drift:
        css = "copy"  # all mended
    title = _drift_text(r)
    if r.copy_reason:
        title = f"{title}; {r.copy_reason}" if title else r.copy_reason
    hover = f' title="{html.escape(title)}"' if title else ""
    return f'<td class="{css}"{hover}>{html.escape(copy_cell(r, now))}</td>'


def _drift_text(r: CountryReport) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in r.copy_drift.items())


_COPY_COLUMNS: tuple[str, ...] = ("Country", "Copy", "Checked", "Last verified")
_COPY_COLUMNS += ("Differences still there", "Mended", "Examples", "Reason")
_NO_COPIES = "no copy checks from the bureaus"


def copy_table(rows: str) -> str:
    return table("copies", _COPY_COLUMNS, rows)


def copy_rows(reports: Sequence[CountryReport], now: datetime) -> str:
    """The national copies table's rows, as escaped HTML: every country that reported a
    copy check, those whose copy drifted first."""
    checked = [r for r in reports if r.copy_status]
    order = {"DRIFT": 0, "UNVERIFIABLE": 1, "VERIFIED": 2}
    checked.sort(
        key=lambda r: (order.get(r.copy_status or "", 3), -sum(r.copy_drift.values()), r.country)
    )
    rows = []
    for r in checked:
        cc, status = html.escape(r.country), html.escape(r.copy_status or "")
        css = f"copy-{status.lower()}" if status != "DRIFT" or r.copy_drift else ""
        times = (r.copy_checked_at, r.copy_verified_at)
        checked_ago, verified_ago = (
            "-" if t is None else f"{age_text(max((now - t).total_seconds(), 0))} ago"
            for t in times
        )
        examples = ", ".join(f"{n} ({k})" for n, k in r.copy_examples)
        rows.append(
            f'<tr data-copy="{cc}"><td class="country">{cc}</td>'
            f'<td class="{css}">{status}</td><td>{checked_ago}</td><td>{verified_ago}</td>'
            f"<td>{html.escape(_drift_text(r)) or '-'}</td><td>{r.copy_mended}</td>"
            f"<td>{html.escape(examples) or '-'}</td>"
            f"<td>{html.escape(r.copy_reason or '') or '-'}</td></tr>"
        )
    return body(rows, _COPY_COLUMNS, _NO_COPIES)
