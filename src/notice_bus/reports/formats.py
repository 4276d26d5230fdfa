"""The report as text: JSON and CSV for programs, every field; a table (optionally coloured)
for people, the main figures."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from notice_bus.reports.report import CountryReport, Status
from notice_bus.wire.model import utcnow


def _plain(r: CountryReport) -> dict[str, Any]:
    d = asdict(r)
    for k, v in d.items():
        if isinstance(v, float):
            d[k] = round(v, 3)
    d["status"] = r.status.value
    d["outstanding_notices"] = [
        {"notice_id": n, "version": v, "age_s": round(a, 1)} for n, v, a in r.outstanding_notices
    ]
    for k in ("copy_checked_at", "copy_verified_at"):
        d[k] = d[k].isoformat() if d[k] is not None else None
    d["copy_examples"] = [{"notice_id": n, "kind": k} for n, k in r.copy_examples]
    return d


def to_json(reports: Sequence[CountryReport]) -> str:
    return json.dumps([_plain(r) for r in reports], indent=2, ensure_ascii=False)


def to_csv(reports: Sequence[CountryReport]) -> str:
    buf = io.StringIO()
    rows = [_plain(r) for r in reports]
    for row in rows:
        row["outstanding_notices"] = " ".join(
            f"{o['notice_id']}v{o['version']}" for o in row["outstanding_notices"]
        )
        row["requests_held_for"] = " ".join(row["requests_held_for"])
        row["copy_drift"] = " ".join(f"{k}={n}" for k, n in row["copy_drift"].items())
        row["copy_examples"] = " ".join(
            f"{e['notice_id']}:{e['kind']}" for e in row["copy_examples"]
        )
    names = [f for f in CountryReport.__dataclass_fields__]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


_COLOURS = {
    Status.OK: "32",
    Status.COPY_DRIFT: "36",
    Status.LAGGING: "33",
    Status.STALLED: "35",
    Status.SECURITY: "35;1",
    Status.DOWN: "31",
    Status.NEVER_CONNECTED: "31;1",
}


def to_table(
    reports: Sequence[CountryReport], *, colour: bool = False, now: datetime | None = None
) -> str:
    """The main figures, one line per country; ages (the copy check's) as of ``now``."""
    head: tuple[str, ...] = (
        "COUNTRY",
        "SENT",
        "RECORDED",
        "OUTSTANDING",
        "OVERDUE",
        "P50 LAG",
        "P95 LAG",
        "MAX LAG",
        "DELIVERY P95",
        "ANSWER P95",
        "OLDEST WAITING",
        "GROUP LAG",
        "SKEW",
        "STATUS",
    )
    if not reports:
        return "no notices tracked yet"
    security = any(r.security_events for r in reports)  # no column of zeros without MACs
    requests = any(_requests(r) for r in reports)  # nor of dashes without requests
    copies = any(r.copy_status for r in reports)  # nor without copy checks
    now = now or utcnow()
    if requests:
        head = (*head[:-1], "REQ WAIT", "REQ P95", "REQ REFUSED", head[-1])
    if copies:
        head = (*head[:-1], "COPY", head[-1])
    if security:
        head = (*head[:-1], "SECURITY EVENTS", head[-1])
    body = [
        (
            r.country,
            str(r.sent),
            str(r.recorded),
            str(r.outstanding),
            str(r.overdue_record + r.overdue_answer),
            _dur(r.p50_lag_s),
            _dur(r.p95_lag_s),
            _dur(r.max_lag_s),
            _dur(r.delivery_p95_s),
            _dur(r.response_p95_s),
            _dur(r.oldest_outstanding_s),
            "-" if r.consumer_lag is None else str(r.consumer_lag),
            _dur(r.clock_skew_s, signed=True),
            *(_request_cells(r) if requests else ()),
            *((copy_cell(r, now),) if copies else ()),
            *((str(r.security_events),) if security else ()),
            r.status.value,
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = []
    for row, r in zip((head, *body), (None, *reports), strict=True):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        if colour and r is not None:
            cells[-1] = f"\033[{_COLOURS[r.status]}m{cells[-1]}\033[0m"
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _requests(r: CountryReport) -> int:
    """How many requests for notices the country sent HQ (in the report's window)."""
    return r.requests_waiting + r.requests_published + r.requests_refused + r.requests_invalid


def _request_cells(r: CountryReport) -> tuple[str, str, str]:
    """Requests waiting for a reviewer (with the oldest's age), p95 from request to
    publication, and refused; dashes for a country that sent none."""
    if not _requests(r):
        return ("-", "-", "-")
    waiting = str(r.requests_waiting)
    if r.requests_waiting:
        waiting += f" ({_dur(r.request_oldest_waiting_s)}"
        waiting += f": {', '.join(r.requests_held_for)})" if r.requests_held_for else ")"
    return (waiting, _dur(r.request_p95_s), str(r.requests_refused))


def copy_cell(r: CountryReport, now: datetime) -> str:
    """The national copy in a few characters: "ok 2m03s" (VERIFIED, that long ago), "drift 5"
    (differences still there), "mended 3" (a drift the adapter mended), "unverif.", "-"."""
    if r.copy_status is None:
        return "-"
    if r.copy_status == "UNVERIFIABLE":
        return "unverif."
    if r.copy_status == "DRIFT":
        left = sum(r.copy_drift.values())
        return f"drift {left}" if left else f"mended {r.copy_mended}"
    age = (now - r.copy_checked_at).total_seconds() if r.copy_checked_at else None
    return f"ok {_dur(max(age, 0.0))}" if age is not None else "ok"


def _dur(seconds: float | None, *, signed: bool = False) -> str:
    if seconds is None:
        return "-"
    sign = ("+" if seconds >= 0 else "-") if signed else ""
    s = abs(seconds) if signed else seconds
    if round(s, 1) == 0:  # no "-0.0s" for a lag a clock's skew made negative
        return "0.0s"
    if s < 60:
        return f"{sign}{s:.1f}s"
    minutes, secs = divmod(int(s), 60)
    if minutes < 60:
        return f"{sign}{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}h{minutes:02d}m"
