"""``notice-bus broker`` and ``notice-bus topics``: a local broker (or cluster), and the
countries' topics."""

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
        help="the client port on 127.0.0.1 (default: the one kept in --data, else a free one);"
        " with --brokers N, node 1's, and node K's is PORT+K-1",
    )
    c.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="1: a single broker; 3 (up to 5): a cluster of that many nodes, each a KRaft"
        " broker and controller, topics with 3 replicas of which a write needs 2; --data then"
        " keeps each node's in DIR/node-K (default: 1)",
    )


def _topics_init_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--countries", required=True, type=country_list, help="comma-separated ISO codes: FR,ID,TH"
    )


def _cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from notice_bus.errors import ConfigError
    from notice_bus.runtime.local_broker import LocalBroker
    from notice_bus.runtime.local_cluster import SIZES, LocalCluster

    data = Path(args.data) if args.data else None
    broker: LocalBroker | LocalCluster
    if args.brokers == 1:
        broker, what, kept = LocalBroker(data, port=args.port), "broker", Path("data")
    elif args.brokers in SIZES:
        broker = LocalCluster(data, brokers=args.brokers, port=args.port)
        what, kept = f"cluster of {args.brokers} brokers", Path("node-1", "data")
    else:
        raise ConfigError(f"--brokers is 1, or 3 to 5 for a cluster; not {args.brokers}")
    again = data and (data / kept / "meta.properties").exists()
    print(
        f"starting the Kafka {what} of {args.data} again (cluster {broker.cluster_id})..."
        if again
        else f"starting a local Kafka {what} (the first run fetches its jars with Maven)...",
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
        "start a local Kafka broker (or a cluster: --brokers 3) and wait",
        _broker_args,
        _cmd_broker,
    ),
    "topics init": Command(
        "create the given countries' topics (idempotent)",
        _topics_init_args,
        _cmd_topics_init,
    ),
}
