"""HQ's review service: takes every bureau's requests, screens them, and lets the review
decide what can be decided at once.

It reads every ``requests.CC`` topic, assigning their partitions itself (as the tracker does:
a subscription by pattern rejoins the group whenever a topic appears) and committing offsets
in its group only for records whose request is stored. A record read twice (after a crash
before its commit) is recognised by its source and stored once. The requesting country is
the topic's: ACLs let only that country's bureau write there, so whatever the request says of
its requester is a claim, and a claim of another country is a finding for the reviewer.

Copy verification rides along: a record of kind ``manifest-query`` (header ``nb-kind``) on a
requests topic is a bureau's query about a manifest, answered with the entries of the buckets
it names (:class:`~notice_bus.hq.manifest.Manifests`); and :meth:`Intake.run` publishes every
registered country's manifest every ``manifest_interval_s`` (0: never).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.errors import InvalidNotice, NoticeBusError, SchemaError, TransientError
from notice_bus.hq.manifest import Manifests
from notice_bus.hq.metrics import ReviewMetrics
from notice_bus.hq.publisher import HQ
from notice_bus.hq.review import Arrival, Review, draft_of
from notice_bus.hq.screening import Finding, Rules
from notice_bus.runtime.kafka import kafka_config, poll_or_none, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.groups import review_group_id
from notice_bus.wire.manifest import QUERY, kind_of
from notice_bus.wire.model import utcnow
from notice_bus.wire.request import Decision, NoticeRequest
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.hq.review")
_LOOK_EVERY_S = 5.0  # how often new countries' request topics are looked for
REQUESTER_MISMATCH = "REQUESTER-MISMATCH"


def screen(rules: Rules, arrival: Arrival) -> tuple[list[dict[str, str]], str | None]:
    """The findings on a request, and what makes it invalid (``None`` if nothing)."""
    try:
        draft = draft_of(arrival.notice, arrival.country)
    except InvalidNotice as exc:
        return [], str(exc)
    found = rules.screen(draft, facts=arrival.facts, person_status=arrival.person_status)
    findings = [f.to_dict() for f in found]
    claimed = arrival.claimed_country
    if claimed and claimed != arrival.country:
        findings.insert(
            0,
            Finding(
                rule_id=REQUESTER_MISMATCH,
                category="requester",
                field="requesting_country",
                text=claimed,
                explanation=f"the request names {claimed} as requester but came from"
                f" {arrival.country}'s bureau: it is recorded as {arrival.country}'s",
            ).to_dict(),
        )
    return findings, None


class Intake:
    """Reads requests and hands each to the review. Close it to release its clients."""

    def __init__(
        self,
        settings: Settings,
        *,
        hq: HQ | None = None,
        rules: Rules | None = None,
        clock: Callable[[], datetime] = utcnow,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.settings = settings
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._own_hq = hq is None
        self.hq = hq if hq is not None else HQ(settings, clock=clock, schemas=store)
        self.review = Review(self.hq, clock=clock, schemas=store)
        extra = [settings.screening_rules_file] if settings.screening_rules_file else []
        self.rules = rules if rules is not None else Rules.load(extra)
        self._codec = AvroCodec(load_schema("notice_request"), store)
        self.manifests = Manifests(self.hq, store)
        self._next_manifests = 0.0  # the first when the service starts
        self._names = TopicNames(settings.topic_prefix)
        self._ours = re.compile(self._names.pattern("requests"))
        self._next_look = 0.0
        try:
            self._consumer = KafkaConsumer(
                **kafka_config(settings, "notice-bus-review"),
                group_id=review_group_id(settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
        except KafkaError as exc:
            raise unreachable(settings, exc) from exc

    def run(self, stop: threading.Event, metrics: ReviewMetrics | None = None) -> None:
        """Take requests until ``stop`` is set; a broker or database away is waited for."""
        pause = self.settings.retry_initial_s
        while not stop.is_set():
            try:
                self.publish_manifests_if_due()
                made = self.step()
                if metrics is not None:
                    metrics.count(made)
                pause = self.settings.retry_initial_s
            except TransientError as exc:
                log.error("review: %s; trying again in %.1f s", exc, pause)
                stop.wait(pause)
                pause = min(pause * 2, self.settings.retry_max_s)

    def publish_manifests_if_due(self) -> int:
        """Every registered country's manifest, if ``manifest_interval_s`` has passed since
        the last (or this is the first call; never if it is 0); returns how many were sent.
        A broker or database away is raised (the next call tries again); any other error is
        logged, and the manifests wait for the next interval."""
        interval = self.settings.manifest_interval_s
        if interval <= 0 or time.monotonic() < self._next_manifests:
            return 0
        try:
            sent = len(self.manifests.publish_all())
        except TransientError:
            raise
        except NoticeBusError as exc:
            log.error("review: manifests not published: %s", exc)
            sent = 0
        self._next_manifests = time.monotonic() + interval
        return sent

    def step(self) -> list[Decision]:
        """Read a batch of requests, store and screen each, commit; returns the decisions
        made at once (HELD included)."""
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + _LOOK_EVERY_S
            self._take_new_topics()
        if not self._consumer.assignment():
            time.sleep(self.settings.poll_timeout_ms / 1000)
            return []
        batch = poll_or_none(self._consumer, self.settings.poll_timeout_ms, "review")
        if not batch:
            return []
        made: list[Decision] = []
        try:
            for records in batch.values():
                for record in records:
                    decision = self._take(record)
                    if decision is not None:
                        made.append(decision)
            self._consumer.commit()
        except (NoticeBusError, KafkaError) as exc:
            for tp, records in batch.items():  # read again: what was stored is recognised
                self._consumer.seek(tp, records[0].offset)
            if isinstance(exc, KafkaError):
                raise unreachable(self.settings, exc) from exc
            raise
        return made

    def _take(self, record: Any) -> Decision | None:
        country = self._names.country_of(record.topic) or "??"
        if kind_of(record.headers) == QUERY:
            self._answer(record, country)
            return None
        source = f"{record.topic}:{record.partition}:{record.offset}"
        received = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        key = record.key.decode("utf-8", "replace") if record.key else source
        try:
            request = NoticeRequest.from_avro(self._codec.decode(record.value or b""))
        except (SchemaError, KeyError, TypeError, ValueError) as exc:
            arrival = Arrival(key[:64], source, country, received, {})
            log.warning("review: request %s from %s does not decode: %s", key, country, exc)
            why = f"the request does not decode as a NoticeRequest: {exc}"
            return self.review.receive(arrival, [], why, auto_publish=False)
        problem: str | None = None
        try:
            notice = json.loads(request.notice)
        except ValueError as exc:
            notice, problem = {}, f"its notice is not valid JSON: {exc}"
        if not isinstance(notice, dict):
            problem = "its notice is not a JSON object"
        arrival = Arrival(
            request_id=request.request_id[:64],
            source=source,
            country=country,
            received_at=received,
            notice=notice if isinstance(notice, dict) else {},
            facts=request.facts,
            person_status=request.person_status,
            requester=request.requester,
        )
        findings: list[dict[str, str]] = []
        if problem is None:
            findings, problem = screen(self.rules, arrival)
        return self.review.receive(
            arrival, findings, problem, auto_publish=self.settings.auto_publish_clean
        )

    def _answer(self, record: Any, country: str) -> None:
        """A bureau's query about a manifest: answered from HQ's records for its country now.
        One that does not decode is logged and left (it is no request for the review)."""
        try:
            query = self.manifests.decode_query(record.value or b"")
        except (SchemaError, KeyError, TypeError, ValueError) as exc:
            where = f"{record.topic}:{record.partition}:{record.offset}"
            log.warning(
                "review: manifest query %s from %s does not decode: %s", where, country, exc
            )
            return
        self.manifests.answer(country, query)

    def _take_new_topics(self) -> None:
        try:
            topics = sorted(t for t in self._consumer.topics() if self._ours.match(t))
            wanted = [
                TopicPartition(t, p)
                for t in topics
                for p in sorted(self._consumer.partitions_for_topic(t) or ())
            ]
        except KafkaError as exc:
            log.warning("review: cannot list the request topics: %s", exc)
            return
        if set(wanted) != self._consumer.assignment():
            self._consumer.assign(wanted)  # positions: committed offsets, else the earliest

    def close(self) -> None:
        self._consumer.close()
        if self._own_hq:
            self.hq.close()
