"""HQ's commands: ``publish``, ``cancel``, ``relay``, ``bootstrap`` and ``verify``."""

from __future__ import annotations

import argparse

from notice_bus.cli.common import (
    Command,
    country,
    country_list,
)
from notice_bus.errors import AlreadyCancelled
from notice_bus.runtime.settings import Settings


def _publish_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "file",
        help="one notice or a list, our shape or INTERPOL's API detail shape; - reads standard"
        " input",
    )


def _cancel_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("notice_id")
    c.add_argument("--reason", help="why it is withdrawn (default: none given)")


def _bootstrap_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="a country that joined late")


def _verify_args(c: argparse.ArgumentParser) -> None:
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--country",
        type=country_list,
        help="countries, comma-separated (no default: this or --all)",
    )
    which.add_argument("--all", action="store_true", help="every registered country")


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ, read_drafts

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
    from notice_bus.hq.publisher import HQ

    with HQ(settings) as hq:
        try:
            event = hq.cancel(args.notice_id, args.reason or "")
        except AlreadyCancelled:  # a retried cancel has what it wanted
            print(f"cancel   {args.notice_id} already cancelled")
            return 0
    print(f"cancel   {event.notice_id} v{event.version}")
    return 0


def _cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ

    with HQ(settings) as hq:
        print(f"{hq.relay()} outbox records sent")
    return 0


def _cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ

    country: str = args.country
    with HQ(settings) as hq:
        print(f"{hq.bootstrap(country)} active notices sent to {country}")
    return 0


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.manifest import Manifests
    from notice_bus.hq.publisher import HQ

    with HQ(settings) as hq:
        manifests = Manifests(hq).publish_all(None if args.all else args.country)
    for m in manifests:
        print(f"{m.country}  {m.count} notices  manifest {m.manifest_id}")
    print(f"{len(manifests)} manifests sent")
    return 0


COMMANDS = {
    "publish": Command(
        "publish or update the notices of a JSON file",
        _publish_args,
        _cmd_publish,
    ),
    "cancel": Command(
        "cancel a notice everywhere it was sent (idempotent)",
        _cancel_args,
        _cmd_cancel,
    ),
    "relay": Command(
        "send what HQ's outbox still holds",
        None,
        _cmd_relay,
    ),
    "bootstrap": Command(
        "send a country every notice active now",
        _bootstrap_args,
        _cmd_bootstrap,
    ),
    "verify": Command(
        "send countries the manifest of what they should hold, for their bureaus to check",
        _verify_args,
        _cmd_verify,
    ),
}
