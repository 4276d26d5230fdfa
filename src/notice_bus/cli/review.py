"""HQ's review of the bureaus' requests: ``review-service``, ``review list|show|approve|refuse``
and ``audit verify|show``; a bureau's side: ``request`` and ``decisions``."""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from notice_bus.cli.common import Command, country, stop_on_signals
from notice_bus.runtime.settings import Settings

GROUPS = {
    "review": "HQ's queue of bureaus' requests, and the decisions on them",
    "audit": "HQ's hash-chained audit trail of requests, findings, decisions, publications",
}


def _request_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the requesting country")
    c.add_argument(
        "file",
        help="one notice or a list, as for publish; each may add facts, person_status and"
        " request_id",
    )
    c.add_argument("--requester", help="who at the bureau asks (default: none given)")
    c.add_argument(
        "--wait", type=float, default=0, help="seconds to wait for HQ's decisions (0: do not)"
    )


def _decisions_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--country", required=True, type=country, help="the requesting country")
    c.add_argument("--format", choices=["table", "json"], default="table", help="output format")


def _id_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("request_id")


def _decide_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("request_id")
    c.add_argument("--reviewer", default=getpass.getuser(), help="who decides")


def _approve_args(c: argparse.ArgumentParser) -> None:
    _decide_args(c)
    c.add_argument("--note", default="", help="a note for the bureau and the audit trail")


def _refuse_args(c: argparse.ArgumentParser) -> None:
    _decide_args(c)
    c.add_argument("--reason", required=True, help="why: told to the bureau, kept in the audit")


def _list_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--all", action="store_true", help="decided requests too, not only held ones")
    c.add_argument("--format", choices=["table", "json"], default="table", help="output format")


def _story_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("notice_id")


def _cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.requests import read_decisions, read_requests, send_requests

    requests = read_requests(args.file, args.requester)  # checked before anything is sent
    send_requests(settings, args.country, requests)
    for r in requests:
        print(f"requested {r.request_id}")
    if args.wait > 0:
        ids = {r.request_id for r in requests}
        found = read_decisions(settings, args.country, wait_for=ids, timeout_s=args.wait)
        _print_decisions([d for d in found if d.request_id in ids])
    return 0


def _cmd_decisions(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.bureau.requests import read_decisions

    found = read_decisions(settings, args.country)
    if args.format == "json":
        print(json.dumps([_plain(d.to_avro()) for d in found], indent=2, ensure_ascii=False))
    else:
        _print_decisions(found)
    return 0


def _service_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: none)"
    )
    c.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics listen on")


def _cmd_service(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.intake import Intake
    from notice_bus.hq.metrics import ReviewMetrics
    from notice_bus.runtime.prometheus import serve

    intake = Intake(settings)
    server = None
    try:
        metrics = ReviewMetrics(lambda: len(intake.review.waiting()))
        if args.metrics_port is not None:
            server = serve(metrics.registry, args.metrics_port, args.metrics_host)
        print(f"review service: {len(intake.rules)} screening rules", flush=True)
        intake.run(stop_on_signals(), metrics)
    finally:
        if server is not None:
            server.shutdown()
        intake.close()
    return 0


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ
    from notice_bus.hq.review import Review
    from notice_bus.wire.request import RequestStatus

    with HQ(settings) as hq:
        rows = Review(hq).requests(None if args.all else RequestStatus.HELD)
    if args.format == "json":
        print(json.dumps([_plain(r.model_dump()) for r in rows], indent=2, ensure_ascii=False))
        return 0
    print(f"{'request':38} {'from':4} {'notice':12} {'status':9} {'received':20} findings")
    for r in rows:
        rules = ", ".join(f["rule_id"] for f in r.findings) or "-"
        print(
            f"{r.request_id:38} {r.country:4} {r.notice_id:12} {r.status:9}"
            f" {r.received_at:%Y-%m-%d %H:%M:%S}  {rules}"
        )
    print(f"{len(rows)} request(s)")
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import audit
    from notice_bus.hq.publisher import HQ
    from notice_bus.hq.review import Review

    with HQ(settings) as hq:
        row = Review(hq).get(args.request_id)
        entries = audit.entries_of_request(hq.engine, args.request_id)
    print(f"request   {row.request_id} from {row.country} for notice {row.notice_id}")
    if row.claimed_country and row.claimed_country != row.country:
        print(f"claimed   requester {row.claimed_country} (recorded as {row.country})")
    print(f"status    {row.status}" + (f" by {row.decided_by}" if row.decided_by else ""))
    if row.reason:
        print(f"reason    {row.reason}")
    if row.person_status:
        print(f"status of person: {row.person_status}")
    if row.facts:
        print(f"facts     {row.facts}")
    for f in row.findings:
        print(f"finding   {f['rule_id']} [{f['category']}] {f['field']}: {f['text']!r}")
        print(f"          {f['explanation']}")
    print("notice    " + json.dumps(row.draft, ensure_ascii=False))
    for e in entries:
        print(f"audit     #{e.seq} {e.at:%Y-%m-%d %H:%M:%S} {e.kind} by {e.actor}")
    return 0


def _cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ
    from notice_bus.hq.review import Review

    with HQ(settings) as hq:
        d = Review(hq).approve(args.request_id, args.reviewer, args.note)
    print(f"approved  {d.request_id}: notice {d.notice_id} published; {d.requesting_country} told")
    return 0


def _cmd_refuse(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq.publisher import HQ
    from notice_bus.hq.review import Review

    with HQ(settings) as hq:
        d = Review(hq).refuse(args.request_id, args.reviewer, args.reason)
    print(f"refused   {d.request_id}: sent to no country; {d.requesting_country} told why")
    return 0


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import audit
    from notice_bus.hq.publisher import HQ

    with HQ(settings) as hq:
        check = audit.verify(hq.engine)
        last = audit.latest(hq.engine)
    if not check.ok:
        print(f"audit trail BROKEN after {check.entries} entries: {check.problem}")
        return 65
    print(f"audit trail verified: {check.entries} entries, chained")
    if last is not None:
        print(f"latest    #{last.seq} {last.hash} (note it elsewhere to anchor the chain)")
    return 0


def _cmd_story(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.hq import audit
    from notice_bus.hq.publisher import HQ

    with HQ(settings) as hq:
        entries = audit.story(hq.engine, args.notice_id)
    if not entries:
        print(f"no audit entry names notice {args.notice_id}")
        return 2
    for e in entries:
        detail = json.dumps(_plain(e.detail), ensure_ascii=False)
        print(f"#{e.seq:<6} {e.at:%Y-%m-%d %H:%M:%S} {e.kind:11} {e.actor:24} {detail}")
    return 0


def _print_decisions(decisions: list[Any]) -> None:
    for d in decisions:
        rules = ", ".join(f["rule_id"] for f in d.findings)
        print(
            f"{d.status.value:9} {d.request_id} notice {d.notice_id}"
            + (f" by {d.decided_by}" if d.decided_by else "")
            + (f": {d.reason}" if d.reason else "")
            + (f" [{rules}]" if rules else "")
        )


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


COMMANDS = {
    "request": Command("a bureau asks HQ for notices (a JSON file)", _request_args, _cmd_request),
    "decisions": Command("HQ's decisions on a bureau's requests", _decisions_args, _cmd_decisions),
    "review-service": Command(
        "HQ: take and screen every bureau's requests", _service_args, _cmd_service
    ),
    "review list": Command("requests waiting for a reviewer", _list_args, _cmd_list),
    "review show": Command("a request, its findings and its audit", _id_args, _cmd_show),
    "review approve": Command("publish a held request's notice", _approve_args, _cmd_approve),
    "review refuse": Command("refuse a held request; sent nowhere", _refuse_args, _cmd_refuse),
    "audit verify": Command("check the audit trail's hash chain", None, _cmd_verify),
    "audit show": Command("a notice's story from the audit trail", _story_args, _cmd_story),
}
