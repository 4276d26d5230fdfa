"""Ops' commands at HQ: ``tracker``, ``report`` and ``dashboard``."""

from __future__ import annotations

import argparse
import logging
import sys

from notice_bus.cli.common import Command, country_list, duration, stop_on_signals
from notice_bus.errors import OutputError
from notice_bus.runtime.settings import Settings

log = logging.getLogger("notice_bus")


def _tracker_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--database-url",
        help="the tracker's database (default: the tracker_database_url setting)",
    )
    c.add_argument(
        "--workers", type=int, default=1, help="processes, each reading some countries' topics"
    )
    c.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: none)"
    )
    c.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics listen on")


def _report_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--format", choices=["table", "json", "csv", "html"], default="table", help="output format"
    )
    c.add_argument(
        "--country", type=country_list, help="only these countries, e.g. FR,TH (default: all)"
    )
    c.add_argument(
        "--since",
        type=duration,
        help="only notices sent in the last 15m, 2h, 7d (default: all of them)",
    )
    c.add_argument("--output", help="write to this file (default: standard output)")
    c.add_argument(
        "--database-url",
        help="the tracker's database (default: the tracker_database_url setting)",
    )


def _dashboard_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--host", default="127.0.0.1", help="address to listen on")
    c.add_argument("--port", type=int, default=8080, help="port to listen on")
    c.add_argument(
        "--database-url",
        help="the tracker's database (default: the tracker_database_url setting)",
    )
    c.add_argument(
        "--no-review",
        action="store_true",
        help="without the review queue page (/review: approve or refuse the bureaus' held"
        " requests; no login of its own, so keep it on loopback or behind access control)",
    )


def _cmd_tracker(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.runtime.db import make_engine
    from notice_bus.tracker.escalation import Escalator
    from notice_bus.tracker.ingest import Tracker
    from notice_bus.tracker.tables import TRACKER_TABLES
    from notice_bus.tracker.workers import TrackerWorkers

    url = args.database_url or settings.tracker_database_url
    engine = make_engine(url, TRACKER_TABLES)  # made here, not raced for by the workers
    if args.metrics_port is not None:
        from notice_bus.reports.metrics import tracker_registry
        from notice_bus.reports.report import build_report
        from notice_bus.runtime.prometheus import serve

        registry = tracker_registry(engine, lambda: build_report(engine, settings))
        serve(registry, args.metrics_port, args.metrics_host)
    if args.workers > 1:
        workers = TrackerWorkers(settings, args.workers, database_url=url)
        log.info("tracker: %d workers, one process each", args.workers)
        workers.supervise(stop_on_signals())
        return 0
    tracker = Tracker(settings, database_url=url)
    escalator = Escalator(settings, tracker.engine)
    tracker.on_sample = escalator  # deadlines checked after every sampling round
    try:
        tracker.run(stop_on_signals())
    finally:
        escalator.close()
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from notice_bus.reports.formats import to_csv, to_json, to_table
    from notice_bus.reports.report import build_report, open_tracker_database

    # Never made here: a mistyped URL is an error, not an empty report.
    engine = open_tracker_database(args.database_url or settings.tracker_database_url)
    countries: list[str] = args.country or []
    reports = build_report(engine, settings, since=args.since, countries=countries)
    if args.format == "json":
        text = to_json(reports)
    elif args.format == "csv":
        text = to_csv(reports)
    elif args.format == "html":
        from notice_bus.reports.html import render_html

        text = render_html(engine, settings, reports)
    else:
        text = to_table(reports, colour=args.output is None and sys.stdout.isatty())
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write the report to {args.output}: {exc}") from exc
        print(f"report written to {args.output}")
    else:
        print(text)
    return 0


def _cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    import threading

    from notice_bus.hq.publisher import HQ
    from notice_bus.hq.review import Review
    from notice_bus.hq.review_page import review_routes
    from notice_bus.reports.dashboard import serve

    hqs: list[HQ] = []  # one HQ for the page's lifetime, opened on first use
    reviews: list[Review] = []
    opening = threading.Lock()

    def open_review() -> Review:
        with opening:
            if not hqs:
                hqs.append(HQ(settings))
            if not reviews:
                reviews.append(Review(hqs[0]))
            return reviews[0]

    review = not args.no_review
    print(f"dashboard on http://{args.host}:{args.port}/", flush=True)
    if review:
        print(f"review queue on http://{args.host}:{args.port}/review", flush=True)
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("the review queue has no login: serve it behind HQ's access control")
    try:
        serve(
            settings,
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            extra_routes=review_routes(open_review) if review else (),
            links=[("Review queue", "/review")] if review else (),
        )
    finally:
        for hq in hqs:
            hq.close()
    return 0


COMMANDS = {
    "tracker": Command(
        "record every country's acknowledgements for HQ",
        _tracker_args,
        _cmd_tracker,
    ),
    "report": Command(
        "per-country response-lag report, worst first",
        _report_args,
        _cmd_report,
    ),
    "dashboard": Command(
        "serve the report live in a browser",
        _dashboard_args,
        _cmd_dashboard,
    ),
}
