"""HQ's side of copy verification: what each country should hold, as a manifest on its
``manifests.CC`` topic, and the entries of the buckets a bureau asks about.

What a country should hold, from HQ's records: every notice HQ ever queued for the country's
notices topic (the outbox keeps every record it queued), at HQ's current version, because an
update or a cancel goes to every country that ever had the notice. Its state is WITHDRAWN if
HQ cancelled it, or if its current targets are a list without the country (the country's
adapter withdraws a notice an update no longer addresses to it); else ACTIVE, with the
content hash of the requesting country and the person as HQ holds them.

Manifests and details are sent at once with HQ's producer (:meth:`HQ.send_now`: signed, with
the kind header), not through the outbox: one late is worth nothing, and one lost is made
good by the next (a manifest every ``manifest_interval_s``; a query's offset is committed only
once its answer is on the broker).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, Text, cast, exists, select

from notice_bus.errors import HQStateError
from notice_bus.hq.publisher import HQ
from notice_bus.hq.tables import HQ_NOTICE, OUTBOX
from notice_bus.runtime.db import translate_errors
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.digest import BUCKETS, Digest, Entry, bucket_of, content_hash
from notice_bus.wire.manifest import (
    DETAILS,
    MANIFEST,
    Manifest,
    ManifestDetails,
    ManifestQuery,
)
from notice_bus.wire.model import ACTIVE, WITHDRAWN, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, registered_countries

log = logging.getLogger("notice_bus.hq.manifest")
_NOTICE: Any = HQ_NOTICE
_OUTBOX: Any = OUTBOX
_HASHES_KEPT = 1_000_000  # content hashes Manifests keeps (about 150 MB at most)


def expected_entries(
    engine: Engine,
    names: TopicNames,
    country: str,
    hashes: dict[tuple[str, int], str] | None = None,
) -> list[Entry]:
    """What ``country`` should hold, by HQ's records now (see the module's docstring).

    One query: ``hq_notice`` rows with an outbox row for the country's notices topic (the
    outbox's index of ``(key, topic)``), JSON columns read as text and parsed only when needed.
    ``hashes``: content hashes by (notice id, version), read and filled (a version's content
    never changes, and most notices go to every country)."""
    sent = exists().where(
        _OUTBOX.c.key == _NOTICE.c.notice_id, _OUTBOX.c.topic == names.notices(country)
    )
    query = select(
        _NOTICE.c.notice_id,
        _NOTICE.c.version,
        _NOTICE.c.status,
        _NOTICE.c.requesting_country,
        # As text: parsed here only when needed (psycopg would parse every row's).
        cast(_NOTICE.c.target_countries, Text).label("targets"),
        cast(_NOTICE.c.person, Text).label("person"),
    ).where(sent)
    known = hashes if hashes is not None else {}
    out: list[Entry] = []
    with translate_errors(str(engine.url)), engine.connect() as conn:
        for notice_id, version, status, requesting, targets, person in conn.execute(query):
            withdrawn = status == WITHDRAWN
            if not withdrawn and targets and targets != "[]":
                listed = _json(targets)
                withdrawn = bool(listed) and country not in listed
            if withdrawn:
                out.append(Entry(notice_id, version, WITHDRAWN, ""))
                continue
            content = known.get((notice_id, version))
            if content is None:
                content = content_hash(requesting, _json(person) or {})
                known[(notice_id, version)] = content
            out.append(Entry(notice_id, version, ACTIVE, content))
    return out


def manifest_of(
    engine: Engine,
    names: TopicNames,
    country: str,
    hashes: dict[tuple[str, int], str] | None = None,
) -> tuple[Manifest, list[Entry]]:
    """``country``'s manifest now, and the entries it digests (``hashes``: as
    :func:`expected_entries` takes them)."""
    at = utcnow()  # HQ's clock when it read its records
    entries = expected_entries(engine, names, country, hashes)
    digest = Digest(entries)
    return Manifest(country, digest.count, digest.to_bytes(), at=at), entries


def details(
    entries: Iterable[Entry], manifest_id: str, country: str, buckets: Iterable[int]
) -> list[ManifestDetails]:
    """The entries of each of ``buckets`` (in order, each once; numbers that are no bucket
    are left out), one :class:`ManifestDetails` a bucket, an empty bucket too."""
    wanted = sorted({b for b in buckets if 0 <= b < BUCKETS})
    by_bucket: dict[int, list[Entry]] = {b: [] for b in wanted}
    for e in entries:
        found = by_bucket.get(bucket_of(e.notice_id))
        if found is not None:
            found.append(e)
    return [ManifestDetails(manifest_id, country, b, tuple(sorted(by_bucket[b]))) for b in wanted]


class Manifests:
    """Publishes countries' manifests and answers bureaus' queries, with ``hq``'s producer."""

    def __init__(self, hq: HQ, schemas: SchemaStore | None = None) -> None:
        self.hq = hq
        self.names = TopicNames(hq.settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(hq.settings)
        self._manifest = AvroCodec(load_schema("manifest"), store)
        self._details = AvroCodec(load_schema("manifest_details"), store)
        self._query = AvroCodec(load_schema("manifest_query"), store)
        self._hashes: dict[tuple[str, int], str] = {}  # content hashes of notice versions

    def publish(self, country: str) -> Manifest:
        """Compute ``country``'s manifest and send it on ``manifests.CC`` (key: the country)."""
        if len(self._hashes) > _HASHES_KEPT:  # old versions' hashes: made again if asked
            self._hashes.clear()
        manifest, _ = manifest_of(self.hq.engine, self.names, country, self._hashes)
        value = self._manifest.encode(manifest.to_avro())
        self.hq.send_now(self.names.manifests(country), [(country, value)], MANIFEST)
        log.info("manifest %s for %s: %d notices", manifest.manifest_id, country, manifest.count)
        return manifest

    def publish_all(self, countries: Sequence[str] | None = None) -> list[Manifest]:
        """The manifests of ``countries`` (default: every registered one), one after another;
        a country without topics is refused before anything is sent."""
        registered = registered_countries(self.hq.settings)
        if countries is None:
            countries = registered
        unknown = sorted(set(countries) - set(registered))
        if unknown:
            raise HQStateError(
                f"{', '.join(unknown)} has no topic; run `notice-bus topics init` first"
            )
        return [self.publish(cc) for cc in countries]

    def decode_query(self, value: bytes) -> ManifestQuery:
        """A query's record value; :class:`~notice_bus.errors.SchemaError` (or KeyError,
        TypeError, ValueError) if it is not one."""
        return ManifestQuery.from_avro(self._query.decode(value))

    def answer(self, country: str, query: ManifestQuery) -> list[ManifestDetails]:
        """Send the entries of the buckets ``query`` asks for, from HQ's records now, one
        record per bucket on ``manifests.CC`` (key: the manifest id). A manifest id HQ no
        longer knows is answered all the same: what changed since shows as a difference,
        and the bureau checks again at the next manifest."""
        entries = expected_entries(self.hq.engine, self.names, country, self._hashes)
        answers = details(entries, query.manifest_id, country, query.buckets)
        records = [(d.manifest_id, self._details.encode(d.to_avro())) for d in answers]
        self.hq.send_now(self.names.manifests(country), records, DETAILS)
        log.info("manifest %s: %d buckets told to %s", query.manifest_id, len(answers), country)
        return answers


def _json(value: Any) -> Any:
    """A JSON column's value read as text (SQLite) or already parsed (psycopg)."""
    return json.loads(value) if isinstance(value, str | bytes) else value
