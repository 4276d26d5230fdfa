"""Copy verification, the bureau's side: is the national copy what HQ says it should be?

HQ publishes a :class:`~notice_bus.wire.manifest.Manifest` on ``manifests.CC``: the digest
(:mod:`notice_bus.wire.digest`) of what the country should hold. :class:`CopyChecker` follows
that topic (no consumer group: partition 0 assigned, from the last manifest on), and for each
manifest:

1. digests what the local system holds (``Sink.entries()``); a system that cannot list is
   reported UNVERIFIABLE, never as consistent; one that is unreachable too, with the reason;
2. equal digests: VERIFIED, nothing else is sent. Otherwise it asks HQ for the differing
   buckets (a :class:`~notice_bus.wire.manifest.ManifestQuery` on ``requests.CC``) and waits
   for one :class:`~notice_bus.wire.manifest.ManifestDetails` per bucket on ``manifests.CC``,
   ``broker_timeout_s`` x 3 at most. Buckets HQ did not answer in time are left out of the
   counts, and the report's ``reason`` says how many (status DRIFT: the digests differ);
3. classifies each difference: **missing** (HQ has it, the copy not), **extra** (the copy
   has it, HQ never sent it), **stale** (the copy's version is older; a cancel that never
   arrived included), **resurrected** (HQ withdrew it, the copy has it ACTIVE at that version
   or later: a cancelled notice brought back), **altered** (same version, HQ's ACTIVE, and the
   copy's content differs or it is withdrawn locally). A copy's version newer than the
   manifest's, ACTIVE on both sides, was published after HQ read its records and is not a
   difference. A system whose listing has no content (``Sink.content_listed`` False) is
   compared on versions and states only;
4. with ``repair = "mend"``: missing, stale and resurrected notices are written again from the
   compacted ``notices.CC`` (read from its beginning without a group; the latest record of
   each, HQ's signature checked where the bureau has a root key, an update no longer addressed
   to the country taken as the adapter takes it), through ``Sink.force``, which applies a
   cancel over the same version too (a resurrected row claims the cancel's version). A notice
   the topic does not hold at HQ's version yet is reported, not mended. **Extra and altered
   notices are reported only: never deleted or overwritten by this check**; what the bureau
   changed or added itself is for its officers to judge;
5. sends a :class:`~notice_bus.wire.manifest.CopyCheck` on ``acks.CC`` (header ``nb-kind:
   copy-check``, with the country's MAC, as acknowledgements): counts by kind, how many were
   mended, up to 100 examples.

A check right after HQ published may count notices still in flight as missing or stale
(mend writes them as the adapter would have) or as extra (published after the manifest).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.bureau.compacted import latest_events
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.errors import BrokerUnavailable, NoticeBusError, SchemaError
from notice_bus.runtime.kafka import connecting, explain, kafka_config, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.trust.ack_mac import signer_for
from notice_bus.trust.keyring_topic import KeyringFeed, NoticeChecker
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.digest import Digest, Entry, bucket_of
from notice_bus.wire.manifest import (
    ALTERED,
    CHECK,
    DETAILS,
    EXTRA,
    KINDS,
    MANIFEST,
    MISSING,
    QUERY,
    RESURRECTED,
    STALE,
    CopyCheck,
    CopyStatus,
    Manifest,
    ManifestDetails,
    ManifestQuery,
    kind_header,
    kind_of,
)
from notice_bus.wire.model import ACTIVE, WITHDRAWN, Action, NoticeEvent
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.copies")
#: Asks HQ for the entries of some buckets of a manifest; returns those it got in time.
AskHQ = Callable[[Manifest, Sequence[int]], Mapping[int, Sequence[Entry]]]
MENDABLE = (MISSING, STALE, RESURRECTED)
EXAMPLES = 100
_LOOK_BACK = 32  # records before the end first read for the last manifest (doubled as needed)


def classify(hq: Entry | None, local: Entry | None, *, content: bool = True) -> str | None:
    """The kind of difference between HQ's entry of a notice and the copy's; None if none."""
    if hq is None:
        return EXTRA if local is not None else None
    if local is None:
        return MISSING
    if local.version < hq.version:
        return STALE
    if hq.state == WITHDRAWN and local.state == ACTIVE:
        return RESURRECTED
    if local.version > hq.version or hq.state != ACTIVE:
        return None  # newer than the manifest; or withdrawn on both sides
    if local.state != ACTIVE or (content and local.content != hq.content):
        return ALTERED
    return None


class CopyChecker:
    """Checks ``country``'s copy in ``sink`` against HQ's manifests; see the module docstring.

    ``ask`` replaces the query over Kafka (tests, benchmarks); ``send=False`` in
    :meth:`check_once` keeps the report off the broker."""

    def __init__(
        self, settings: Settings, country: str, sink: Sink, *, ask: AskHQ | None = None
    ) -> None:
        self.settings = settings
        self.country = country
        self.sink = sink
        self.names = TopicNames(settings.topic_prefix)
        self.topic = self.names.manifests(country)
        self._ask = ask or self._ask_hq
        self._store = KafkaSchemaStore(settings)
        self._codecs = {
            kind: AvroCodec(load_schema(name), self._store)
            for kind, name in (
                (MANIFEST, "manifest"),
                (DETAILS, "manifest_details"),
                (QUERY, "manifest_query"),
                (CHECK, "copy_check"),
            )
        }
        self._checker = NoticeChecker(KeyringFeed(settings)) if settings.root_key_file else None
        self._mac = signer_for(settings, country)
        self._producer: Any = None

    # -- the check ---------------------------------------------------------------------------

    def check_once(self, manifest: Manifest, *, send: bool = True) -> CopyCheck:
        """Check the copy against ``manifest``, mend if the policy says so, report (unless
        ``send`` is False) and return the report."""
        result = self._check(manifest)
        if send:
            self.report(result)
        return result

    def _check(self, manifest: Manifest) -> CopyCheck:
        base: dict[str, Any] = {
            "country": self.country,
            "manifest_id": manifest.manifest_id,
            "expected": manifest.count,
        }
        unverifiable = {**base, "status": CopyStatus.UNVERIFIABLE, "held": 0}
        try:
            listing = self.sink.entries()
            local = None if listing is None else {e.notice_id: e for e in listing}
        except NoticeBusError as exc:
            return CopyCheck(**unverifiable, reason=f"the local system could not be listed: {exc}")
        if local is None:
            what = type(self.sink).__name__
            if hasattr(self.sink, "system"):
                what = type(self.sink.system).__name__
            return CopyCheck(**unverifiable, reason=f"{what} cannot list what it holds")
        base["held"] = len(local)
        try:
            buckets = Digest(local.values()).differing(manifest.digest)
        except ValueError as exc:
            reason = f"the manifest's digest is unreadable: {exc}"
            return CopyCheck(**base, status=CopyStatus.DRIFT, reason=reason)
        if not buckets:
            return CopyCheck(**base, status=CopyStatus.VERIFIED)
        answered = self._ask(manifest, buckets)
        by_bucket: dict[int, dict[str, Entry]] = {b: {} for b in answered}
        for e in local.values():
            mine = by_bucket.get(bucket_of(e.notice_id))
            if mine is not None:
                mine[e.notice_id] = e
        found: list[tuple[str, str, Entry | None]] = []  # (notice id, kind, HQ's entry)
        content = self.sink.content_listed
        for b, hq_entries in answered.items():
            theirs = {e.notice_id: e for e in hq_entries}
            for nid in sorted(theirs.keys() | by_bucket[b].keys()):
                kind = classify(theirs.get(nid), by_bucket[b].get(nid), content=content)
                if kind is not None:
                    found.append((nid, kind, theirs.get(nid)))
        mended = self._mend(found) if self.settings.repair == "mend" else set()
        counts = dict.fromkeys(KINDS, 0)
        for _, kind, _ in found:
            counts[kind] += 1
        order = {k: i for i, k in enumerate(KINDS)}
        found.sort(key=lambda f: (order[f[1]], f[0]))
        examples = tuple((nid, kind, nid in mended) for nid, kind, _ in found[:EXAMPLES])
        reasons = []
        if len(answered) < len(buckets):
            wait = self.settings.broker_timeout_s * 3
            reasons.append(
                f"HQ answered {len(answered)} of {len(buckets)} differing buckets within"
                f" {wait:g}s; the differences of the others are not counted"
            )
        if not found and len(answered) == len(buckets):
            reasons.append("the digests differ only by notices newer than the manifest")
        return CopyCheck(
            **base,
            status=CopyStatus.DRIFT,
            counts=counts,
            mended=len(mended),
            examples=examples,
            reason="; ".join(reasons) or None,
        )

    # -- the repair --------------------------------------------------------------------------

    def _mend(self, found: Sequence[tuple[str, str, Entry | None]]) -> set[str]:
        """Write the mendable differences from the notices topic; the ids mended."""
        wanted = {nid: hq for nid, kind, hq in found if kind in MENDABLE and hq is not None}
        if not wanted:
            return set()
        try:
            latest = self.latest_events(wanted)
        except NoticeBusError as exc:
            log.error("%s: nothing mended: %s", self.country, exc)
            return set()
        events = []
        for nid, hq in wanted.items():
            event = latest.get(nid)
            if event is None or event.version < hq.version:
                continue  # not on the topic at HQ's version (yet)
            if hq.state == WITHDRAWN and event.action is not Action.CANCEL:
                continue
            events.append(event)
        if not events:
            return set()
        try:
            self.sink.force(events)
        except NoticeBusError as exc:
            log.error("%s: %d notices not mended: %s", self.country, len(events), exc)
            return set()
        log.warning("%s: copy check mended %d notices", self.country, len(events))
        return {e.notice_id for e in events}

    def latest_events(self, ids: Iterable[str]) -> dict[str, NoticeEvent]:
        """The latest event of each of ``ids`` on the compacted ``notices.CC``, as the adapter
        would take it in (:func:`~notice_bus.bureau.compacted.latest_events`)."""
        return latest_events(self.settings, self.country, ids, self._store, self._checker)

    # -- Kafka -------------------------------------------------------------------------------

    def _consumer(self, client_id: str) -> Any:
        connecting(self.settings)
        try:
            return KafkaConsumer(**kafka_config(self.settings, client_id), enable_auto_commit=False)
        except KafkaError as exc:
            raise unreachable(self.settings, exc) from exc

    def _send(self, topic: str, key: bytes, value: bytes, headers: list[Any]) -> None:
        if self._producer is None:
            connecting(self.settings)
            try:
                config = kafka_config(self.settings, "notice-bus-copy-check", producer=True)
                self._producer = KafkaProducer(**config)
            except KafkaError as exc:
                raise unreachable(self.settings, exc) from exc
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers)
            self._producer.flush(timeout=30)
            future.get(timeout=30)
        except KafkaError as exc:
            raise BrokerUnavailable(f"{topic}: not confirmed: {explain(exc)}") from exc

    def report(self, check: CopyCheck) -> None:
        """Send ``check`` on ``acks.CC``, with the kind header and the country's MAC."""
        key = self.country.encode()
        value = self._codecs[CHECK].encode(check.to_avro())
        headers = kind_header(CHECK) + (self._mac.headers(key, value) if self._mac else [])
        self._send(self.names.acks(self.country), key, value, headers)
        log.info("%s: copy %s against manifest %s", self.country, check.status, check.manifest_id)

    def _hq_record(self, record: Any, kind: str) -> dict[str, Any] | None:
        """The decoded record if it is of ``kind`` and signed by HQ (where checked)."""
        if kind_of(record.headers) != kind or record.value is None:
            return None
        if self._checker is not None and (problem := self._checker.problem(record)):
            log.error("%s@%d: a %s not signed by HQ: %s", self.topic, record.offset, kind, problem)
            return None
        try:
            return self._codecs[kind].decode(record.value)
        except SchemaError as exc:
            log.error("%s@%d: unreadable %s: %s", self.topic, record.offset, kind, exc)
            return None

    def _ask_hq(self, manifest: Manifest, buckets: Sequence[int]) -> dict[int, Sequence[Entry]]:
        """Query HQ on ``requests.CC`` and read its details from ``manifests.CC``."""
        tp = TopicPartition(self.topic, 0)
        consumer = self._consumer("notice-bus-copy-details")
        got: dict[int, Sequence[Entry]] = {}
        try:
            consumer.assign([tp])
            consumer.seek_to_end(tp)
            consumer.position(tp)  # resolved now: every answer comes after this offset
            query = ManifestQuery(manifest.manifest_id, tuple(buckets))
            value = self._codecs[QUERY].encode(query.to_avro())
            key = manifest.manifest_id.encode()
            self._send(self.names.requests(self.country), key, value, kind_header(QUERY))
            deadline = time.monotonic() + self.settings.broker_timeout_s * 3
            wanted = set(buckets)
            while not wanted <= got.keys() and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        data = self._hq_record(r, DETAILS)
                        if data is None:
                            continue
                        details = ManifestDetails.from_avro(data)
                        if details.manifest_id == manifest.manifest_id and details.bucket in wanted:
                            got[details.bucket] = details.entries
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading {self.topic}: {explain(exc)}") from exc
        finally:
            consumer.close()
        return got

    # -- following the manifests -------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Check the latest manifest, then each new one, until ``stop`` is set."""
        tp = TopicPartition(self.topic, 0)
        consumer = self._consumer("notice-bus-copy-check")
        try:
            consumer.assign([tp])
            pending = self._last_manifest(consumer, tp)
            while not stop.is_set():
                if pending is not None:
                    self._check_logged(pending)
                    pending = None
                for records in consumer.poll(timeout_ms=self.settings.poll_timeout_ms).values():
                    for r in records:
                        data = self._hq_record(r, MANIFEST)
                        if data is not None:
                            pending = Manifest.from_avro(data)  # only the newest of a batch
        finally:
            consumer.close()
            self.close()

    def latest_manifest(self) -> Manifest | None:
        """The last manifest on ``manifests.CC`` (signed by HQ, where checked); None if none."""
        tp = TopicPartition(self.topic, 0)
        consumer = self._consumer("notice-bus-copy-check")
        try:
            consumer.assign([tp])
            return self._last_manifest(consumer, tp)
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading {self.topic}: {explain(exc)}") from exc
        finally:
            consumer.close()

    def _check_logged(self, manifest: Manifest) -> None:
        if manifest.country != self.country:
            log.error("%s: a manifest for %s on its topic, ignored", self.country, manifest.country)
            return
        try:
            self.check_once(manifest)
        except NoticeBusError as exc:
            log.error("%s: copy check of %s failed: %s", self.country, manifest.manifest_id, exc)

    def _last_manifest(self, consumer: Any, tp: TopicPartition) -> Manifest | None:
        """The last manifest before the end, read forward from a little before it (further
        back as needed); the consumer is left at the end."""
        end = consumer.end_offsets([tp])[tp]
        begin = consumer.beginning_offsets([tp])[tp]
        back = _LOOK_BACK
        while True:
            start = max(begin, end - back)
            consumer.seek(tp, start)
            last = None
            while consumer.position(tp) < end:
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        if r.offset < end and (data := self._hq_record(r, MANIFEST)) is not None:
                            last = Manifest.from_avro(data)
            if last is not None or start == begin:
                consumer.seek(tp, end)
                return last
            back *= 2

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
