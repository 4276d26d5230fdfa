"""A bureau asks HQ for notices, and hears HQ's decisions.

``notice-bus request FILE`` checks the file as ``publish`` would (every problem at once,
before anything is sent) and sends each notice as a request on the bureau's own
``requests.CC``: the topic, which only that bureau may write, says who asks. HQ's answers
come back on ``decisions.CC``, signed by HQ, and :func:`read_decisions` reads them (checking
the signature where the bureau has HQ's root key).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.errors import InvalidNotice, SignatureInvalid
from notice_bus.runtime.identity import check_access
from notice_bus.runtime.kafka import connecting, failure, kafka_config, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.trust.keyring_topic import KeyringFeed, NoticeChecker
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.request import Decision, NoticeRequest
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import check_draft

#: Fields of a request beside the notice's own, in the same JSON object.
REQUEST_FIELDS = ("request_id", "facts", "person_status", "requester")


def read_requests(path: str | Path, requester: str | None = None) -> list[NoticeRequest]:
    """The requests of a JSON file of one notice or a list, in ``publish``'s shapes, each
    with optional ``facts``, ``person_status`` and ``request_id``. Raises one
    :class:`InvalidNotice` listing every problem of the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidNotice(f"cannot read: {exc.strerror}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InvalidNotice(f"not valid JSON: {exc}", source=str(path)) from exc
    items = data if isinstance(data, list) else [data]
    out: list[NoticeRequest] = []
    problems: list[InvalidNotice] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else str(path)
        if not isinstance(item, dict):
            problems.append(InvalidNotice("a request must be a JSON object", source=where))
            continue
        extra = {k: item.get(k) for k in REQUEST_FIELDS}
        notice = {k: v for k, v in item.items() if k not in REQUEST_FIELDS}
        bad = [k for k, v in extra.items() if v is not None and not isinstance(v, str)]
        problems += [InvalidNotice("must be text", field=k, source=where) for k in bad]
        problems += [p.located(where) for p in check_draft(notice)[1]]
        fields: dict[str, Any] = {k: v for k, v in extra.items() if isinstance(v, str) and v}
        fields.setdefault("requester", requester)
        out.append(NoticeRequest(notice=json.dumps(notice, ensure_ascii=False), **fields))
    if problems:
        first, *rest = problems
        raise InvalidNotice(
            "\n".join([first.reason, *map(str, rest)]),
            field=first.field,
            notice_id=first.notice_id,
            source=first.source,
        )
    return out


class RequestSender:
    """A producer on ``country``'s requests topic, kept open for a caller that sends many
    (a bureau's system, the benchmark). Close it to release the producer."""

    def __init__(self, settings: Settings, country: str) -> None:
        self.settings = settings
        self._codec = AvroCodec(load_schema("notice_request"), KafkaSchemaStore(settings))
        self.topic = TopicNames(settings.topic_prefix).requests(country)
        connecting(settings)
        try:
            self._producer = KafkaProducer(
                **kafka_config(settings, "notice-bus-request", producer=True)
            )
        except KafkaError as exc:
            raise unreachable(settings, exc) from exc

    def send(self, requests: list[NoticeRequest]) -> None:
        """Send ``requests``; returns once the broker has every one."""
        try:
            futures = [
                self._producer.send(
                    self.topic, key=r.request_id.encode(), value=self._codec.encode(r.to_avro())
                )
                for r in requests
            ]
            self._producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=30)
        except KafkaError as exc:
            raise failure(
                self.settings, exc, f"requests not confirmed on {self.topic}", self.topic
            ) from exc

    def close(self) -> None:
        self._producer.close(timeout=10)


def send_requests(settings: Settings, country: str, requests: list[NoticeRequest]) -> None:
    """Send ``requests`` on ``country``'s requests topic; returns once the broker has all."""
    sender = RequestSender(settings, country)
    try:
        sender.send(requests)
    finally:
        sender.close()


def read_decisions(
    settings: Settings, country: str, *, wait_for: set[str] | None = None, timeout_s: float = 5
) -> list[Decision]:
    """Every decision on ``country``'s requests, oldest first; with ``wait_for``, read until
    a final decision (not HELD) on each of those request ids has come, or ``timeout_s``. A
    decision whose HQ signature fails is an error, never shown as HQ's word."""
    codec = AvroCodec(load_schema("request_decision"), KafkaSchemaStore(settings))
    checker = NoticeChecker(KeyringFeed(settings)) if settings.root_key_file else None
    topic = TopicNames(settings.topic_prefix).decisions(country)
    connecting(settings)
    if settings.secured:  # a consumer would poll nothing from a topic it may not read
        check_access(settings, [topic], None)
    try:
        consumer = KafkaConsumer(**kafka_config(settings, "notice-bus-decisions"))
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc
    out: list[Decision] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
            for record in got:
                problem = checker.problem(record) if checker else None
                if problem is not None:
                    raise SignatureInvalid(
                        f"{topic}@{record.offset}: a decision not signed by HQ: {problem}"
                    )
                out.append(Decision.from_avro(codec.decode(record.value or b"")))
            final = {d.request_id for d in out if d.status.value != "HELD"}
            if not got and (wait_for is None or wait_for <= final):
                break
    except KafkaError as exc:
        raise failure(settings, exc, f"reading {topic}", topic) from exc
    finally:
        consumer.close()
    return out
