"""The wire types of copy verification: HQ's manifest of what a country should hold, a
bureau's query for the differing buckets, HQ's answer, and the bureau's report.

They mirror ``schemas/manifest.avsc``, ``manifest_query.avsc``, ``manifest_details.avsc`` and
``copy_check.avsc``. A query travels on the bureau's requests topic and a report on its acks
topic, beside records of other schemas: the record header :data:`KIND_HEADER` names which.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from notice_bus.wire.digest import Entry
from notice_bus.wire.model import aware, utcnow

#: The header that names a record's kind on a topic shared by several schemas.
KIND_HEADER = "nb-kind"
MANIFEST, QUERY, DETAILS, CHECK = "manifest", "manifest-query", "manifest-details", "copy-check"
#: The kinds of difference between a national copy and HQ's records.
MISSING, EXTRA, STALE, RESURRECTED, ALTERED = "missing", "extra", "stale", "resurrected", "altered"
KINDS = (MISSING, EXTRA, STALE, RESURRECTED, ALTERED)


def kind_of(headers: Any) -> str | None:
    """The :data:`KIND_HEADER` of a record's headers (kafka-python's list of pairs)."""
    for key, value in headers or ():
        if key == KIND_HEADER:
            return bytes(value).decode("ascii", "replace")
    return None


def kind_header(kind: str) -> list[tuple[str, bytes]]:
    return [(KIND_HEADER, kind.encode("ascii"))]


class CopyStatus(StrEnum):
    VERIFIED = "VERIFIED"  # every bucket equal
    DRIFT = "DRIFT"  # differences found (some perhaps mended)
    UNVERIFIABLE = "UNVERIFIABLE"  # the local system cannot list what it holds


@dataclass(frozen=True, slots=True)
class Manifest:
    country: str
    count: int
    digest: bytes
    manifest_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    at: datetime = field(default_factory=utcnow)

    def to_avro(self) -> dict[str, Any]:
        return {
            "manifest_id": self.manifest_id,
            "country": self.country,
            "at": self.at,
            "count": self.count,
            "digest": self.digest,
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> Manifest:
        return cls(d["country"], d["count"], d["digest"], d["manifest_id"], aware(d["at"]))


@dataclass(frozen=True, slots=True)
class ManifestQuery:
    manifest_id: str
    buckets: tuple[int, ...]
    at: datetime = field(default_factory=utcnow)

    def to_avro(self) -> dict[str, Any]:
        return {"manifest_id": self.manifest_id, "buckets": list(self.buckets), "at": self.at}

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> ManifestQuery:
        return cls(d["manifest_id"], tuple(d["buckets"]), aware(d["at"]))


@dataclass(frozen=True, slots=True)
class ManifestDetails:
    manifest_id: str
    country: str
    bucket: int
    entries: tuple[Entry, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "manifest_id": self.manifest_id,
            "country": self.country,
            "bucket": self.bucket,
            "entries": [
                {
                    "notice_id": e.notice_id,
                    "version": e.version,
                    "state": e.state,
                    "content": e.content,
                }
                for e in self.entries
            ],
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> ManifestDetails:
        entries = tuple(
            Entry(e["notice_id"], e["version"], e["state"], e["content"]) for e in d["entries"]
        )
        return cls(d["manifest_id"], d["country"], d["bucket"], entries)


@dataclass(frozen=True, slots=True)
class CopyCheck:
    country: str
    manifest_id: str
    status: CopyStatus
    held: int
    expected: int
    counts: dict[str, int] = field(default_factory=dict)  # by kind of difference
    mended: int = 0
    examples: tuple[tuple[str, str, bool], ...] = ()  # (notice_id, kind, mended), up to 100
    reason: str | None = None
    at: datetime = field(default_factory=utcnow)

    def to_avro(self) -> dict[str, Any]:
        return {
            "country": self.country,
            "manifest_id": self.manifest_id,
            "at": self.at,
            "status": self.status.value,
            "held": self.held,
            "expected": self.expected,
            **{k: self.counts.get(k, 0) for k in KINDS},
            "mended": self.mended,
            "examples": [{"notice_id": n, "kind": k, "mended": m} for n, k, m in self.examples],
            "reason": self.reason,
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> CopyCheck:
        return cls(
            country=d["country"],
            manifest_id=d["manifest_id"],
            status=CopyStatus(d["status"]),
            held=d["held"],
            expected=d["expected"],
            counts={k: d.get(k, 0) for k in KINDS},
            mended=d.get("mended", 0),
            examples=tuple((e["notice_id"], e["kind"], e["mended"]) for e in d.get("examples", ())),
            reason=d.get("reason"),
            at=aware(d["at"]),
        )
