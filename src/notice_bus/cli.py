"""The ``notice-bus`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from notice_bus.errors import NoticeBusError
from notice_bus.settings import Settings

if TYPE_CHECKING:
    from notice_bus.local_system import Systems

log = logging.getLogger("notice_bus")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every reconnect attempt at WARNING/ERROR; keep ours readable.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        settings = Settings.load(args.config)
        result: int = args.func(args, settings)
        return result
    except NoticeBusError as exc:
        print(f"notice-bus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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

    broker = LocalBroker(Path(args.data) if args.data else None)
    print(
        "starting a local Kafka broker (the first run fetches its jars with Maven)...", flush=True
    )
    broker.start()
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
    from notice_bus.topics import init_topics, parse_countries

    created = init_topics(settings, parse_countries(args.countries))
    print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))
    return 0


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ, read_drafts

    drafts = read_drafts(args.file)  # every notice is checked before anything is sent
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
        event = hq.cancel(args.notice_id, args.reason or "")
    print(f"cancel   {event.notice_id} v{event.version}")
    return 0


def _cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ

    with HQ(settings) as hq:
        print(f"{hq.relay()} outbox records sent")
    return 0


def _cmd_adapter(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.adapter_workers import AdapterWorkers, run_adapter
    from notice_bus.errors import ConfigError
    from notice_bus.topics import parse_countries

    countries = parse_countries(args.country)
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
        try:
            workers.wait_ready(timeout_s=600)
        except NoticeBusError:
            workers.stop()
            raise
        log.info("adapter: %d countries in %d processes", len(countries), args.processes)
        workers.supervise(stop)
        return 0
    run_adapter(settings, {cc: systems.sink(cc) for cc in countries}, stop, **given)
    return 0


def _systems(args: argparse.Namespace, settings: Settings) -> Systems:
    """Where the local systems are, from the options of :func:`_add_system_options`."""
    from notice_bus.errors import ConfigError
    from notice_bus.local_system import Systems, read_system_config

    if args.database_url:
        options: dict[str, object] = {"database_url": args.database_url}
    elif args.system_config:
        options = read_system_config(args.system_config)
    else:
        raise ConfigError("give --database-url, or --system with --system-config")
    ledger = args.ledger_url or settings.ledger_database_url or None
    return Systems(args.system or "sql", options, ledger_url=ledger)


def _one_country(text: str) -> str:
    from notice_bus.errors import ConfigError
    from notice_bus.topics import parse_countries

    countries = parse_countries(text)
    if len(countries) != 1:
        raise ConfigError(f"give one country, not {text!r}")
    return countries[0]


def _cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.dlq import list_parked, to_json, to_table
    from notice_bus.topics import TopicNames

    country = _one_country(args.country)
    parked = list_parked(settings, country)
    if args.format == "json":
        print(to_json(parked))
    else:
        print(to_table(parked, TopicNames(settings.topic_prefix).dead_letters(country)))
    return 0


def _cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.dlq import replay, summary

    country = _one_country(args.country)
    sink = _systems(args, settings).sink(country)
    try:
        result = replay(settings, country, sink)
    finally:
        sink.close()
    print(summary(result))
    return 0


def _cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ
    from notice_bus.topics import parse_countries

    [country] = parse_countries(args.country)
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
        from prometheus_client import CollectorRegistry

        from notice_bus.metrics import ReportCollector, serve
        from notice_bus.report import build_report

        registry = CollectorRegistry()
        registry.register(ReportCollector(lambda: build_report(engine, settings)))
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

    from notice_bus.db import make_engine
    from notice_bus.report import build_report, to_csv, to_json, to_table
    from notice_bus.tables import TRACKER_TABLES
    from notice_bus.topics import parse_countries

    engine = make_engine(args.database_url or settings.tracker_database_url, TRACKER_TABLES)
    countries = parse_countries(args.country) if args.country else []
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
        Path(args.output).write_text(text, encoding="utf-8")
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
    from notice_bus.topics import parse_countries

    [country] = parse_countries(args.country)
    respond(settings, country, args.notice_id, Answer(args.answer), args.text, args.responder)
    print(f"{country} answered {args.answer} to {args.notice_id}")
    return 0


def _duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration like 15m or 2h: {text!r}") from None


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.demo import run_demo

    return run_demo(settings, notices=args.notices)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="notice-bus", description=__doc__)
    p.add_argument("--config", help="TOML settings file (default: notice-bus.toml if present)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: object, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        return c

    c = command("broker", _cmd_broker, "start a local single-node Kafka broker and wait")
    c.add_argument("--data", help="keep the broker's data in this folder (default: temporary)")

    topics = command("topics", None, "manage topics").add_subparsers(
        required=True, metavar="ACTION"
    )
    c = topics.add_parser("init", help="create the topics of the given countries (idempotent)")
    c.set_defaults(func=_cmd_topics_init)
    c.add_argument("--countries", required=True, help="comma-separated ISO codes, e.g. FR,ID,TH")

    c = command("publish", _cmd_publish, "publish or update the notices of a JSON file")
    c.add_argument("file", help="one notice or a list, our shape or INTERPOL's API detail shape")

    c = command("cancel", _cmd_cancel, "cancel a notice everywhere it was sent")
    c.add_argument("notice_id")
    c.add_argument("--reason", help="why it is withdrawn")

    command("relay", _cmd_relay, "send what HQ's outbox still holds")

    c = command("adapter", _cmd_adapter, "run a country's adapter into its local system")
    c.add_argument(
        "--country",
        required=True,
        help="a country code, or several (FR,BE,LU) to run their adapters in one process",
    )
    _add_system_options(c)
    c.add_argument(
        "--from-beginning",
        action="store_true",
        help="re-read every notice (to rebuild a local copy), then follow live traffic",
    )
    c.add_argument(
        "--instance-id",
        help="a stable name for this instance (static group membership: fast restarts)",
    )
    c.add_argument(
        "--hub",
        help="name of the consumer group of several countries (default: from the countries)",
    )
    c.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split the countries across this many processes (each a hub of its own)",
    )
    c.add_argument("--batch-size", type=int)
    c.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (process i of --processes on port + i)",
    )
    c.add_argument("--metrics-host", default="127.0.0.1")

    dlq = command("dlq", None, "a country's dead-letter topic").add_subparsers(
        required=True, metavar="ACTION"
    )
    c = dlq.add_parser("list", help="every parked record, oldest first, and if it was replayed")
    c.set_defaults(func=_cmd_dlq_list)
    c.add_argument("--country", required=True)
    c.add_argument("--format", choices=["table", "json"], default="table")
    c = dlq.add_parser(
        "replay",
        help="run the records parked since the last replay through the adapter's pipeline"
        " again; those still refused are parked again at the end",
    )
    c.set_defaults(func=_cmd_dlq_replay)
    c.add_argument("--country", required=True)
    _add_system_options(c)

    c = command("bootstrap", _cmd_bootstrap, "send a country every notice active now")
    c.add_argument("--country", required=True, help="a country that joined late")

    c = command("tracker", _cmd_tracker, "record every country's acknowledgements for HQ")
    c.add_argument("--database-url", help="default: settings.tracker_database_url")
    c.add_argument(
        "--workers", type=int, default=1, help="processes, each reading some countries' topics"
    )
    c.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    c.add_argument("--metrics-host", default="127.0.0.1")

    c = command("report", _cmd_report, "per-country response-lag report, worst first")
    c.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    c.add_argument("--country", help="only these countries, e.g. FR,TH")
    c.add_argument("--since", type=_duration, help="only notices sent in the last 15m, 2h, 7d")
    c.add_argument("--output", help="write to this file instead of standard output")
    c.add_argument("--database-url", help="the tracker's database")

    c = command("dashboard", _cmd_dashboard, "serve the report live in a browser")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8080)
    c.add_argument("--database-url", help="the tracker's database")

    c = command("respond", _cmd_respond, "a bureau's own answer to a notice")
    c.add_argument("--country", required=True)
    c.add_argument("notice_id")
    c.add_argument("answer", choices=["NO_TRACE", "LOCATED", "ARRESTED", "CANNOT_ACT"])
    c.add_argument("--text", help="free text for HQ")
    c.add_argument("--responder", default="officer", help="who answers")

    c = command("demo", _cmd_demo, "run HQ, a tracker and adapters on a local broker")
    c.add_argument("--notices", type=int, default=300)
    return p


def _add_system_options(c: argparse.ArgumentParser) -> None:
    """Where a country's local system is: ``adapter`` and ``dlq replay`` take the same."""
    c.add_argument(
        "--database-url",
        help="our own table in this database: postgresql://user:pw@host/db or sqlite:///fr.db;"
        " {country} in it stands for each country's code",
    )
    c.add_argument(
        "--system",
        help="local-system plug-in: sql, legacy-postgres, rest, file-drop, or module:Class",
    )
    c.add_argument("--system-config", help="TOML file of the plug-in's options")
    c.add_argument(
        "--ledger-url",
        help="a shared database for plug-ins' version ledgers, {country} allowed (default: the"
        " ledger_database_url setting; a plug-in with a database of its own keeps its ledger"
        " there; else .notice-bus/ledger-{country}.db on this host, with a warning)",
    )


if __name__ == "__main__":
    sys.exit(main())
