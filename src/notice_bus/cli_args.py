"""The ``notice-bus`` command line: its commands, their options and defaults, declared.

Each command sets ``args.command`` to its name ("publish", "dlq replay"); :mod:`notice_bus.cli`
runs it. Argument types turn a bad value into a usage error (64) before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn

from notice_bus.errors import ConfigError
from notice_bus.exit_codes import EX_USAGE

DESCRIPTION = __doc__


def _duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration like 15m or 2h: {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64 (sysexits' EX_USAGE), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def _countries(text: str) -> list[str]:
    """``--countries FR,TH``: a bad code is a usage error, told before anything runs."""
    from notice_bus.topics import parse_countries

    try:
        return parse_countries(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _country(text: str) -> str:
    countries = _countries(text)
    if len(countries) != 1:
        raise argparse.ArgumentTypeError(f"give one country, not {text!r}")
    return countries[0]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("notice-bus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="notice-bus", description=__doc__, formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--config", help="TOML settings file (default: notice-bus.toml if present, else none)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG, Kafka's too")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=_Help)
        c.set_defaults(command=name)
        return c

    def actions(name: str, help: str) -> Callable[[str, str], argparse.ArgumentParser]:
        """A command of actions ("dlq list"): returns what adds one."""
        group = command(name, help).add_subparsers(required=True, metavar="ACTION")

        def action(verb: str, help: str) -> argparse.ArgumentParser:
            c: argparse.ArgumentParser = group.add_parser(
                verb, help=help, description=help, formatter_class=_Help
            )
            c.set_defaults(command=f"{name} {verb}")
            return c

        return action

    c = command("broker", "start a local single-node Kafka broker and wait")
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

    topics = actions("topics", "manage topics")
    c = topics("init", "create the given countries' topics (idempotent)")
    c.add_argument(
        "--countries", required=True, type=_countries, help="comma-separated ISO codes: FR,ID,TH"
    )

    c = command("publish", "publish or update the notices of a JSON file")
    c.add_argument(
        "file",
        help="one notice or a list, our shape or INTERPOL's API detail shape; - reads standard"
        " input",
    )

    c = command("cancel", "cancel a notice everywhere it was sent (idempotent)")
    c.add_argument("notice_id")
    c.add_argument("--reason", help="why it is withdrawn (default: none given)")

    command("relay", "send what HQ's outbox still holds")

    c = command("adapter", "run a country's adapter into its local system")
    c.add_argument(
        "--country",
        required=True,
        type=_countries,
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
        help="a stable name for this instance, for static group membership and fast restarts"
        " (default: none, dynamic membership)",
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
    c.add_argument(
        "--batch-size", type=int, help="records per batch (default: the batch_size setting)"
    )
    c.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port, process i of --processes on port + i"
        " (default: no metrics)",
    )
    c.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics listen on")

    dlq = actions("dlq", "a country's dead-letter topic")
    c = dlq("list", "every parked record, oldest first, and if it was replayed")
    c.add_argument("--country", required=True, type=_country, help="the country's code")
    c.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    c = dlq(
        "replay",
        "run the records parked since the last replay through the adapter's pipeline"
        " again; those still refused are parked again at the end",
    )
    c.add_argument("--country", required=True, type=_country, help="the country's code")
    _add_system_options(c)

    c = command("bootstrap", "send a country every notice active now")
    c.add_argument("--country", required=True, type=_country, help="a country that joined late")

    c = command("tracker", "record every country's acknowledgements for HQ")
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

    c = command("report", "per-country response-lag report, worst first")
    c.add_argument(
        "--format", choices=["table", "json", "csv", "html"], default="table", help="output format"
    )
    c.add_argument(
        "--country", type=_countries, help="only these countries, e.g. FR,TH (default: all)"
    )
    c.add_argument(
        "--since",
        type=_duration,
        help="only notices sent in the last 15m, 2h, 7d (default: all of them)",
    )
    c.add_argument("--output", help="write to this file (default: standard output)")
    c.add_argument(
        "--database-url",
        help="the tracker's database (default: the tracker_database_url setting)",
    )

    c = command("dashboard", "serve the report live in a browser")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on")
    c.add_argument("--port", type=int, default=8080, help="port to listen on")
    c.add_argument(
        "--database-url",
        help="the tracker's database (default: the tracker_database_url setting)",
    )

    c = command("respond", "a bureau's own answer to a notice")
    c.add_argument("--country", required=True, type=_country, help="the answering country")
    c.add_argument("notice_id")
    c.add_argument("answer", choices=["NO_TRACE", "LOCATED", "ARRESTED", "CANNOT_ACT"])
    c.add_argument("--text", help="free text for HQ (default: none)")
    c.add_argument("--responder", default="officer", help="who answers")

    c = command("demo", "run HQ, a tracker and adapters on a local broker")
    c.add_argument("--notices", type=int, default=300, help="how many notices to generate")

    db = actions("db", "the schema of our tables in a database")
    c = db(
        "upgrade",
        "bring a database's tables (HQ's, the tracker's, a country's) to this release's schema;"
        " the services do it on start unless a change is unsafe for older instances",
    )
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
    return p


def _add_system_options(c: argparse.ArgumentParser) -> None:
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
