"""How long `notice-bus report` takes over 1,000,000 acknowledgement rows on PostgreSQL.

Tracker tables are filled with COPY: 196 countries x 2,552 notice versions sent (500,192 sent
events), each RECEIVED and RECORDED (1,000,384 acknowledgements), a few hundred outstanding,
a response to one notice in ten, and an hour of consumer-group samples. Then the report is
built three times and the median printed. Target: under 2 s.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import sqlalchemy as sa

from bench.common import postgres, record, say, timed
from notice_bus.reports.report import build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import TRACKER_TABLES
from notice_bus.wire.topics import parse_countries

COUNTRIES = 196
NOTICES = 2552
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def country_codes(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return parse_countries([a + b for a in letters for b in letters][:n])


def fill(url: str) -> int:
    engine = make_engine(url, TRACKER_TABLES)
    engine.dispose()
    rng = random.Random(1)
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    acks = 0
    sent_rows, ack_rows = [], []
    for ci, cc in enumerate(country_codes(COUNTRIES)):
        slow = 5.0 if ci % 20 == 0 else 0.3
        for n in range(NOTICES):
            nid = f"2026/{n}"
            at = T0 + timedelta(seconds=n * 30)
            answered = at + timedelta(hours=1) if n % 10 == 0 else None
            waiting = ci % 50 == 7 and n > NOTICES - 100  # outstanding
            got = at + timedelta(seconds=rng.expovariate(1 / slow))
            done = got + timedelta(seconds=rng.expovariate(1 / slow))
            # The outcome columns as the tracker keeps them (notice_bus.tracker.reconcile).
            outcome = (None, None) if waiting else (got, done)
            sent_rows.append(
                (cc, nid, 1, "PUBLISH", at, at, n % 3, n // 3, *outcome, False, False, at, answered)
            )
            if waiting:
                continue
            ack_rows.append((cc, nid, 1, "RECEIVED", "", got, got, f"{cc}@bench"))
            ack_rows.append((cc, nid, 1, "RECORDED", "", done, done, f"{cc}@bench"))
    acks = len(ack_rows)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        # One COPY at a time: a connection cannot run two.
        with cur.copy(
            "COPY tracker_sent (country, notice_id, version, action, published_at,"
            ' broker_at, partition, "offset", received_at, recorded_at, rejected,'
            " superseded, first_at, answered_at) FROM STDIN"
        ) as copy:
            for row in sent_rows:
                copy.write_row(row)
        with cur.copy(
            "COPY tracker_ack (country, notice_id, version, status, position, at,"
            " broker_at, adapter_id) FROM STDIN"
        ) as copy:
            for row in ack_rows:
                copy.write_row(row)
        with cur.copy(
            "COPY tracker_response (country, notice_id, answer, responder, at,"
            " broker_at) FROM STDIN"
        ) as copy:
            for cc in country_codes(COUNTRIES):
                for n in range(0, NOTICES, 10):
                    at = T0 + timedelta(seconds=n * 30 + 3600)
                    copy.write_row((cc, f"2026/{n}", "NO_TRACE", "bench", at, at))
        cur.execute("ANALYZE")
    return acks


def main() -> None:
    with postgres() as url:
        say(f"filling tracker tables on PostgreSQL ({COUNTRIES} countries) ...")
        acks = fill(url)
        engine = make_engine(url, TRACKER_TABLES)
        settings = Settings()
        now = T0 + timedelta(seconds=NOTICES * 30 + 600)
        median, runs = timed(lambda: build_report(engine, settings, clock=lambda: now))
        rows = build_report(engine, settings, clock=lambda: now)
        engine.dispose()
    say(
        f"report over {acks:,} acknowledgement rows: median {median:.2f} s"
        f" (runs: {', '.join(f'{r:.2f}' for r in runs)}), {len(rows)} countries; target < 2 s"
    )
    record(
        {
            "report_1m_rows_s": round(median, 3),
            "report_1m_rows_runs_s": runs,
            "report_1m_ack_rows": acks,
        }
    )


if __name__ == "__main__":
    main()
