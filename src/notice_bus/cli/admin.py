"""``notice-bus demo`` and ``notice-bus db upgrade``."""

from __future__ import annotations

import argparse

from notice_bus.cli.common import (
    Command,
)
from notice_bus.runtime.settings import Settings

#: Help of the commands of actions this module's commands belong to.
GROUPS = {"db": "the schema of our tables in a database"}


def _demo_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--notices", type=int, default=300, help="how many notices to generate")


def _db_upgrade_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--database-url",
        required=True,
        help="postgresql://user:pw@host/db or sqlite:///path.db",
    )
    c.add_argument(
        "--role",
        action="append",
        choices=["local", "hq", "tracker"],
        help="only these tables; repeat for several (default: every role found in the database)",
    )


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.cli.demo import run_demo

    return run_demo(settings, notices=args.notices)


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.runtime.migrations import upgrade_database

    for line in upgrade_database(args.database_url, args.role or ()):
        print(line)
    return 0


COMMANDS = {
    "demo": Command(
        "run HQ, a tracker and adapters on a local broker",
        _demo_args,
        _cmd_demo,
    ),
    "db upgrade": Command(
        "bring a database's tables (HQ's, the tracker's, a country's) to this release's schema;"
        " the services do it on start unless a change is unsafe for older instances",
        _db_upgrade_args,
        _cmd_db_upgrade,
    ),
}
