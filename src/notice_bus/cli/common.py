"""What the command modules share: the parser's classes and argument types, the signals that
stop a service, and where a country's local system is."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from notice_bus.cli.exit_codes import EX_USAGE
from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import Settings

if TYPE_CHECKING:
    from notice_bus.bureau.sinks.local_system import Systems

log = logging.getLogger("notice_bus")

#: ``notice-bus --help``'s description.
DESCRIPTION = (
    "The ``notice-bus`` command line: its commands, their options and defaults, declared.\n"
    "\n"
    'Each command sets ``args.command`` to its name ("publish", "dlq replay");'
    " :mod:`notice_bus.cli`\n"
    "runs it. Argument types turn a bad value into a usage error (64) before anything runs.\n"
)


class Command(NamedTuple):
    """A command: its help, what adds its arguments (None: it takes none), what runs it."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None
    run: Callable[[argparse.Namespace, Settings], int]


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration like 15m or 2h: {text!r}") from None


class Parser(argparse.ArgumentParser):
    """Usage errors exit 64 (sysexits' EX_USAGE), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def country_list(text: str) -> list[str]:
    """``--countries FR,TH``: a bad code is a usage error, told before anything runs."""
    from notice_bus.wire.topics import parse_countries

    try:
        return parse_countries(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def country(text: str) -> str:
    countries = country_list(text)
    if len(countries) != 1:
        raise argparse.ArgumentTypeError(f"give one country, not {text!r}")
    return countries[0]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("notice-bus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_system_options(c: argparse.ArgumentParser) -> None:
    """Where a country's local system is: ``adapter`` and ``dlq replay`` take the same."""
    c.add_argument(
        "--database-url",
        help="our own table in this database: postgresql://user:pw@host/db or sqlite:///fr.db;"
        " {country} in it stands for each country's code (default: none; give this or"
        " --system with --system-config)",
    )
    c.add_argument(
        "--system",
        help="local-system plug-in: sql, legacy-postgres, rest, file-drop, or module:Class"
        " (default: sql)",
    )
    c.add_argument("--system-config", help="TOML file of the plug-in's options (default: none)")
    c.add_argument(
        "--ledger-url",
        help="a shared database for plug-ins' version ledgers, {country} allowed (default: the"
        " ledger_database_url setting; a plug-in with a database of its own keeps its ledger"
        " there; else .notice-bus/ledger-{country}.db on this host, with a warning)",
    )


def local_systems(args: argparse.Namespace, settings: Settings) -> Systems:
    """Where the local systems are, from the options of :func:`_add_system_options`."""
    from notice_bus.bureau.sinks.local_system import Systems, read_system_config

    if args.database_url:
        options: dict[str, object] = {"database_url": args.database_url}
    elif args.system_config:
        options = read_system_config(args.system_config)
    else:
        raise ConfigError("give --database-url, or --system with --system-config")
    ledger = args.ledger_url or settings.ledger_database_url or None
    return Systems(args.system or "sql", options, ledger_url=ledger)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a running loop finishes its batch and leaves."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
