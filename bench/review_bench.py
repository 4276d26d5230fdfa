"""HQ's review on the fast path: a bureau's clean request -> RECORDED in every country, beside
HQ's own publish -> RECORDED, in one run at 196 countries on PostgreSQL.

The notices alternate between the two paths on the same topics and the same adapters, so both
see the same machine at the same moments: even ones through ``HQ.publish``, odd ones as a
request of one bureau (a producer kept open) that HQ's review service, in a thread of this
process with an HQ of its own, screens and publishes (``auto_publish_clean``). A notice's
latency in a country runs from the wall clock just before the publish call or the request's
send to the broker's append time of that country's RECORDED acknowledgement.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster import Cluster
from bench.common import say
from bench.latencies import Latencies, quantile
from bench.propagation import AckWatch, host_process, latencies, paced, run_topics
from notice_bus.bureau.requests import RequestSender
from notice_bus.errors import TransientError
from notice_bus.hq.generate import make_drafts
from notice_bus.hq.intake import Intake
from notice_bus.hq.publisher import HQ
from notice_bus.hq.review import draft_of
from notice_bus.hq.screening import Rules
from notice_bus.wire.request import Decision, NoticeRequest, RequestStatus
from notice_bus.wire.validation import Draft, country_codes

log = logging.getLogger("bench.review")


@dataclass
class ReviewRun:
    """The two paths' latencies, the review service's own seconds (the request's arrival
    at the broker to its decision) for each timed request, and what never came."""

    publish: Latencies
    request: Latencies
    own: list[float]
    per_path: int
    unrecorded: int
    held: list[str] = field(default_factory=list)


def as_request(draft: Draft, requester: str) -> NoticeRequest:
    """``draft`` as the bureau of ``requester`` would ask for it (publish's JSON shape)."""
    notice = {
        "notice_id": draft.notice_id,
        "requesting_country": requester,
        "target_countries": list(draft.target_countries),
        **draft.person.to_avro(),
    }
    return NoticeRequest(notice=json.dumps(notice, ensure_ascii=False))


def clean_drafts(count: int, requester: str) -> list[Draft]:
    """``count`` generated notices on which screening finds nothing as ``requester``'s
    requests: one with a finding would wait for a reviewer and never arrive."""
    rules = Rules.load()

    def clean(d: Draft) -> bool:
        notice = json.loads(as_request(d, requester).notice)
        return not rules.screen(draft_of(notice, requester))

    picked = [d for d in make_drafts(2 * count, seed=7, first_number=70000) if clean(d)][:count]
    if len(picked) < count:
        raise RuntimeError(f"review: only {len(picked)} of {count} generated notices are clean")
    return picked


def review_run(
    cluster: Cluster,
    countries: list[str],
    url_template: str,
    tmp: Path,
    *,
    per_path: int,
    rate: float,
    warmup: int,
    processes: int,
) -> ReviewRun:
    """Publish and request ``per_path`` notices each, alternating, at ``rate`` in all, after
    ``warmup`` untimed notices (alternating too)."""
    # The requester must be a real country (a request names it); the benchmark's made-up
    # codes (AA, AB, ...) are only topics.
    requester = next(c for c in countries if c in country_codes())
    drafts = clean_drafts(2 * per_path + warmup + 1, requester)
    with run_topics(cluster, tmp, "review196", countries) as settings:
        watch = AckWatch(settings, countries, decode=True)
        hq_settings = cluster.as_("hq", settings)
        # An HQ of its own for the review service (its own database): the two are
        # independent HQs on the same topics, which the distinct notice ids allow.
        review_settings = hq_settings.with_(hq_database_url=f"sqlite:///{tmp}/hq-review.db")
        decisions: list[Decision] = []
        failed: list[BaseException] = []
        stop = threading.Event()
        by_publish: dict[str, float] = {}
        by_request: dict[str, float] = {}
        paths_of = {"publish": by_publish, "request": by_request}
        with (
            HQ(hq_settings) as hq,
            host_process(cluster, settings, countries, url_template, tmp / "review.log", processes),
        ):
            intake = Intake(review_settings)
            sender = RequestSender(cluster.as_(f"bureau-{requester}", settings), requester)

            def serve() -> None:  # Intake.run, keeping the decisions each step makes
                pause = review_settings.retry_initial_s
                while not stop.is_set():
                    try:
                        decisions.extend(intake.step())
                        pause = review_settings.retry_initial_s
                    except TransientError as exc:
                        log.error("review: %s; trying again in %.1f s", exc, pause)
                        stop.wait(pause)
                        pause = min(pause * 2, review_settings.retry_max_s)
                    except BaseException as exc:
                        failed.append(exc)
                        raise

            thread = threading.Thread(target=serve, name="review", daemon=True)
            thread.start()
            try:
                began = time.monotonic()
                first = drafts.pop(0)
                hq.publish([first])
                if watch.wait_for({(c, first.notice_id) for c in countries}, 300):
                    raise RuntimeError("review196: not every country recorded the first notice")
                say(
                    f"  review196: {len(countries)} countries up"
                    f" in {time.monotonic() - began:.0f} s"
                )

                def send(d: Draft, i: int) -> None:
                    if i % 2:
                        sender.send([as_request(d, requester)])
                    else:
                        hq.publish([d])

                early, timed = drafts[:warmup], drafts[warmup:]
                for i in paced(len(early), rate):
                    send(early[i], i)
                wanted = {(c, d.notice_id) for c in countries for d in early}
                if watch.wait_for(wanted, 300):
                    raise RuntimeError("review196: the warm-up notices were never all recorded")
                for i in paced(len(timed), rate):
                    (by_request if i % 2 else by_publish)[timed[i].notice_id] = time.time()
                    send(timed[i], i)
                wanted = {(c, d.notice_id) for c in countries for d in timed}
                left = watch.wait_for(wanted, 180)
                if left:
                    paths = {n: sum(1 for _, i in left if i in m) for n, m in paths_of.items()}
                    say(
                        f"  review196: {len(left)} deliveries never recorded (publish"
                        f" {paths['publish']}, request {paths['request']};"
                        f" {len({i for _, i in left})} notices, {len({c for c, _ in left})}"
                        " countries)"
                    )
            finally:
                stop.set()
                thread.join(30)
                sender.close()
                intake.close()
        watch.close()
    if failed:
        raise RuntimeError(f"review196: the review service failed: {failed[0]!r}")
    own = [
        (d.at - d.received_at).total_seconds()
        for d in decisions
        if d.status is RequestStatus.APPROVED and d.notice_id in by_request
    ]
    held = [
        d.notice_id
        for d in decisions
        if d.status is not RequestStatus.APPROVED and d.notice_id in by_request
    ]
    return ReviewRun(
        latencies(by_publish, watch, countries),
        latencies(by_request, watch, countries),
        own,
        per_path,
        len(left),
        held,
    )


def review_figures(run: ReviewRun) -> dict[str, Any]:
    p, r = run.publish.overall(), run.request.overall()
    out: dict[str, Any] = {}
    for name, s in (("publish", p), ("request", r)):
        for q in ("p50", "p95", "p99", "max"):
            out[f"review_{name}_{q}_s"] = round(s[q], 3)
    for q in ("p50", "p95", "p99"):
        out[f"review_{q}_gap_s"] = round(r[q] - p[q], 3)
    own = run.own
    out["review_service_p50_s"] = round(quantile(own, 0.5), 4) if own else None
    out["review_notices_per_path"] = run.per_path
    out["review_deliveries_per_path"] = int(r["n"])
    out["review_unrecorded"] = run.unrecorded
    return out
