"""``notice-bus broker`` and ``notice-bus topics``: a local broker, and the countries' topics."""

from __future__ import annotations

import argparse

from notice_bus.cli.common import Command, country_list, stop_on_signals
from notice_bus.runtime.settings import Settings

#: Help of the commands of actions this module's commands belong to.
GROUPS = {"topics": "manage topics"}


def _broker_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--data",
        help="keep the broker's data in this folder, and start it again from there (default:"
        " a temporary folder, removed when the broker stops)",
    )
    c.add_argument(
        "--port",
        type=int,
        help="the client port on 127.0.0.1 (default: the one kept in --data, else a free one)",
    )


def _topics_init_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--countries", required=True, type=country_list, help="comma-separated ISO codes: FR,ID,TH"
    )


def _cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from notice_bus.runtime.local_broker import LocalBroker

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
    stop = stop_on_signals()
    try:
        stop.wait()
    finally:
        broker.stop()
    return 0


def _cmd_topics_init(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.cli.trust import applied
    from notice_bus.trust.cluster import init_cluster

    done = init_cluster(settings, args.countries)
    print(
        f"created {len(done.created)} topics"
        + (": " + ", ".join(done.created) if done.created else "")
    )
    if done.applied is not None:
        print(applied(done.applied))
    return 0


COMMANDS = {
    "broker": Command(
        "start a local single-node Kafka broker and wait",
        _broker_args,
        _cmd_broker,
    ),
    "topics init": Command(
        "create the given countries' topics (idempotent)",
        _topics_init_args,
        _cmd_topics_init,
    ),
}
