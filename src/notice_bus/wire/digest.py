"""What a national copy holds, as one comparable digest: the same code at HQ (what the
country should hold) and at the bureau (what it holds), so that equal copies give equal
digests byte for byte.

An **entry** is one notice as the country should see it: its id, version, state (ACTIVE or
WITHDRAWN) and a content hash. The content hash covers what a police officer reads: the
requesting country and the person's fields, in a canonical JSON form (sorted keys, lists as
lists, an unknown list as null, numbers as JSON writes them); a withdrawn notice's content is
not compared (it is out of service, and a cancel carries no person), so its hash is empty.

The **digest** puts each entry in one of :data:`BUCKETS` buckets by the first byte of the
SHA-256 of its notice id, and hashes each bucket's sorted entry lines: 256 hashes of
:data:`HASH_BYTES` bytes, 4 KiB whatever the copy's size. Equal buckets need no more words;
only a differing bucket's entries are exchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: How many buckets, and the bytes kept of each bucket's SHA-256 (128 bits: a collision by
#: chance is out of reach; a forger with write access to the copy is not the threat here).
BUCKETS = 256
HASH_BYTES = 16
#: The fields of a person that make a notice's content, in the red_notice columns' names.
CONTENT_FIELDS = (
    "name", "forename", "date_of_birth", "sex_id", "nationalities", "country_of_birth_id",
    "place_of_birth", "distinguishing_marks", "height", "weight", "eyes_colors_id",
    "hairs_id", "languages_spoken_ids", "arrest_warrants", "images",
)  # fmt: skip
_WARRANT_FIELDS = ("issuing_country_id", "charge", "charge_translation")


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    notice_id: str
    version: int
    state: str  # ACTIVE or WITHDRAWN
    content: str = ""  # content_hash() of an ACTIVE notice; "" for a WITHDRAWN one

    def line(self) -> str:
        return f"{self.notice_id}\t{self.version}\t{self.state}\t{self.content}\n"


def content_hash(requesting_country: str, person: Mapping[str, Any]) -> str:
    """The hex SHA-256 (first 16 bytes) of a notice's content: ``person`` as
    :meth:`~notice_bus.wire.model.Person.to_avro` gives it, or a red_notice row (extra keys
    are ignored, missing ones are null)."""
    fields: dict[str, Any] = {name: person.get(name) for name in CONTENT_FIELDS}
    fields["arrest_warrants"] = [
        {k: w.get(k) for k in _WARRANT_FIELDS} for w in fields["arrest_warrants"] or ()
    ]
    for name in ("height", "weight"):  # 1.8 and 1.80 are one height; 75 and 75.0 one weight
        if fields[name] is not None:
            fields[name] = float(fields[name])
    text = json.dumps(
        [requesting_country, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()[: HASH_BYTES * 2]


def bucket_of(notice_id: str) -> int:
    return hashlib.sha256(notice_id.encode()).digest()[0] % BUCKETS


class Digest:
    """The bucketed digest of a set of entries (one per notice id)."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        lines: list[list[str]] = [[] for _ in range(BUCKETS)]
        self.count = 0
        for e in entries:
            lines[bucket_of(e.notice_id)].append(e.line())
            self.count += 1
        self.buckets = [
            hashlib.sha256("".join(sorted(b)).encode()).digest()[:HASH_BYTES] for b in lines
        ]

    def to_bytes(self) -> bytes:
        return b"".join(self.buckets)

    @staticmethod
    def split(data: bytes) -> list[bytes]:
        """The bucket hashes of :meth:`to_bytes`; ValueError if it is not a digest."""
        if len(data) != BUCKETS * HASH_BYTES:
            raise ValueError(f"a digest has {BUCKETS * HASH_BYTES} bytes, got {len(data)}")
        return [data[i : i + HASH_BYTES] for i in range(0, len(data), HASH_BYTES)]

    def differing(self, other: bytes) -> list[int]:
        """The buckets whose hash differs from those of ``other`` (another digest's bytes)."""
        theirs = self.split(other)
        return [i for i, (a, b) in enumerate(zip(self.buckets, theirs, strict=True)) if a != b]
