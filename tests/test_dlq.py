"""``notice-bus dlq list|replay``: parked records brought back once the cause is fixed, on the
real broker, into real SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.cli import main
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft, event
from tests.support.tcp_proxy import TcpProxy
from tests.test_end_to_end import local_rows, tracked

pytestmark = pytest.mark.kafka
REFUSED = "Refused"  # the name the local database refuses, until its constraint is dropped


def refuse_a_name(url: str) -> Callable[[], None]:
    """Make ``url``'s red_notice refuse the name REFUSED for good; returns the fix."""
    SqlSink(url).close()  # creates the table
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":  # SQLite cannot add a constraint to a table
        refuse = (
            "CREATE TRIGGER nb_refuse BEFORE INSERT ON red_notice"
            f" WHEN NEW.name = '{REFUSED}' BEGIN SELECT RAISE(ABORT, 'name refused'); END"
        )
        fix = "DROP TRIGGER nb_refuse"
    else:
        refuse = (
            "ALTER TABLE red_notice ADD CONSTRAINT nb_refuse"
            f" CHECK (name IS DISTINCT FROM '{REFUSED}')"
        )
        fix = "ALTER TABLE red_notice DROP CONSTRAINT nb_refuse"
    with engine.begin() as conn:
        conn.execute(sa.text(refuse))
    engine.dispose()

    def lift() -> None:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(fix))
        engine.dispose()

    return lift


def acked(bus: Bus, status: str) -> list[Any]:
    return tracked(bus, ACK, country="FR", status=status)


def listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["dlq", "list", "--country", "FR", "--format", "json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def park_by_hand(settings: Settings, records: list[tuple[str, bytes, str, int]]) -> None:
    """Park (key, value, source topic kind, source offset) records in dlq.FR as an adapter
    would."""
    names = TopicNames(settings.topic_prefix)
    producer = KafkaProducer(**kafka_config(settings, "test"))
    for key, value, kind, offset in records:
        headers = [
            ("reason", b"parked by hand"),
            ("source.topic", f"{settings.topic_prefix}{kind}.FR".encode()),
            ("source.partition", b"0"),
            ("source.offset", str(offset).encode()),
            ("adapter", b"test"),
        ]
        producer.send(names.dead_letters("FR"), key=key.encode(), value=value, headers=headers)
    producer.flush()
    producer.close()


def avro(settings: Settings, notice_id: str) -> bytes:
    codec = AvroCodec(load_schema("notice_event"), KafkaSchemaStore(settings))
    return codec.encode(event(notice_id).to_avro())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_refused_notice_is_listed_then_replayed_once_the_cause_is_fixed(
    kind: str,
    cli_env: Settings,
    make_bus: Callable[..., Bus],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kind == "postgresql":
        url: str = request.getfixturevalue("new_postgres_db")()
    else:
        url = f"sqlite:///{tmp_path}/fr.db"
    lift = refuse_a_name(url)
    bus = make_bus(["FR"])
    bus.adapter("FR", url)
    bus.hq.publish([draft("2026/1"), draft("2026/2", name=REFUSED), draft("2026/3")])
    bus.pump(lambda: len(acked(bus, "REJECTED")) >= 1 and len(acked(bus, "RECORDED")) >= 2)
    assert sorted(local_rows(url)) == ["2026/1", "2026/3"]

    assert main(["dlq", "list", "--country", "FR"]) == 0
    [head, line] = capsys.readouterr().out.splitlines()
    assert head.split()[:3] == ["OFFSET", "PARKED", "AT"]
    assert "2026/2" in line and "waiting" in line and "refused" in line
    [parked] = listed(capsys)
    assert (parked["key"], parked["replayed"], parked["state"]) == ("2026/2", False, "waiting")
    assert parked["source_topic"] == TopicNames(cli_env.topic_prefix).notices("FR")
    assert "local system refused it" in parked["reason"]

    lift()
    assert main(["dlq", "replay", "--country", "FR", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "recorded 1, parked again 0" in out and out.startswith("replayed 1 from")
    row = local_rows(url)["2026/2"]
    assert (row.name, row.status, row.version) == (REFUSED, "ACTIVE", 1)
    bus.pump(lambda: "2026/2" in {a.notice_id for a in acked(bus, "RECORDED")})
    [parked] = listed(capsys)
    assert (parked["replayed"], parked["state"]) == (True, "replayed")

    assert main(["dlq", "replay", "--country", "FR", "--database-url", url]) == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert len(listed(capsys)) == 1  # nothing parked again


def test_garbage_is_parked_again_at_the_end_and_foreign_records_stay(
    cli_env: Settings,
    make_bus: Callable[..., Bus],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = make_bus(["FR"])
    url = f"sqlite:///{tmp_path}/fr.db"
    park_by_hand(
        cli_env,
        [
            ("2026/9", b"\x00not avro at all", "notices", 41),
            ("2026/8", avro(cli_env, "2026/8"), "reminders", 3),  # not a notice: left parked
            ("2026/10", avro(cli_env, "2026/10"), "notices", 42),
        ],
    )
    assert main(["dlq", "replay", "--country", "FR", "--database-url", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": recorded 1, parked again 1, skipped 1"), out
    assert out[0].startswith("replayed 2 from")
    assert "2026/9" in out[1] and "notices.FR[0]@41" in out[1]
    assert "not an Avro single-object message" in out[1]
    assert "2026/8" in out[2] and "left parked" in out[2]
    assert list(local_rows(url)) == ["2026/10"]

    rows = listed(capsys)
    assert [(r["key"], r["state"]) for r in rows] == [
        ("2026/9", "replayed"),
        ("2026/8", "skipped"),
        ("2026/10", "replayed"),
        ("2026/9", "waiting"),  # moved to the end, with why, under its original position
    ]
    assert (rows[3]["source_offset"], rows[3]["source_partition"]) == (41, 0)
    assert "not an Avro single-object message" in rows[3]["reason"]
    # HQ hears of both under their original positions: one RECORDED, one REJECTED.
    bus.pump(lambda: len(acked(bus, "RECORDED")) == 1 and len(acked(bus, "REJECTED")) == 1)
    assert acked(bus, "REJECTED")[0].position == "0:41"

    # The next replay takes only what was parked since: the garbage, parked again once more.
    assert main(["dlq", "replay", "--country", "FR", "--database-url", url]) == 0
    assert capsys.readouterr().out.startswith("replayed 1 from")
    assert len(listed(capsys)) == 5


def test_empty_topic_and_unknown_country(
    cli_env: Settings,
    make_bus: Callable[..., Bus],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_bus(["FR"])
    assert main(["dlq", "list", "--country", "FR"]) == 0
    assert "is empty" in capsys.readouterr().out
    assert listed(capsys) == []
    url = f"sqlite:///{tmp_path}/fr.db"
    assert main(["dlq", "replay", "--country", "FR", "--database-url", url]) == 0
    assert "nothing to replay" in capsys.readouterr().out

    assert main(["dlq", "list", "--country", "ZZ"]) == 78  # EX_CONFIG
    assert "dlq.ZZ does not exist" in capsys.readouterr().err
    assert main(["dlq", "replay", "--country", "ZZ", "--database-url", url]) == 78
    assert "dlq.ZZ does not exist" in capsys.readouterr().err


def test_replay_while_the_local_system_is_away_commits_nothing(
    cli_env: Settings,
    make_bus: Callable[..., Bus],
    new_postgres_db: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_bus(["FR"])
    park_by_hand(cli_env, [("2026/11", avro(cli_env, "2026/11"), "notices", 7)])
    url = sa.make_url(new_postgres_db())
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        proxy.cut()
        assert main(["dlq", "replay", "--country", "FR", "--database-url", proxied]) == 69
        assert "unavailable" in capsys.readouterr().err
        assert [r["state"] for r in listed(capsys)] == ["waiting"]

        proxy.restore()
        assert main(["dlq", "replay", "--country", "FR", "--database-url", proxied]) == 0
        assert "recorded 1, parked again 0" in capsys.readouterr().out
        assert local_rows(proxied)["2026/11"].version == 1
    assert [r["state"] for r in listed(capsys)] == ["replayed"]
