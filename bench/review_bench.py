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
import threading
import time
from pathlib import Path
from typing import Any

from bench.cluster import Cluster
from bench.common import say
from bench.propagation import AckWatch, Latencies, host_process, latencies, paced, run_topics
from notice_bus.bureau.requests import RequestSender
from notice_bus.hq.generate import make_drafts
from notice_bus.hq.intake import Intake
from notice_bus.hq.publisher import HQ
from notice_bus.hq.review import draft_of
from notice_bus.hq.screening import Rules
from notice_bus.wire.request import Decision, NoticeRequest, RequestStatus
from notice_bus.wire.validation import Draft, country_codes


def as_request(draft: Draft, requester: str) -> NoticeRequest:
    """``draft`` as the bureau of ``requester`` would ask for it (publish's JSON shape)."""
    notice = {
        "notice_id": draft.notice_id,
        "requesting_country": requester,
        "target_countries": list(draft.target_countries),
        **draft.person.to_avro(),
    }
    return NoticeRequest(notice=json.dumps(notice, ensure_ascii=False))


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
) -> tuple[Latencies, Latencies, list[float]]:
    """Publish and request ``per_path`` notices each, alternating, at ``rate`` in all;
    returns the publish and the request latencies, and the review service's own seconds
    (the request's arrival at the broker to its decision) for each timed request."""
    # The requester must be a real country (a request names it); the benchmark's made-up
    # codes (AA, AB, ...) are only topics.
    requester = next(c for c in countries if c in country_codes())
    rules = Rules.load()
    with run_topics(cluster, tmp, "review196", countries) as settings:
        watch = AckWatch(settings, countries, decode=True)
        drafts = make_drafts(2 * (per_path + warmup) + 1, seed=7, first_number=70000)
        for d in drafts:  # a finding would hold it for a reviewer, and it would never arrive
            found = rules.screen(draft_of(json.loads(as_request(d, requester).notice), requester))
            assert not found, f"{d.notice_id} is not clean: {found}"
        hq_settings = cluster.as_("hq", settings)
        review_settings = hq_settings.with_(hq_database_url=f"sqlite:///{tmp}/hq-review.db")
        decisions: list[Decision] = []
        stop = threading.Event()
        with (
            HQ(hq_settings) as hq,
            host_process(cluster, settings, countries, url_template, tmp / "review.log", processes),
        ):
            intake = Intake(review_settings)
            sender = RequestSender(cluster.as_(f"bureau-{requester}", settings), requester)

            def serve() -> None:
                while not stop.is_set():
                    decisions.extend(intake.step())

            thread = threading.Thread(target=serve, name="review", daemon=True)
            thread.start()
            try:
                first = drafts.pop(0)
                hq.publish([first])
                if watch.wait_for({(c, first.notice_id) for c in countries}, 300):
                    raise RuntimeError("review196: not every country recorded the first notice")

                def send(d: Draft, i: int) -> None:
                    if i % 2:
                        sender.send([as_request(d, requester)])
                    else:
                        hq.publish([d])

                early, timed = drafts[: 2 * warmup], drafts[2 * warmup :]
                for i in paced(len(early), rate):
                    send(early[i], i)
                wanted = {(c, d.notice_id) for c in countries for d in early}
                if watch.wait_for(wanted, 300):
                    raise RuntimeError("review196: the warm-up notices were never all recorded")
                by_publish: dict[str, float] = {}
                by_request: dict[str, float] = {}
                for i in paced(len(timed), rate):
                    (by_request if i % 2 else by_publish)[timed[i].notice_id] = time.time()
                    send(timed[i], i)
                wanted = {(c, d.notice_id) for c in countries for d in timed}
                left = watch.wait_for(wanted, 180)
                if left:
                    say(f"  review196: {len(left)} deliveries never recorded")
            finally:
                stop.set()
                thread.join(30)
                sender.close()
                intake.close()
        watch.close()
    own = [
        (d.at - d.received_at).total_seconds()
        for d in decisions
        if d.status is RequestStatus.APPROVED and d.notice_id in by_request
    ]
    return latencies(by_publish, watch, countries), latencies(by_request, watch, countries), own


def review_figures(publish: Latencies, request: Latencies, own: list[float]) -> dict[str, Any]:
    from bench.propagation import quantile

    p, r = publish.overall(), request.overall()
    return {
        "review_publish_p50_s": round(p["p50"], 3),
        "review_publish_p95_s": round(p["p95"], 3),
        "review_publish_p99_s": round(p["p99"], 3),
        "review_request_p50_s": round(r["p50"], 3),
        "review_request_p95_s": round(r["p95"], 3),
        "review_request_p99_s": round(r["p99"], 3),
        "review_p99_gap_s": round(r["p99"] - p["p99"], 3),
        "review_service_p50_s": round(quantile(own, 0.5), 3) if own else None,
        "review_deliveries_per_path": int(r["n"]),
    }
