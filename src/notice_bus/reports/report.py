"""The response-lag report: per country, what was sent, recorded and answered, how late, how
the consumer group looks from the broker, and a status; worst first.

Lags run between broker timestamps (see :mod:`notice_bus.tracker.measures`), so a bureau whose
clock is wrong cannot distort them; its clock skew is reported instead. The status comes from the
acknowledgements first, the evidence every bureau gives whatever its language or consumer
group; the consumer-side window (:mod:`notice_bus.tracker.group_health`), when the tracker has
sampled the country's group, only refines what is wrong (:func:`country_status`). Security
events (acknowledgements or answers whose MAC failed) are counted apart (:func:`security_status`).
A country's national copy is as its latest copy check tells (:mod:`notice_bus.tracker.copies`):
differences still there make COPY_DRIFT, which outranks OK only (:func:`copy_status`).
HQ's own lag, on the requests the country's bureau sent it, is reported beside
(:mod:`notice_bus.tracker.requests`): it does not enter the country's status.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from notice_bus.errors import ConfigError
from notice_bus.runtime.db import as_utc, make_engine, redact, translate_errors
from notice_bus.runtime.settings import Settings
from notice_bus.tracker import measures
from notice_bus.tracker.copies import CopyState, latest_checks
from notice_bus.tracker.group_health import (
    Sample,
    Status,
    classify,
    copy_status,
    security_status,
)
from notice_bus.tracker.policy import Policy
from notice_bus.tracker.requests import request_figures
from notice_bus.tracker.tables import GROUP_SAMPLE, SENT, TRACKER_TABLES
from notice_bus.wire.model import utcnow

__all__ = [
    "CountryReport",
    "Status",
    "build_report",
    "copy_status",
    "country_status",
    "open_tracker_database",
    "security_status",
]


@dataclass(frozen=True, slots=True)
class CountryReport:
    country: str
    sent: int
    recorded: int
    rejected: int
    outstanding: int
    p50_lag_s: float | None
    p95_lag_s: float | None
    max_lag_s: float | None
    oldest_outstanding_s: float | None
    status: Status
    delivery_p95_s: float | None = None
    response_p95_s: float | None = None
    answered: int = 0
    overdue_record: int = 0
    overdue_answer: int = 0
    consumer_lag: int | None = None
    consumer_time_lag_s: float | None = None
    clock_skew_s: float | None = None
    last_seen_s: float | None = None
    #: Acknowledgements and answers of the country whose MAC failed (tracker_security_event).
    security_events: int = 0
    #: The oldest outstanding notices: (notice id, version, age in seconds), up to ten.
    outstanding_notices: list[tuple[str, int, float]] = field(default_factory=list)
    # HQ's own lag on the country's requests for notices (tracker_request): how many wait
    # for a reviewer, were published, refused or invalid; seconds from the request's arrival
    # to its publication; the age of the oldest request waiting for a reviewer, and the
    # screening rules that hold the waiting ones.
    requests_waiting: int = 0
    requests_published: int = 0
    requests_refused: int = 0
    requests_invalid: int = 0
    request_p50_s: float | None = None
    request_p95_s: float | None = None
    request_oldest_waiting_s: float | None = None
    requests_held_for: list[str] = field(default_factory=list)
    # The national copy, as the country's latest copy check tells (tracker_copy_check; the
    # window does not apply: a copy is as its latest check says): VERIFIED, DRIFT or
    # UNVERIFIABLE (None: never checked); when that check arrived and when a check last found
    # the copy VERIFIED (broker time; None: never); the differences still there by kind
    # (those the adapter did not mend), how many it mended, why (UNVERIFIABLE, a partial
    # check), and up to ten of the differences still there as (notice id, kind).
    copy_status: str | None = None
    copy_checked_at: datetime | None = None
    copy_verified_at: datetime | None = None
    copy_drift: dict[str, int] = field(default_factory=dict)
    copy_mended: int = 0
    copy_reason: str | None = None
    copy_examples: list[tuple[str, str]] = field(default_factory=list)


def classify_acks(
    *,
    sent: int,
    outstanding: int,
    p95: float | None,
    oldest: float | None,
    last_seen: float | None,
    settings: Settings,
    rejected: int = 0,
    threshold_s: float | None = None,
) -> Status:
    """Status from acknowledgements alone: OK unless the p95 apply lag or the oldest
    outstanding notice is past ``threshold_s`` (default: the ``lag_threshold_s`` setting);
    then NEVER_CONNECTED if the country never acknowledged anything (``last_seen`` None and
    nothing ``rejected``), DOWN if it has been silent for ``down_after_s``, else LAGGING. A
    country never heard of with notices outstanding, however young, is NEVER_CONNECTED."""
    limit = settings.lag_threshold_s if threshold_s is None else threshold_s
    if sent == 0 or (outstanding == 0 and (p95 or 0) <= limit):
        return Status.OK  # nothing to do is not a fault
    if last_seen is None and not rejected:
        return Status.NEVER_CONNECTED
    if outstanding and last_seen is not None and last_seen > settings.down_after_s:
        return Status.DOWN
    if (p95 or 0) > limit or (oldest or 0) > limit:
        return Status.LAGGING
    return Status.OK


def country_status(
    by_acks: Status, window: Sequence[Sample], *, lag_threshold_s: float, stall_after_s: float
) -> Status:
    """A country's status from its acknowledgements' (``by_acks``, :func:`classify_acks`)
    and its consumer group's ``window`` of samples, oldest first.

    Acknowledgements decide whether anything is wrong: a bureau need not consume in the group
    ``notice-bus.CC`` (one written in another language, a hub, a replay), and the tracker's
    samples may be stale or of another broker. So the result is OK exactly when ``by_acks``
    is; a country that acknowledges is never NEVER_CONNECTED; and one with notices
    outstanding past the threshold is never OK. The group, when it has samples, says what is
    wrong:

    - the group DOWN (it committed, nobody is left, work waits) or STALLED (members present,
      offsets still): that;
    - the group never committed: ``by_acks`` (NEVER_CONNECTED only if it never
      acknowledged either);
    - the group consuming or caught up with members present: LAGGING, since someone is there;
      nobody present: ``by_acks``, DOWN instead of NEVER_CONNECTED if the group committed.
    """
    if by_acks is Status.OK or not window:
        return by_acks
    by_group = classify(window, lag_threshold_s=lag_threshold_s, stall_after_s=stall_after_s)
    if by_group in (Status.DOWN, Status.STALLED):
        return by_group
    if by_group is Status.NEVER_CONNECTED:
        return by_acks
    if window[-1].members > 0:
        return Status.LAGGING
    if by_acks is Status.NEVER_CONNECTED and any(s.committed is not None for s in window):
        return Status.DOWN
    return by_acks


def open_tracker_database(url: str) -> Engine:
    """The tracker's database at ``url``, opened to read the report from, and brought to the
    current schema as the tracker itself would bring it.

    Never made: raises :class:`ConfigError` naming the database when it does not exist, i.e.
    a SQLite file that is missing (a typo in the URL) or a database without the tracker's
    tables (an adapter's, an empty one), rather than report "no notices tracked yet" from a
    database made for the occasion. A server that does not answer is an outage
    (:class:`~notice_bus.errors.LocalSystemUnavailable`), as everywhere.
    """
    where = redact(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"bad database URL {where}: {exc}") from exc
    file = parsed.database or ""
    in_memory = file in ("", ":memory:")
    if parsed.get_backend_name() == "sqlite" and not in_memory and not Path(file).is_file():
        raise ConfigError(
            f"no tracker database at {where}: {file} does not exist"
            " (is the URL right? the tracker makes it when it starts)"
        )
    probe = make_engine(url, ping=False)  # no tables named: nothing made
    try:
        with translate_errors(url), probe.connect() as conn:
            found = inspect(conn).has_table(SENT.name)
    finally:
        probe.dispose()
    if not found:
        raise ConfigError(
            f"{where} holds no tracker tables ({SENT.name} ...): not the tracker's database"
        )
    return make_engine(url, TRACKER_TABLES)


def build_report(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    since: timedelta | None = None,
    countries: Sequence[str] = (),
) -> list[CountryReport]:
    """One row per country the tracker knows (or per country of ``countries``), worst first."""
    now = clock()
    start = now - since if since else None
    policy = Policy.from_settings(settings)
    with translate_errors(str(engine.url)), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Percentiles sort every lag of the window; let those sorts stay in memory.
            conn.exec_driver_sql("SET LOCAL work_mem = '128MB'")
        counts = measures.counts(conn, start)
        apply, delivery = measures.lag_quantiles(conn, start)
        response = measures.quantiles(conn, measures.response_lags(conn, start), [95])
        # A clock's skew is what it is now: the last hour (or the window asked for) tells.
        recent = start or now - timedelta(hours=1)
        skew = measures.quantiles(conn, measures.clock_skews(conn, recent), [50])
        waiting = measures.outstanding(conn, start)
        security = measures.security_events(conn, start)
        requests = request_figures(conn, now, start)
        copies = latest_checks(conn)
        seen = {c: as_utc(v["seen"]) for c, v in counts.items() if v["seen"] is not None}
        samples = _samples(conn, now - timedelta(seconds=settings.window_s))
        overdue_answer = measures.overdue_answers(
            conn,
            now - timedelta(seconds=policy.default.answer_within_s),
            {cc: now - timedelta(seconds=d.answer_within_s) for cc, d in policy.countries.items()},
        )

    per_waiting: dict[str, list[Any]] = defaultdict(list)
    for row in waiting:
        per_waiting[row.country].append(row)

    # A country that only asked HQ for notices has a row too.
    known = set(counts) | set(samples) | set(seen) | set(security) | set(requests) | set(copies)
    wanted = [c for c in countries if c in known] if countries else sorted(known)
    reports = []
    for cc in wanted:
        c = counts[cc]
        ages = [(now - as_utc(r.broker_at)).total_seconds() for r in per_waiting[cc]]
        oldest = max(ages) if ages else None
        lag = apply.get(cc, {})
        window = samples.get(cc, [])
        seen_s = (now - seen[cc]).total_seconds() if cc in seen else None
        deadline = policy.of(cc).record_within_s
        by_acks = classify_acks(
            sent=c["sent"],
            outstanding=len(ages),
            p95=lag.get(95),
            oldest=oldest,
            last_seen=seen_s,
            settings=settings,
            rejected=c["rejected"],
            # A country's own record deadline, when tighter than the lag threshold.
            threshold_s=min(settings.lag_threshold_s, deadline),
        )
        status = country_status(
            by_acks,
            window,
            lag_threshold_s=settings.lag_threshold_s,
            stall_after_s=settings.stall_after_s,
        )
        status = security_status(status, security.get(cc, 0))
        copy = copies.get(cc)
        status = copy_status(status, copy is not None and copy.drifting)
        reports.append(
            CountryReport(
                country=cc,
                sent=c["sent"],
                recorded=c["recorded"],
                rejected=c["rejected"],
                outstanding=len(ages),
                p50_lag_s=lag.get(50),
                p95_lag_s=lag.get(95),
                max_lag_s=lag.get(100),
                oldest_outstanding_s=oldest,
                status=status,
                delivery_p95_s=delivery.get(cc, {}).get(95),
                response_p95_s=response.get(cc, {}).get(95),
                answered=c["answered"],
                overdue_record=sum(1 for a in ages if a > deadline),
                overdue_answer=overdue_answer.get(cc, 0),
                consumer_lag=window[-1].lag if window else None,
                consumer_time_lag_s=window[-1].time_lag_s if window else None,
                clock_skew_s=skew.get(cc, {}).get(50),
                last_seen_s=seen_s,
                security_events=security.get(cc, 0),
                outstanding_notices=[
                    (r.notice_id, r.version, a)
                    for r, a in zip(per_waiting[cc][:10], ages[:10], strict=False)
                ],
                **requests.get(cc, {}),
                **_copy_fields(copy),
            )
        )
    order = list(Status)
    return sorted(
        reports,
        key=lambda r: (
            order.index(r.status),
            -(r.overdue_record),
            -(r.oldest_outstanding_s or 0),
            -(r.p95_lag_s or 0),
            r.country,
        ),
    )


def _copy_fields(copy: CopyState | None) -> dict[str, Any]:
    if copy is None:
        return {}
    return {
        "copy_status": copy.status.value,
        "copy_checked_at": copy.checked_at,
        "copy_verified_at": copy.verified_at,
        "copy_drift": dict(copy.drift),
        "copy_mended": copy.mended,
        "copy_reason": copy.reason,
        "copy_examples": list(copy.examples),
    }


def _samples(conn: Any, since: datetime) -> dict[str, list[Sample]]:
    query = (
        select(GROUP_SAMPLE)
        .where(GROUP_SAMPLE.c.at >= since)
        .order_by(GROUP_SAMPLE.c.country, GROUP_SAMPLE.c.at)
    )
    out: dict[str, list[Sample]] = defaultdict(list)
    for r in conn.execute(query):
        out[r.country].append(
            Sample(as_utc(r.at), r.end_offset, r.committed, r.members, r.time_lag_s)
        )
    return out


# --- rendering ---------------------------------------------------------------------------------
