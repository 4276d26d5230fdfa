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


def init_topics(settings: Settings, countries: Iterable[str]) -> list[str]:
    """Create the topics of ``countries`` and the schema topic; returns the ones it created.

    Idempotent: topics that exist are left as they are.
    """
    names = TopicNames(settings.topic_prefix)
    rf = settings.replication_factor
    wanted: dict[str, dict[str, Any]] = {
        names.schemas: {
            "num_partitions": 1,
            "replication_factor": rf,
            "configs": {"cleanup.policy": "compact"},
        },
        names.keyring: {
            "num_partitions": 1,
            "replication_factor": rf,
            "configs": {"cleanup.policy": "compact"},
        },
    }
    for cc in countries:
        # LogAppendTime: the broker's clock, not a bureau's, dates what arrives.
        common = {"message.timestamp.type": "LogAppendTime"}
        wanted[names.notices(cc)] = {
            "num_partitions": settings.partitions,
            "replication_factor": rf,
            "configs": {**common, "cleanup.policy": "compact"},
        }
        wanted[names.acks(cc)] = {
            "num_partitions": settings.partitions,
            "replication_factor": rf,
            "configs": {**common, "retention.ms": _MONTH_MS},
        }
        for topic in (
            names.responses(cc),
            names.reminders(cc),
            names.requests(cc),
            names.decisions(cc),
            names.manifests(cc),
        ):
            wanted[topic] = {
                "num_partitions": 1,
                "replication_factor": rf,
                "configs": {**common, "retention.ms": _MONTH_MS},
            }
        wanted[names.dead_letters(cc)] = {
            "num_partitions": 1,
            "replication_factor": rf,
            "configs": {"retention.ms": "-1"},
        }  # parked records wait for a human
    admin = admin_client(settings)
    try:
        existing = set(retry_transient(settings, "listing topics", admin.list_topics))
        missing = {t: spec for t, spec in wanted.items() if t not in existing}
        if missing:
            result = admin.create_topics(missing, raise_errors=False, wait_for_metadata=True)
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
