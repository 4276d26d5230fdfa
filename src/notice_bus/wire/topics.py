"""Topic names, their creation, and the registry of member countries.

Every country has topics of its own, so that broker ACLs can confine a bureau to them:
``notices.CC`` (HQ writes, CC reads; compacted, so the latest version of every notice stays
available for a bureau that joins late), ``acks.CC`` (CC writes, HQ reads), ``responses.CC``
(CC's own answers to notices), ``reminders.CC`` (HQ reminds CC of overdue notices) and
``dlq.CC`` (CC's adapter parks records it can never process), ``requests.CC`` (CC asks HQ for
notices, and for a manifest's details), ``decisions.CC`` (HQ's word on requests) and
``manifests.CC`` (what HQ says CC should hold). A country is registered when its notices
topic exists.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, ConfigError
from notice_bus.runtime.kafka import admin_client, explain, retry_transient
from notice_bus.runtime.settings import Settings

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_TOPIC_EXISTS = 36  # Kafka's TOPIC_ALREADY_EXISTS error code
_MONTH_MS = str(30 * 24 * 3600 * 1000)
#: Copies of each partition ``replication_factor = 0`` asks for, where there are brokers enough.
_AUTO_REPLICAS = 3
#: Metadata records one CreateTopics request may make: a KRaft controller refuses an operation
#: of more than 10,000 (POLICY_VIOLATION, "excessively large batch operation"), which 196
#: countries' topics exceed (a topic record, one per partition and one per config each).
_RECORDS_PER_REQUEST = 5000
KINDS = (
    "notices", "acks", "dlq", "responses", "reminders", "requests", "decisions", "manifests",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = ""

    def notices(self, country: str) -> str:
        return f"{self.prefix}notices.{country}"

    def acks(self, country: str) -> str:
        return f"{self.prefix}acks.{country}"

    def dead_letters(self, country: str) -> str:
        return f"{self.prefix}dlq.{country}"

    def responses(self, country: str) -> str:
        return f"{self.prefix}responses.{country}"

    def reminders(self, country: str) -> str:
        return f"{self.prefix}reminders.{country}"

    def requests(self, country: str) -> str:
        return f"{self.prefix}requests.{country}"

    def decisions(self, country: str) -> str:
        return f"{self.prefix}decisions.{country}"

    def manifests(self, country: str) -> str:
        return f"{self.prefix}manifests.{country}"

    @property
    def schemas(self) -> str:
        return f"{self.prefix}_schemas"

    @property
    def keyring(self) -> str:
        """HQ's signing keys, as the offline root signed them (compacted, read by everyone)."""
        return f"{self.prefix}_keyring"

    def pattern(self, kind: str) -> str:
        """A regex that matches the ``kind`` topic (notices, acks) of every country."""
        return f"^{re.escape(self.prefix)}{kind}\\.[A-Z]{{2}}$"

    def country_of(self, topic: str) -> str | None:
        """``FR`` for ``notices.FR`` or ``acks.FR``; ``None`` for anything else."""
        if not topic.startswith(self.prefix):
            return None
        kind, _, country = topic[len(self.prefix) :].partition(".")
        ok = kind in KINDS and _COUNTRY.match(country)
        return country if ok else None


def parse_countries(text: str | Iterable[str]) -> list[str]:
    """``"fr, ID,TH"`` → ``["FR", "ID", "TH"]``, refusing anything that is not a country code."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        code = item.strip().upper()
        if not code:
            continue
        if not _COUNTRY.match(code):
            raise ConfigError(f"not an ISO 3166-1 alpha-2 country code: {item.strip()!r}")
        if code not in out:
            out.append(code)
    return out


def expected_replication(brokers: int, settings: Settings) -> tuple[int, int]:
    """The replication factor and ``min.insync.replicas`` of the topics ``topics init``
    creates on a cluster of ``brokers`` brokers: the settings' where they are positive, else
    ``min(3, brokers)`` copies, of which 2 must have a write when there are 3 or more (1
    otherwise). ConfigError for more copies than brokers, or more in-sync copies than copies."""
    rf = settings.replication_factor or min(_AUTO_REPLICAS, brokers)
    if rf > brokers:
        raise ConfigError(
            f"setting replication_factor is {rf} but the cluster at {settings.bootstrap_servers}"
            f" has {brokers} broker(s): set NOTICE_BUS_REPLICATION_FACTOR to {brokers} or less,"
            " or to 0 for min(3, brokers)"
        )
    min_isr = settings.min_insync_replicas or (2 if rf >= _AUTO_REPLICAS else 1)
    if min_isr > rf:
        raise ConfigError(
            f"setting min_insync_replicas is {min_isr} but topics get {rf} replica(s):"
            " no write could be acknowledged; set NOTICE_BUS_MIN_INSYNC_REPLICAS to"
            f" {rf} or less, or to 0 for automatic"
        )
    return rf, min_isr


def durability_configs(min_isr: int) -> dict[str, str]:
    """The topic configs every topic we create gets: how many copies must have a write
    before it is acknowledged (producers send with acks=all), and no out-of-date replica
    ever elected leader (which would drop acknowledged writes)."""
    return {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false"}


def count_brokers(settings: Settings, admin: Any) -> int:
    """The brokers of the cluster ``admin`` is connected to that can hold replicas (fenced
    ones left out)."""
    try:
        cluster = retry_transient(settings, "describing the cluster", admin.describe_cluster)
    except KafkaError as exc:
        raise BrokerUnavailable(f"describing the cluster failed: {explain(exc)}") from exc
    brokers = [b for b in cluster.get("brokers", []) if not b.get("is_fenced", False)]
    if not brokers:
        raise BrokerUnavailable(
            f"the cluster at {settings.bootstrap_servers} reports no broker able to hold replicas"
        )
    return len(brokers)


def _topic_specs(settings: Settings, countries: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every topic of ``countries`` and the shared ones: partitions and topic configs."""
    names = TopicNames(settings.topic_prefix)
    compact = {"cleanup.policy": "compact"}
    wanted: dict[str, dict[str, Any]] = {
        names.schemas: {"num_partitions": 1, "configs": dict(compact)},
        names.keyring: {"num_partitions": 1, "configs": dict(compact)},
    }
    for cc in countries:
        # LogAppendTime: the broker's clock, not a bureau's, dates what arrives.
        common = {"message.timestamp.type": "LogAppendTime"}
        month = {**common, "retention.ms": _MONTH_MS}
        wanted[names.notices(cc)] = {
            "num_partitions": settings.partitions,
            "configs": {**common, **compact},
        }
        wanted[names.acks(cc)] = {"num_partitions": settings.partitions, "configs": dict(month)}
        for topic in (
            names.responses(cc),
            names.reminders(cc),
            names.requests(cc),
            names.decisions(cc),
            names.manifests(cc),
        ):
            wanted[topic] = {"num_partitions": 1, "configs": dict(month)}
        # parked records wait for a human
        wanted[names.dead_letters(cc)] = {"num_partitions": 1, "configs": {"retention.ms": "-1"}}
    return wanted


def init_topics(settings: Settings, countries: Iterable[str]) -> list[str]:
    """Create the topics of ``countries`` and the schema topic; returns the ones it created.

    Each gets the replication of :func:`expected_replication` for the cluster's brokers and
    the :func:`durability_configs`. Idempotent: topics that exist are left as they are (their
    replication too; the brokers are counted only when a topic is to be created).
    """
    wanted = _topic_specs(settings, countries)
    admin = admin_client(settings)
    try:
        existing = set(retry_transient(settings, "listing topics", admin.list_topics))
        missing = {t: spec for t, spec in wanted.items() if t not in existing}
        if missing:
            rf, min_isr = expected_replication(count_brokers(settings, admin), settings)
            for spec in missing.values():
                spec["replication_factor"] = rf
                spec["configs"] |= durability_configs(min_isr)
            for batch in _batches(missing):
                create = functools.partial(_create, settings, batch)
                result = retry_transient(settings, "creating topics", create)
                for topic in result["topics"]:
                    if topic["error_code"] not in (0, _TOPIC_EXISTS):
                        raise BrokerUnavailable(
                            f"creating topic {topic['name']} failed: error {topic['error_code']}"
                            f" {topic.get('error_message') or ''}".rstrip()
                        )
        return sorted(missing)
    except KafkaError as exc:
        raise BrokerUnavailable(f"creating topics failed: {explain(exc)}") from exc
    finally:
        admin.close()


def _batches(specs: dict[str, dict[str, Any]]) -> Iterable[dict[str, dict[str, Any]]]:
    """``specs`` in CreateTopics requests of at most :data:`_RECORDS_PER_REQUEST` records."""
    batch: dict[str, dict[str, Any]] = {}
    records = 0
    for topic, spec in specs.items():
        n = 1 + spec["num_partitions"] + len(spec["configs"])
        if batch and records + n > _RECORDS_PER_REQUEST:
            yield batch
            batch, records = {}, 0
        batch[topic] = spec
        records += n
    if batch:
        yield batch


def _create(settings: Settings, specs: dict[str, dict[str, Any]]) -> Any:
    """One attempt at CreateTopics, on an admin client of its own. kafka-python's admin sends
    it to the broker it took for the controller at its first such request, and keeps that one;
    under KRaft that is any broker the controllers believe alive, so right after a broker dies
    it may be the dead one until the controllers fence it (``broker.session.timeout.ms``, 9 s).
    The attempt then fails to connect (a retriable error), and the next, on a fresh client,
    asks again."""
    admin = admin_client(settings)
    try:
        return admin.create_topics(specs, raise_errors=False, wait_for_metadata=True)
    finally:
        admin.close()


def registered_countries(settings: Settings, admin: Any = None) -> list[str]:
    """Countries whose notices topic exists. ``admin``: a client to reuse (left open)."""
    names = TopicNames(settings.topic_prefix)
    client = admin if admin is not None else admin_client(settings)
    try:
        topics = retry_transient(settings, "listing topics", client.list_topics)
    except KafkaError as exc:
        raise BrokerUnavailable(f"listing topics failed: {explain(exc)}") from exc
    finally:
        if admin is None:
            client.close()
    pattern = re.compile(names.pattern("notices"))
    return sorted(c for t in topics if pattern.match(t) and (c := names.country_of(t)))
