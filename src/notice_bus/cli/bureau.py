"""A bureau's commands: ``adapter``, ``dlq list|replay``, ``respond`` and ``copy-check``."""

from __future__ import annotations

import argparse
import logging
import math

from notice_bus.cli.common import (
    Command,
    add_system_options,
    country,
    country_list,
    local_systems,
    stop_on_signals,
)
from notice_bus.errors import ConfigError, NoticeBusError
from notice_bus.runtime.settings import Settings

log = logging.getLogger("notice_bus")


#: Help of the commands of actions this module's commands belong to.
GROUPS = {"dlq": "a country's dead-letter topic"}


def _adapter_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--country",
        required=True,
        type=country_list,
        help="a country code, or several (FR,BE,LU) to run their adapters in one process",
    )
    add_system_options(c)
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


def _dlq_list_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the country's code")
    c.add_argument("--format", choices=["table", "json"], default="table", help="output format")


def _dlq_replay_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the country's code")
    add_system_options(c)


def _respond_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the answering country")
    c.add_argument("notice_id")
    c.add_argument("answer", choices=["NO_TRACE", "LOCATED", "ARRESTED", "CANNOT_ACT"])
    c.add_argument("--text", help="free text for HQ (default: none)")
    c.add_argument("--responder", default="officer", help="who answers")


def _copy_check_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the country's code")
    add_system_options(c)
    c.add_argument(
        "--repair",
        choices=["report", "mend"],
        help="report the differences only, or also mend missing, stale and resurrected"
        " notices from the notices topic (default: the repair setting, report)",
    )
    c.add_argument(
        "--once",
        action="store_true",
        help="check the latest manifest on the topic, print the result and leave (default:"
        " check it and every new one until stopped)",
    )


def _cmd_adapter(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.workers import AdapterWorkers, run_adapter

    countries: list[str] = args.country
    if args.batch_size:
        settings = settings.with_(batch_size=args.batch_size)
    systems = local_systems(args, settings)
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
    stop = stop_on_signals()
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


def _cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.dlq import list_parked
    from notice_bus.bureau.dlq_text import to_json, to_table
    from notice_bus.wire.topics import TopicNames

    country: str = args.country
    parked = list_parked(settings, country)
    if args.format == "json":
        print(to_json(parked))
    else:
        print(to_table(parked, TopicNames(settings.topic_prefix).dead_letters(country)))
    return 0


def _cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.dlq import replay
    from notice_bus.bureau.dlq_text import summary

    country: str = args.country
    sink = local_systems(args, settings).sink(country)
    try:
        result = replay(settings, country, sink)
    finally:
        sink.close()
    print(summary(result))
    return 0


def _cmd_respond(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.channel import respond
    from notice_bus.wire.model import Answer

    respond(settings, args.country, args.notice_id, Answer(args.answer), args.text, args.responder)
    print(f"{args.country} answered {args.answer} to {args.notice_id}")
    return 0


def _cmd_copy_check(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.copies import CopyChecker

    if args.repair:
        settings = settings.with_(repair=args.repair)
    sink = local_systems(args, settings).sink(args.country)
    checker = CopyChecker(settings, args.country, sink)
    try:
        if not args.once:
            checker.run(stop_on_signals())
            return 0
        manifest = checker.latest_manifest()
        if manifest is None:
            print(f"no manifest for {args.country} on its topic yet")
            return 1
        result = checker.check_once(manifest)
    finally:
        checker.close()
        sink.close()
    counts = ", ".join(f"{n} {k}" for k, n in result.counts.items() if n)
    print(
        f"{args.country}: {result.status} against manifest {result.manifest_id}:"
        f" {result.held} held, {result.expected} expected"
        + (f"; {counts}; {result.mended} mended" if counts else "")
        + (f" ({result.reason})" if result.reason else "")
    )
    return 0 if result.status == "VERIFIED" else 1


COMMANDS = {
    "adapter": Command(
        "run a country's adapter into its local system",
        _adapter_args,
        _cmd_adapter,
    ),
    "dlq list": Command(
        "every parked record, oldest first, and if it was replayed",
        _dlq_list_args,
        _cmd_dlq_list,
    ),
    "dlq replay": Command(
        "run the records parked since the last replay through the adapter's pipeline"
        " again; those still refused are parked again at the end",
        _dlq_replay_args,
        _cmd_dlq_replay,
    ),
    "respond": Command(
        "a bureau's own answer to a notice",
        _respond_args,
        _cmd_respond,
    ),
    "copy-check": Command(
        "verify the local copy against HQ's manifests, report on the acks topic, and with"
        " --repair mend mend what can be mended",
        _copy_check_args,
        _cmd_copy_check,
    ),
}
