"""The ``notice-bus`` command: one module per group of commands, each declaring its commands'
options (:class:`~notice_bus.cli.common.Command`) and what they do.

- :mod:`~notice_bus.cli.broker`: ``broker``, ``topics init``
- :mod:`~notice_bus.cli.hq`: ``publish``, ``cancel``, ``relay``, ``bootstrap``
- :mod:`~notice_bus.cli.bureau`: ``adapter``, ``dlq list|replay``, ``respond``
- :mod:`~notice_bus.cli.tracker`: ``tracker``, ``report``, ``dashboard``
- :mod:`~notice_bus.cli.review`: ``request``, ``decisions``, ``review-service``,
  ``review list|show|approve|refuse``, ``audit verify|show``
- :mod:`~notice_bus.cli.trust`: ``pki``, ``acl apply|show``, ``bureau revoke``
- :mod:`~notice_bus.cli.admin`: ``demo``, ``db upgrade``

A new command goes in its group's ``COMMANDS`` and in :data:`ORDER`. Errors print one line and
exit with the code of :mod:`notice_bus.cli.exit_codes`; a bad argument exits 64 before anything
runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from notice_bus.cli import admin, broker, bureau, hq, review, tracker, trust
from notice_bus.cli.common import DESCRIPTION, Command, Help, Parser, package_version
from notice_bus.cli.exit_codes import EX_INTERRUPTED, EX_SOFTWARE, exit_code
from notice_bus.errors import NoticeBusError
from notice_bus.runtime.settings import Settings

#: Every command, by the name it sets in ``args.command``.
COMMANDS: dict[str, Command] = {
    **broker.COMMANDS,
    **hq.COMMANDS,
    **bureau.COMMANDS,
    **tracker.COMMANDS,
    **admin.COMMANDS,
    **trust.COMMANDS,
    **review.COMMANDS,
}
#: The order of ``notice-bus --help``.
ORDER = (
    "broker",
    "topics init",
    "publish",
    "cancel",
    "relay",
    "adapter",
    "dlq list",
    "dlq replay",
    "bootstrap",
    "verify",
    "request",
    "decisions",
    "review-service",
    "review list",
    "review show",
    "review approve",
    "review refuse",
    "audit verify",
    "audit show",
    "tracker",
    "report",
    "dashboard",
    "respond",
    "copy-check",
    "pki",
    "acl apply",
    "acl show",
    "bureau revoke",
    "keys rotate",
    "demo",
    "db upgrade",
)
_GROUPS = {**broker.GROUPS, **bureau.GROUPS, **admin.GROUPS, **trust.GROUPS, **review.GROUPS}


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
        return COMMANDS[args.command].run(args, settings)
    except NoticeBusError as exc:
        print(f"notice-bus: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except Exception as exc:  # a bug: say so, with what a report of it needs
        traceback.print_exc()
        print(f"notice-bus: internal error: {exc!r}", file=sys.stderr)
        return EX_SOFTWARE


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="notice-bus", description=DESCRIPTION, formatter_class=Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    p.add_argument(
        "--config", help="TOML settings file (default: notice-bus.toml if present, else none)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG, Kafka's too")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    groups: dict[str, Callable[..., argparse.ArgumentParser]] = {}
    for name in ORDER:
        command = COMMANDS[name]
        group, _, verb = name.partition(" ")
        if verb:
            if group not in groups:
                help = _GROUPS[group]
                top = sub.add_parser(group, help=help, description=help, formatter_class=Help)
                groups[group] = top.add_subparsers(required=True, metavar="ACTION").add_parser
            add = groups[group]
            c = add(verb, help=command.help, description=command.help, formatter_class=Help)
        else:
            c = sub.add_parser(
                name, help=command.help, description=command.help, formatter_class=Help
            )
        c.set_defaults(command=name)
        if command.arguments is not None:
            command.arguments(c)
    return p
