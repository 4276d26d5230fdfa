"""The tracker's rows from the records it reads, each field checked to fit its column.

A record whose fields do not fit (an id that is not a notice id, a version out of range, an
unknown status, action or answer, a request id too long, a decision on another country's
topic than the requester's) raises one of :data:`UNREADABLE`, and is quarantined on its
own: :func:`quarantined` is its row of ``tracker_quarantine``, with its bytes and why. Free
text is cut to its column and cleaned of NUL characters instead: it is for people. An
acknowledgement or answer whose MAC fails is not read at all: :func:`security_event` is its
row of ``tracker_security_event``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from notice_bus.errors import InvalidNotice, SchemaError
from notice_bus.tracker.copies import copy_row
from notice_bus.tracker.reconcile import Row
from notice_bus.tracker.tables import ACK, REQUEST, RESPONSE
from notice_bus.wire.model import AckStatus, Action, Answer
from notice_bus.wire.request import RequestStatus
from notice_bus.wire.validation import NOTICE_ID

__all__ = ["FORGED", "UNREADABLE", "quarantined", "rows_of", "security_event"]

log = logging.getLogger("notice_bus.tracker")
#: What decoding and checking a record may raise (times out of range: OverflowError).
UNREADABLE = (InvalidNotice, SchemaError, KeyError, ValueError, TypeError, OverflowError)
_INT32 = 2**31 - 1  # versions are Avro ints, and so are their columns
_ACTIONS = frozenset(a.value for a in Action)
_ANSWERS = frozenset(a.value for a in Answer)
_REASON_KEPT = 1000  # characters of a quarantine reason
#: The kind of security event a record of each checked topic makes.
FORGED = {"acks": "forged_ack", "responses": "forged_response"}


def rows_of(kind: str, country: str | None, data: dict[str, Any], r: Any) -> list[Row]:
    """The rows of record ``r`` of a ``kind`` topic ("notices", "acks", "responses",
    "decisions") of ``country``, decoded as ``data``; kind "copies" for a bureau's copy check
    on its acks topic (:mod:`notice_bus.tracker.copies`)."""
    broker_at = datetime.fromtimestamp(r.timestamp / 1000, UTC)
    if kind == "decisions":
        return [_decision(country, data, broker_at)]
    if kind == "copies":
        return [copy_row(country, data, broker_at)]
    if kind == "notices":  # the projection: what was sent, not the person
        _notice_id(data["notice_id"])
        _version(data["version"], low=1)
        if data["action"] not in _ACTIONS:
            raise InvalidNotice(f"unknown action {data['action']!r}", field="action")
        return [
            (
                country, data["notice_id"], data["version"], data["action"],
                data["published_at"], broker_at, r.partition, r.offset,
            )
        ]  # fmt: skip
    if kind == "responses":
        _notice_id(data["notice_id"])
        if data["answer"] not in _ANSWERS:
            raise InvalidNotice(f"unknown answer {data['answer']!r}", field="answer")
        return [
            (
                country, data["notice_id"], data["answer"], _text(data.get("text"), _TEXT),
                _text(data["responder"], _RESPONDER), data["at"], broker_at,
            )
        ]  # fmt: skip
    # The topic says who answered: ACLs confine a bureau to its own acks topic. Rejected
    # records are told apart by position, so two bad records of a notice count twice.
    # (Fields straight from the decoded dict: a dataclass per ack costs more than its row.)
    status = AckStatus(data["status"])
    position = ""
    if status is AckStatus.REJECTED:
        position = f"{data['source_partition']}:{data['source_offset']}"
        if len(position) > _POSITION:
            raise InvalidNotice(f"source position {position!r} too long", field="source")
    adapter_id = _text(data["adapter_id"], _ADAPTER_ID)
    reason = _text(data.get("reason"), _REASON)
    times = [(status.value, data["at"], broker_at)]
    if status is AckStatus.RECORDED and data.get("received_at") is not None:
        # The RECEIVED this RECORDED stands for, on the broker's timeline: the bureau's
        # clock may be off, but the interval it measured between the two is not.
        received = data["received_at"]
        times.append((AckStatus.RECEIVED.value, received, broker_at - (data["at"] - received)))
    events = [(data["notice_id"], data["version"])]
    events += [(e["notice_id"], e["version"]) for e in data.get("also", ())]
    for notice_id, version in events:
        # A REJECTED ack of a record without a readable notice id carries "" and 0.
        _notice_id(notice_id, empty=status is AckStatus.REJECTED)
        _version(version)
    return [
        (country, notice_id, version, state, position, at, seen, adapter_id, reason)
        for notice_id, version in events
        for state, at, seen in times
    ]


def _decision(country: str | None, data: dict[str, Any], broker_at: datetime) -> Row:
    """HQ's decision on a request: a row of ``tracker_request`` in the order of
    :data:`notice_bus.tracker.requests.REQUEST_COLUMNS`. Nobody decided a HELD one yet."""
    request_id = data["request_id"]
    if not isinstance(request_id, str) or len(request_id) > _REQUEST_ID:
        shown = repr(request_id)[:60]
        why = f"must be text of up to {_REQUEST_ID} characters, got {shown}"
        raise InvalidNotice(why, field="request_id")
    if data["requesting_country"] != country:  # HQ answers a request on its country's topic
        raise InvalidNotice(
            f"a decision for {data['requesting_country']!r} on {country}'s topic",
            field="requesting_country",
        )
    status = RequestStatus(data["status"])
    final = status is not RequestStatus.HELD
    rules = dict.fromkeys(_clean(f["rule_id"]) for f in data.get("findings", ()))
    return (
        request_id, country, _text(data["notice_id"], _NOTICE_ID), status.value,
        data["received_at"], data["at"] if final else None,
        _text(data["decided_by"], _DECIDED_BY) if final else None,
        _text(data.get("reason"), None), ",".join(rules), broker_at,
    )  # fmt: skip


def quarantined(r: Any, reason: str) -> dict[str, Any]:
    """Record ``r``'s row of ``tracker_quarantine``, logged at ERROR."""
    log.error("tracker: quarantined %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "reason": _clean(reason)[:_REASON_KEPT],
        "broker_at": _broker_at(r),
        "raw": r.value,
    }


def security_event(r: Any, kind: str, country: str, reason: str) -> dict[str, Any]:
    """Record ``r``'s row of ``tracker_security_event`` (``kind``: "acks" or "responses", the
    topic's), logged at ERROR."""
    log.error(
        "tracker: security event, %s[%d]@%d not counted: %s", r.topic, r.partition, r.offset, reason
    )
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "country": country,
        "kind": FORGED[kind],
        "reason": _clean(reason)[:_REASON_KEPT],
        "broker_at": _broker_at(r),
        "raw": r.value,
    }


def _broker_at(r: Any) -> datetime:
    try:
        return datetime.fromtimestamp(r.timestamp / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def _length(column: Any) -> int | None:
    length: int | None = getattr(column.type, "length", None)
    return length


_TEXT, _RESPONDER = _length(RESPONSE.c.text), _length(RESPONSE.c.responder)
_ADAPTER_ID, _REASON = _length(ACK.c.adapter_id), _length(ACK.c.reason)
_POSITION = _length(ACK.c.position) or 32
_REQUEST_ID, _NOTICE_ID = _length(REQUEST.c.request_id) or 64, _length(REQUEST.c.notice_id)
_DECIDED_BY = _length(REQUEST.c.decided_by)


def _notice_id(value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str) or not (NOTICE_ID.match(value) or (empty and value == "")):
        shown = repr(value)[:60]
        raise InvalidNotice(f"must look like YYYY/NNNNN, got {shown}", field="notice_id")


def _version(value: Any, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _INT32:
        raise InvalidNotice(f"must be an integer {low} to {_INT32}, got {value!r}", field="version")


def _text(value: Any, length: int | None) -> Any:
    """A free-text field made to fit its column: cut to ``length``, without NUL characters
    (PostgreSQL cannot store them). What it says is for people; a cut does no harm."""
    if not isinstance(value, str):
        return value
    value = _clean(value)
    return value[:length] if length is not None else value


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
