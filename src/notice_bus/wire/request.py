"""The wire types of a bureau's request for a notice and of HQ's decision on it.

They mirror ``schemas/notice_request.avsc`` and ``schemas/request_decision.avsc``. A request
carries the notice as the JSON document ``notice-bus publish`` takes, so HQ validates it as
publish does and a problem is named in the bureau's own fields. The requesting country is
never in the request: it is the country of the topic the request came on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from notice_bus.wire.model import aware, utcnow


class RequestStatus(StrEnum):
    HELD = "HELD"  # waiting for a reviewer
    APPROVED = "APPROVED"  # published
    REFUSED = "REFUSED"  # sent nowhere
    INVALID = "INVALID"  # not a notice HQ could publish: the reason says what is wrong


#: Who decides a clean request when the policy publishes it at once.
AUTO_PUBLISH = "policy:auto_publish_clean"


@dataclass(frozen=True, slots=True)
class NoticeRequest:
    notice: str  # the notice in publish's JSON shape
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    requested_at: datetime = field(default_factory=utcnow)
    facts: str | None = None
    person_status: str | None = None
    requester: str | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "requested_at": self.requested_at,
            "notice": self.notice,
            "facts": self.facts,
            "person_status": self.person_status,
            "requester": self.requester,
        }

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> NoticeRequest:
        return cls(
            notice=data["notice"],
            request_id=data["request_id"],
            requested_at=aware(data["requested_at"]),
            facts=data.get("facts"),
            person_status=data.get("person_status"),
            requester=data.get("requester"),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    notice_id: str
    requesting_country: str
    status: RequestStatus
    received_at: datetime
    at: datetime
    decided_by: str
    reason: str | None = None
    findings: tuple[dict[str, str], ...] = ()  # rule_id, category, field, text, explanation

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "notice_id": self.notice_id,
            "requesting_country": self.requesting_country,
            "status": self.status.value,
            "received_at": self.received_at,
            "at": self.at,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "findings": [dict(f) for f in self.findings],
        }

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Decision:
        return cls(
            request_id=data["request_id"],
            notice_id=data["notice_id"],
            requesting_country=data["requesting_country"],
            status=RequestStatus(data["status"]),
            received_at=aware(data["received_at"]),
            at=aware(data["at"]),
            decided_by=data["decided_by"],
            reason=data.get("reason"),
            findings=tuple(dict(f) for f in data.get("findings", ())),
        )
