"""The ``notice-bus`` command: what each of the commands of :mod:`notice_bus.cli_args` does.

Errors print one line and exit with the code of :mod:`notice_bus.exit_codes`.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from notice_bus.cli_args import parser
from notice_bus.errors import AlreadyCancelled, ConfigError, NoticeBusError, OutputError
from notice_bus.exit_codes import EX_INTERRUPTED, EX_SOFTWARE, exit_code
from notice_bus.settings import Settings

if TYPE_CHECKING:
    from notice_bus.local_system import Systems

log = logging.getLogger("notice_bus")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every reconnect attempt at WARNING/ERROR; keep ours readable.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        settings = Settings.load(args.config)
        return COMMANDS[args.command](args, settings)
    except NoticeBusError as exc:
        print(f"notice-bus: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except Exception as exc:  # a bug: say so, with what a report of it needs
        traceback.print_exc()
        print(f"notice-bus: internal error: {exc!r}", file=sys.stderr)
        return EX_SOFTWARE


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a running loop finishes its batch and leaves."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from notice_bus.local_broker import LocalBroker

    broker = LocalBroker(Path(args.data) if args.data else None, port=args.port)
    again = args.data and (Path(args.data) / "data" / "meta.properties").exists()
    print(
        f"starting the Kafka broker of {args.data} again (cluster {broker.cluster_id})..."
        if again
        else "starting a local Kafka broker (the first run fetches its jars with Maven)...",
        flush=True,
    )
    try:
        broker.start()
    except BaseException:  # Ctrl-C while starting: Java runs in its own session, stop it too
        broker.stop()
        raise
    print(
        f"Kafka is up at {broker.bootstrap_servers}\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    stop = _stop_on_signals()
    try:
        stop.wait()
    finally:
        broker.stop()
    return 0


def _cmd_topics_init(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.topics import init_topics

    created = init_topics(settings, args.countries)
    print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))
    return 0


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ, read_drafts

    # Every notice is checked before HQ connects to anything, so nothing is sent unless all
    # are valid, and a bad file is told at once even with the broker away.
    drafts = read_drafts("/dev/stdin" if args.file == "-" else args.file)
    with HQ(settings) as hq:
        events = hq.publish(drafts)
    for e in events:
        print(f"{e.action.value.lower():8} {e.notice_id} v{e.version}")
    skipped = len(drafts) - len(events)
    print(f"{len(events)} sent" + (f", {skipped} unchanged and skipped" if skipped else ""))
    return 0


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ

    with HQ(settings) as hq:
        try:
            event = hq.cancel(args.notice_id, args.reason or "")
        except AlreadyCancelled:  # a retried cancel has what it wanted
            print(f"cancel   {args.notice_id} already cancelled")
            return 0
    print(f"cancel   {event.notice_id} v{event.version}")
    return 0


def _cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ

    with HQ(settings) as hq:
        print(f"{hq.relay()} outbox records sent")
    return 0


def _cmd_adapter(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.adapter_workers import AdapterWorkers, run_adapter

    countries: list[str] = args.country
    if args.batch_size:
        settings = settings.with_(batch_size=args.batch_size)
    systems = _systems(args, settings)
    if len(countries) > 1 and not any("{country}" in str(v) for v in systems.options.values()):
        raise ConfigError(
            "several countries need a local system each: put {country} in --database-url"
            " (e.g. sqlite:///.notice-bus/{country}.db) or in the plug-in's options"
        )
    given = {
        "hub": args.hub,
        "from_beginning": args.from_beginning,
        "instance_id": args.instance_id,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
    }
    stop = _stop_on_signals()
    if args.processes > 1:
        workers = AdapterWorkers(settings, countries, systems, args.processes, **given)
        try:  # workers wait for an absent broker as long as it takes, saying so
            ready = workers.wait_ready(timeout_s=math.inf, stop=stop)
        except NoticeBusError:
            workers.stop()
            raise
        if not ready:  # stopped before the broker came
            workers.stop()
            return 0
        log.info("adapter: %d countries in %d processes", len(countries), args.processes)
        workers.supervise(stop)
        return 0
    run_adapter(settings, {cc: systems.sink(cc) for cc in countries}, stop, **given)
    return 0


def _systems(args: argparse.Namespace, settings: Settings) -> Systems:
    """Where the local systems are, from the options of :func:`_add_system_options`."""
    from notice_bus.local_system import Systems, read_system_config

    if args.database_url:
        options: dict[str, object] = {"database_url": args.database_url}
    elif args.system_config:
        options = read_system_config(args.system_config)
    else:
        raise ConfigError("give --database-url, or --system with --system-config")
    ledger = args.ledger_url or settings.ledger_database_url or None
    return Systems(args.system or "sql", options, ledger_url=ledger)


def _cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.dlq import list_parked, to_json, to_table
    from notice_bus.topics import TopicNames

    country: str = args.country
    parked = list_parked(settings, country)
    if args.format == "json":
        print(to_json(parked))
    else:
        print(to_table(parked, TopicNames(settings.topic_prefix).dead_letters(country)))
    return 0


def _cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.dlq import replay, summary

    country: str = args.country
    sink = _systems(args, settings).sink(country)
    try:
        result = replay(settings, country, sink)
    finally:
        sink.close()
    print(summary(result))
    return 0


def _cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ

    country: str = args.country
    with HQ(settings) as hq:
        print(f"{hq.bootstrap(country)} active notices sent to {country}")
    return 0


def _cmd_tracker(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.db import make_engine
    from notice_bus.escalation import Escalator
    from notice_bus.tables import TRACKER_TABLES
    from notice_bus.tracker import Tracker
    from notice_bus.tracker_workers import TrackerWorkers

    url = args.database_url or settings.tracker_database_url
    engine = make_engine(url, TRACKER_TABLES)  # made here, not raced for by the workers
    if args.metrics_port is not None:
        from notice_bus.metrics import serve, tracker_registry
        from notice_bus.report import build_report

        registry = tracker_registry(engine, lambda: build_report(engine, settings))
        serve(registry, args.metrics_port, args.metrics_host)
    if args.workers > 1:
        workers = TrackerWorkers(settings, args.workers, database_url=url)
        log.info("tracker: %d workers, one process each", args.workers)
        workers.supervise(_stop_on_signals())
        return 0
    tracker = Tracker(settings, database_url=url)
    escalator = Escalator(settings, tracker.engine)
    tracker.on_sample = escalator  # deadlines checked after every sampling round
    try:
        tracker.run(_stop_on_signals())
    finally:
        escalator.close()
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from notice_bus.report import build_report, open_tracker_database, to_csv, to_json, to_table

    # Never made here: a mistyped URL is an error, not an empty report.
    engine = open_tracker_database(args.database_url or settings.tracker_database_url)
    countries: list[str] = args.country or []
    reports = build_report(engine, settings, since=args.since, countries=countries)
    if args.format == "json":
        text = to_json(reports)
    elif args.format == "csv":
        text = to_csv(reports)
    elif args.format == "html":
        from notice_bus.report_html import render_html

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
    from notice_bus.dashboard import serve

    print(f"dashboard on http://{args.host}:{args.port}/", flush=True)
    serve(settings, host=args.host, port=args.port, database_url=args.database_url)
    return 0


def _cmd_respond(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau_channel import respond
    from notice_bus.model import Answer

    respond(settings, args.country, args.notice_id, Answer(args.answer), args.text, args.responder)
    print(f"{args.country} answered {args.answer} to {args.notice_id}")
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.demo import run_demo

    return run_demo(settings, notices=args.notices)


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.migrations import upgrade_database

    for line in upgrade_database(args.database_url, args.role or ()):
        print(line)
    return 0


#: Each command of :func:`notice_bus.cli_args.parser`, by the name it sets in ``args.command``.
COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "broker": _cmd_broker,
    "topics init": _cmd_topics_init,
    "publish": _cmd_publish,
    "cancel": _cmd_cancel,
    "relay": _cmd_relay,
    "adapter": _cmd_adapter,
    "dlq list": _cmd_dlq_list,
    "dlq replay": _cmd_dlq_replay,
    "bootstrap": _cmd_bootstrap,
    "tracker": _cmd_tracker,
    "report": _cmd_report,
    "dashboard": _cmd_dashboard,
    "respond": _cmd_respond,
    "demo": _cmd_demo,
    "db upgrade": _cmd_db_upgrade,
}


if __name__ == "__main__":
    sys.exit(main())
