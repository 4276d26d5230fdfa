"""The ``notice-bus`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from notice_bus.errors import NoticeBusError
from notice_bus.settings import STATE_DIR, Settings

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
    from notice_bus.adapter import Adapter
    from notice_bus.errors import ConfigError
    from notice_bus.local_system import as_sink, load_system, read_system_config
    from notice_bus.topics import parse_countries

    countries = parse_countries(args.country)
    if len(countries) != 1:
        raise ConfigError("--country takes one country code")
    [country] = countries
    if args.batch_size:
        settings = settings.with_(batch_size=args.batch_size)
    if args.database_url:
        options: dict[str, object] = {"database_url": args.database_url}
    elif args.system_config:
        options = read_system_config(args.system_config)
    else:
        raise ConfigError("give --database-url, or --system with --system-config")
    name = args.system or "sql"
    ledger = args.ledger_url or f"sqlite:///{STATE_DIR}/ledger-{country}.db"
    sink = as_sink(load_system(name, options), ledger)
    adapter = Adapter(
        settings, country, sink, from_beginning=args.from_beginning, instance_id=args.instance_id
    )
    adapter.run(_stop_on_signals())
    return 0


def _cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import HQ
    from notice_bus.topics import parse_countries

    [country] = parse_countries(args.country)
    with HQ(settings) as hq:
        print(f"{hq.bootstrap(country)} active notices sent to {country}")
    return 0


def _cmd_tracker(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.tracker import Tracker

    Tracker(settings, database_url=args.database_url).run(_stop_on_signals())
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.db import make_engine
    from notice_bus.report import build_report, to_json, to_table
    from notice_bus.tables import TRACKER_TABLES

    engine = make_engine(args.database_url or settings.tracker_database_url, TRACKER_TABLES)
    reports = build_report(engine, settings)
    print(to_json(reports) if args.format == "json" else to_table(reports))
    return 0


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
    c.add_argument("--country", required=True)
    c.add_argument(
        "--database-url",
        help="our own table in this database: postgresql://user:pw@host/db or sqlite:///fr.db",
    )
    c.add_argument(
        "--system",
        help="local-system plug-in: sql, legacy-postgres, rest, file-drop, or module:Class",
    )
    c.add_argument("--system-config", help="TOML file of the plug-in's options")
    c.add_argument(
        "--ledger-url",
        help="where a plug-in's version ledger lives (default .notice-bus/ledger-CC.db)",
    )
    c.add_argument(
        "--from-beginning",
        action="store_true",
        help="re-read every notice (to rebuild a local copy), then follow live traffic",
    )
    c.add_argument(
        "--instance-id",
        help="a stable name for this instance (static group membership: fast restarts)",
    )
    c.add_argument("--batch-size", type=int)

    c = command("bootstrap", _cmd_bootstrap, "send a country every notice active now")
    c.add_argument("--country", required=True, help="a country that joined late")

    c = command("tracker", _cmd_tracker, "record every country's acknowledgements for HQ")
    c.add_argument("--database-url", help="default: settings.tracker_database_url")

    c = command("report", _cmd_report, "per-country response-lag report")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.add_argument("--database-url", help="the tracker's database")

    c = command("demo", _cmd_demo, "run HQ, a tracker and adapters on a local broker")
    c.add_argument("--notices", type=int, default=300)
    return p


if __name__ == "__main__":
    sys.exit(main())
