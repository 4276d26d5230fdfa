"""Deadlines, incidents and reminders, on the real broker with a real HTTP receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from notice_bus.errors import ConfigError, TransientError
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.local_broker import free_port
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.escalation import EscalationResult, Escalator, post_json
from notice_bus.tracker.reconcile import store
from notice_bus.tracker.tables import ACK, INCIDENT, REMINDER_SENT, RESPONSE, SENT
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import Answer, Overdue, Reminder, Response, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft

pytestmark = pytest.mark.kafka
NOTHING = EscalationResult(opened=0, closed=0, reminders_sent=0)


class Receiver:
    """A webhook endpoint on 127.0.0.1: keeps what it accepted, can answer 500 for a while."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.meta: list[tuple[str, str | None]] = []  # (path, content type) of accepted POSTs
        self._fail = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    failing = receiver._fail > 0
                    if failing:
                        receiver._fail -= 1
                        receiver.refused += 1
                    else:
                        receiver.accepted.append(body)
                        receiver.meta.append((self.path, self.headers["Content-Type"]))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail = n

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def make_escalator() -> Iterator[Callable[..., Escalator]]:
    made: list[Escalator] = []

    def make(*args: Any, **kw: Any) -> Escalator:
        made.append(Escalator(*args, **kw))
        return made[-1]

    yield make
    for e in made:
        e.close()


def rows(bus: Bus, table: sa.Table, **where: Any) -> list[Any]:
    query = sa.select(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with bus.tracker.engine.connect() as conn:
        return list(conn.execute(query.order_by(*table.primary_key.columns)).all())


def play_recorded(bus: Bus, country: str, notice_id: str, version: int = 1) -> None:
    """The country's RECORDED acknowledgement, as the tracker would store it."""
    now = utcnow()
    with bus.tracker.engine.begin() as conn:
        store(conn, acks=[(country, notice_id, version, "RECORDED", "", now, now, "test", None)])


def answer(settings: Settings, country: str, notice_id: str) -> None:
    """The bureau's answer, on its responses topic, as an adapter sends it."""
    codec = AvroCodec(load_schema("response"), KafkaSchemaStore(settings))
    response = Response(country, notice_id, Answer.NO_TRACE, utcnow(), "officer")
    producer = KafkaProducer(**kafka_config(settings, "test-bureau"), acks="all")
    try:
        topic = TopicNames(settings.topic_prefix).responses(country)
        producer.send(topic, key=notice_id.encode(), value=codec.encode(response.to_avro())).get(30)
    finally:
        producer.close()


def reminders(settings: Settings, country: str) -> list[tuple[str, Reminder]]:
    """Everything on the country's reminders topic: (key, reminder)."""
    codec = AvroCodec(load_schema("reminder"), KafkaSchemaStore(settings))
    tp = TopicPartition(TopicNames(settings.topic_prefix).reminders(country), 0)
    consumer = KafkaConsumer(**kafka_config(settings, "test-reminders"), enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[tuple[str, Reminder]] = []
        deadline = time.monotonic() + 15
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += [
                    (r.key.decode(), Reminder.from_avro(codec.decode(r.value))) for r in records
                ]
        assert len(out) == end
        return out
    finally:
        consumer.close()


def shifted(delta: timedelta) -> Callable[[], datetime]:
    return lambda: utcnow() + delta


def test_late_country_is_escalated_once_reminded_once_and_closed_when_it_catches_up(
    make_bus: Callable[..., Bus],
    make_escalator: Callable[..., Escalator],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    bus = make_bus(
        ["FR", "TH"],
        record_within_s=2.0,
        answer_within_s=3600.0,
        webhook_url=f"{receiver.url}/hook",
        reminder_interval_s=3600.0,
    )
    bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db")
    ids = ["2026/11", "2026/12", "2026/13"]
    bus.hq.publish([draft(i) for i in ids])
    bus.pump(
        lambda: (
            len(rows(bus, ACK, country="FR", status="RECORDED")) == 3
            and len(rows(bus, SENT, country="TH")) == 3
        )
    )
    # Three seconds on: past TH's 2 s deadline, without sleeping through it.
    escalator = make_escalator(
        bus.settings, bus.tracker.engine, clock=shifted(timedelta(seconds=3))
    )

    assert escalator.evaluate() == EscalationResult(opened=1, closed=0, reminders_sent=3)
    [incident] = rows(bus, INCIDENT)
    assert (incident.country, incident.kind, incident.open_sent) == ("TH", "NOT_RECORDED", True)
    assert incident.closed_at is None
    [opened] = receiver.accepted
    assert receiver.meta == [("/hook", "application/json")]
    assert {k: opened[k] for k in ("event", "incident_id", "country", "kind", "overdue")} == {
        "event": "open",
        "incident_id": incident.id,
        "country": "TH",
        "kind": "NOT_RECORDED",
        "overdue": 3,
    }
    assert sorted(opened["notices"]) == ids
    assert opened["oldest_overdue_s"] >= 3.0
    assert datetime.fromisoformat(opened["opened_at"]).utcoffset() == timedelta(0)

    assert escalator.evaluate() == NOTHING  # still overdue: no second open, no reminder yet
    assert len(receiver.accepted) == 1

    sent = reminders(bus.settings, "TH")
    assert sorted(key for key, _ in sent) == ids  # one each, and the second round sent none
    for key, r in sent:
        assert (r.country, r.notice_id, r.version, r.kind) == ("TH", key, 1, Overdue.NOT_RECORDED)
        assert r.text.startswith(f"Notice {key} v1 was not recorded within 2 s (deadline 20")
        assert r.deadline < r.at
    assert reminders(bus.settings, "FR") == []
    assert len(rows(bus, REMINDER_SENT, country="TH", kind="NOT_RECORDED")) == 3

    bus.adapter("TH", f"sqlite:///{tmp_path}/th.db")
    bus.pump(lambda: len(rows(bus, ACK, country="TH", status="RECORDED")) == 3)
    assert escalator.evaluate() == EscalationResult(opened=0, closed=1, reminders_sent=0)
    [incident] = rows(bus, INCIDENT)
    assert incident.closed_at is not None and incident.close_sent
    closed = receiver.accepted[-1]
    assert (closed["event"], closed["incident_id"], closed["country"]) == (
        "close",
        incident.id,
        "TH",
    )
    assert closed["kind"] == "NOT_RECORDED" and closed["opened_at"] == opened["opened_at"]
    assert closed["duration_s"] >= 0
    assert datetime.fromisoformat(closed["closed_at"]) >= datetime.fromisoformat(
        closed["opened_at"]
    )

    assert escalator.evaluate() == NOTHING
    assert [b["event"] for b in receiver.accepted] == ["open", "close"]
    assert len(reminders(bus.settings, "TH")) == 3


def test_failed_webhook_is_retried_and_each_event_delivered_once_in_order(
    make_bus: Callable[..., Bus], make_escalator: Callable[..., Escalator], receiver: Receiver
) -> None:
    bus = make_bus(["TH"], record_within_s=2.0, webhook_url=f"{receiver.url}/hook")
    bus.hq.publish([draft("2026/21")])
    bus.pump(lambda: len(rows(bus, SENT, country="TH")) == 1)
    later = shifted(timedelta(seconds=3))
    escalator = make_escalator(bus.settings, bus.tracker.engine, clock=later)

    receiver.fail_next(1)
    assert escalator.evaluate().opened == 1
    [incident] = rows(bus, INCIDENT)
    assert receiver.refused == 1 and receiver.accepted == []
    assert not incident.open_sent  # recorded, but not announced yet

    assert escalator.evaluate() == NOTHING
    assert [b["event"] for b in receiver.accepted] == ["open"]
    assert rows(bus, INCIDENT)[0].open_sent
    assert escalator.evaluate() == NOTHING
    assert len(receiver.accepted) == 1  # never a second open

    play_recorded(bus, "TH", "2026/21")
    receiver.fail_next(1)
    assert escalator.evaluate().closed == 1
    assert len(receiver.accepted) == 1 and not rows(bus, INCIDENT)[0].close_sent
    escalator.evaluate()
    assert [b["event"] for b in receiver.accepted] == ["open", "close"]
    assert rows(bus, INCIDENT)[0].close_sent

    # An incident opened while no webhook is configured is recorded, and posted by nobody.
    bus.hq.publish([draft("2026/22")])
    bus.pump(lambda: len(rows(bus, SENT, country="TH")) == 2)
    calls: list[dict[str, Any]] = []
    quiet = make_escalator(
        bus.settings.with_(webhook_url=""),
        bus.tracker.engine,
        clock=later,
        post=lambda _url, body: calls.append(body),
    )
    assert quiet.evaluate() == EscalationResult(opened=1, closed=0, reminders_sent=1)
    assert calls == [] and len(receiver.accepted) == 2
    second = rows(bus, INCIDENT)[1]
    assert not second.open_sent

    # It closes before its open got out: the close waits for the open.
    play_recorded(bus, "TH", "2026/22")
    receiver.fail_next(1)
    assert escalator.evaluate().closed == 1
    assert receiver.refused == 3 and len(receiver.accepted) == 2
    escalator.evaluate()
    late = [(b["event"], b["incident_id"]) for b in receiver.accepted[2:]]
    assert late == [("open", second.id), ("close", second.id)]
    assert escalator.evaluate() == NOTHING
    assert len(receiver.accepted) == 4


def test_unanswered_notices_are_escalated_until_the_bureau_answers(
    make_bus: Callable[..., Bus],
    make_escalator: Callable[..., Escalator],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    bus = make_bus(
        ["FR"],
        answer_within_s=3600.0,
        webhook_url=f"{receiver.url}/hook",
        reminder_interval_s=3600.0,
    )
    bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db")
    bus.hq.publish([draft("2026/31"), draft("2026/32"), draft("2026/33")])
    bus.hq.cancel("2026/33")  # a cancelled notice needs no answer
    bus.pump(lambda: len(rows(bus, ACK, country="FR", status="RECORDED")) == 4)
    now = [utcnow() + timedelta(hours=2)]
    escalator = make_escalator(bus.settings, bus.tracker.engine, clock=lambda: now[0])

    assert escalator.evaluate() == EscalationResult(opened=1, closed=0, reminders_sent=2)
    [incident] = rows(bus, INCIDENT)
    assert (incident.country, incident.kind) == ("FR", "NOT_ANSWERED")  # recorded in time
    [opened] = receiver.accepted
    assert (opened["event"], opened["kind"], opened["overdue"]) == ("open", "NOT_ANSWERED", 2)
    assert sorted(opened["notices"]) == ["2026/31", "2026/32"]
    sent = reminders(bus.settings, "FR")
    assert sorted(r.notice_id for _, r in sent) == ["2026/31", "2026/32"]
    assert {r.kind for _, r in sent} == {Overdue.NOT_ANSWERED}
    assert all(" v1 was not answered within 1 h (deadline " in r.text for _, r in sent)

    answer(bus.settings, "FR", "2026/31")
    bus.pump(lambda: len(rows(bus, RESPONSE, country="FR")) == 1)
    assert escalator.evaluate() == NOTHING  # 2026/32 is still unanswered

    now[0] += timedelta(seconds=3601)  # the reminder interval has passed
    assert escalator.evaluate() == EscalationResult(opened=0, closed=0, reminders_sent=1)
    assert [r.notice_id for _, r in reminders(bus.settings, "FR")[2:]] == ["2026/32"]

    answer(bus.settings, "FR", "2026/32")
    bus.pump(lambda: len(rows(bus, RESPONSE, country="FR")) == 2)
    assert escalator.evaluate() == EscalationResult(opened=0, closed=1, reminders_sent=0)
    assert [(b["event"], b["incident_id"]) for b in receiver.accepted] == [
        ("open", incident.id),
        ("close", incident.id),
    ]
    assert escalator.evaluate() == NOTHING
    assert len(receiver.accepted) == 2


def test_default_post_fails_retriably_and_a_bad_url_is_refused(receiver: Receiver) -> None:
    receiver.fail_next(1)
    with pytest.raises(TransientError, match="HTTP 500"):
        post_json(f"{receiver.url}/hook", {"event": "open"})
    post_json(f"{receiver.url}/hook", {"event": "open"})
    assert receiver.accepted == [{"event": "open"}]
    with pytest.raises(TransientError, match="unreachable"):
        post_json(f"http://127.0.0.1:{free_port()}/hook", {"event": "open"})
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigError, match="http"):
        Escalator(Settings(webhook_url="hooks.example.org/x"), engine)
