"""The adapter around its plug-ins: refusals, configuration-chosen plug-ins, late joiners and
rebuilt local copies, on the real broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.local_system import LedgerSink
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK
from notice_bus.wire.topics import init_topics
from notice_bus_rest_api import RestApi
from tests.conftest import Bus, command_env
from tests.factories import draft
from tests.support.http_server import NationalApi
from tests.support.workload import local_state

pytestmark = pytest.mark.kafka


def acks(bus: Bus, status: str) -> list[Any]:
    with bus.tracker.engine.connect() as conn:
        return list(conn.execute(sa.select(ACK).where(ACK.c.status == status)).all())


class RefusingApi(NationalApi):
    """A national API that refuses one notice for good (say, a field its schema forbids)."""

    refused = "/notices/2026-13"

    def _serve_one(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, str]:
        if path == self.refused:
            return 422, '{"error": "distinguishing_marks too long for our schema"}'
        return super()._serve_one(method, path, auth, body)


def test_a_notice_the_local_system_refuses_is_dead_lettered_and_the_rest_recorded(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    with RefusingApi() as api:
        sink = LedgerSink(RestApi(base_url=api.url), f"sqlite:///{tmp_path}/ledger.db")
        adapter = Adapter(bus.settings, {"FR": sink})
        bus.adapters["FR"] = adapter
        bus._closers.append(adapter.close)
        bus.hq.publish([draft(f"2026/{n}") for n in range(10, 16)])  # one batch, 13 refused
        bus.pump(lambda: len(acks(bus, "RECORDED")) == 5 and len(acks(bus, "REJECTED")) == 1)
    assert sorted(api.notices) == [f"2026/{n}" for n in (10, 11, 12, 14, 15)]
    [rejected] = acks(bus, "REJECTED")
    assert rejected.notice_id == "2026/13"
    assert "local system refused it" in rejected.reason and "422" in rejected.reason


def test_plugin_chosen_by_configuration(settings: Settings, tmp_path: Path) -> None:
    init_topics(settings, ["ID"])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "file-drop.toml"
    config.write_text(f'inbox = "{inbox}"\n')
    env = command_env(settings)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "notice_bus.cli",
            "adapter",
            "--country",
            "ID",
            "--system",
            "file-drop",
            "--system-config",
            str(config),
            "--ledger-url",
            f"sqlite:///{tmp_path}/ledger.db",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        from notice_bus.hq.publisher import HQ

        with HQ(settings) as hq:
            hq.publish([draft("2026/21"), draft("2026/22")])
            hq.cancel("2026/22", "withdrawn")
        deadline = time.monotonic() + 60
        # 2026/22's v1 may never be dropped: read in one batch with its cancel, it is
        # superseded before the write.
        want = {"2026-21.v1.notice.json", "2026-22.v2.withdrawal.json"}
        while not want <= {p.name for p in inbox.iterdir()}:
            assert time.monotonic() < deadline, sorted(p.name for p in inbox.iterdir())
            time.sleep(0.3)
        assert {p.name for p in inbox.iterdir()} <= want | {"2026-22.v1.notice.json"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_a_country_that_joins_late_gets_every_active_notice(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    bus.hq.publish([draft(f"2026/{n}") for n in range(30, 50)])
    bus.hq.publish([draft("2026/31", weight=70.0)])
    for n in (32, 33, 34):
        bus.hq.cancel(f"2026/{n}", "arrested")
    bus.hq.publish([draft("2026/60", targets=("FR",))])  # not for the newcomer
    init_topics(bus.settings, ["NG"])
    assert bus.hq.bootstrap("NG") == 17
    url = f"sqlite:///{tmp_path}/ng.db"
    bus.adapter("NG", url)
    bus.pump(lambda: len(local_state(url)) == 17)
    state = local_state(url)
    assert all(status == "ACTIVE" for _, status in state.values())
    assert state["2026/31"] == (2, "ACTIVE") and "2026/32" not in state


def test_notices_published_before_any_country_joined_wait_for_its_bootstrap(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus([])
    bus.hq.publish([draft(f"2026/{n}") for n in range(90, 95)])
    assert bus.hq.pending() == 0  # nowhere to send them yet; kept at HQ
    init_topics(bus.settings, ["NG"])
    assert bus.hq.bootstrap("NG") == 5
    url = f"sqlite:///{tmp_path}/ng.db"
    bus.adapter("NG", url)
    bus.pump(lambda: len(local_state(url)) == 5)


def test_a_country_registered_while_hq_held_an_old_list_gets_the_broadcasts_it_missed(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR"], country_refresh_s=1.0)
    bus.hq.publish([draft("2026/100")])  # HQ now holds the list [FR] for a second
    init_topics(bus.settings, ["NG"])
    bus.hq.publish([draft("2026/101")])  # made with the old list: sent to FR only
    bus.hq.cancel("2026/100", "arrested")
    time.sleep(1.1)
    bus.hq.publish([draft("2026/102")])  # HQ looks again, finds NG and catches it up
    init_topics(bus.settings, ["SN"])
    bus.hq.publish([draft("2026/103")])
    bus.hq.close()  # closing looks once more: SN gets what went out since HQ's last look
    new = {"2026/101", "2026/102", "2026/103"}
    for cc, want in (("NG", new), ("SN", {"2026/102", "2026/103"})):
        url = f"sqlite:///{tmp_path}/{cc}.db"
        bus.adapter(cc, url)
        bus.pump(lambda url=url, want=want: active(url) == want)
    # NG was sent the cancel of 2026/100, never the notice: it is held as withdrawn.
    assert local_state(f"sqlite:///{tmp_path}/NG.db")["2026/100"] == (2, "WITHDRAWN")


def active(url: str) -> set[str]:
    return {n for n, (_, status) in local_state(url).items() if status == "ACTIVE"}


def test_a_bureau_rebuilds_its_local_copy_from_the_topic(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str]
) -> None:
    bus = make_bus(["FR"])
    first = new_postgres_db()
    bus.adapter("FR", first)
    bus.hq.publish([draft(f"2026/{n}") for n in range(70, 90)])
    bus.hq.publish([draft("2026/70", weight=99.0)])
    bus.hq.cancel("2026/71", "arrested")
    bus.pump(lambda: len(acks(bus, "RECORDED")) == 22)
    bus.adapters.pop("FR").close()
    # The database is lost; a new one is filled from the compacted topic, same group.
    rebuilt = new_postgres_db()
    adapter = Adapter(bus.settings, {"FR": SqlSink(rebuilt)}, from_beginning=True)
    bus.adapters["FR"] = adapter
    bus._closers.append(adapter.close)
    bus.pump(lambda: local_state(rebuilt) == local_state(first))
    assert local_state(rebuilt)["2026/70"] == (2, "ACTIVE")
    assert local_state(rebuilt)["2026/71"] == (2, "WITHDRAWN")


def test_an_adapter_for_a_country_without_topics_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    from notice_bus.errors import ConfigError

    init_topics(settings, [])
    with pytest.raises(ConfigError, match=r"notices\.ZZ does not exist.*topics init"):
        Adapter(settings, {"ZZ": SqlSink(f"sqlite:///{tmp_path}/zz.db")})


def test_local_answers_go_to_hq_and_reminders_reach_the_officers(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    from datetime import timedelta

    from kafka import KafkaProducer

    from notice_bus.bureau.sinks.tables import LOCAL_REMINDER, LOCAL_RESPONSE
    from notice_bus.reports.report import build_report
    from notice_bus.runtime.kafka import kafka_config
    from notice_bus.wire.codec import AvroCodec, load_schema
    from notice_bus.wire.model import Overdue, Reminder, utcnow
    from notice_bus.wire.schema_registry import KafkaSchemaStore
    from notice_bus.wire.topics import TopicNames

    bus = make_bus(["FR"])
    url = f"sqlite:///{tmp_path}/fr.db"
    bus.adapter("FR", url)
    bus.hq.publish([draft("2026/91"), draft("2026/92")])
    bus.pump(lambda: len(acks(bus, "RECORDED")) == 2)
    local = sa.create_engine(url)
    with local.begin() as conn:  # an officer answers in the bureau's own system
        conn.execute(sa.insert(LOCAL_RESPONSE).values(
            notice_id="2026/91", answer="LOCATED", text="seen in Lyon", responder="officer-7",
            answered_at=utcnow()))  # fmt: skip

    def answered() -> bool:
        return [r.answered for r in build_report(bus.tracker.engine, bus.settings)] == [1]

    bus.pump(answered)
    with local.connect() as conn:
        assert conn.execute(sa.select(LOCAL_RESPONSE.c.sent_at)).scalar() is not None

    now = utcnow()
    reminder = Reminder(
        "FR",
        "2026/92",
        1,
        Overdue.NOT_ANSWERED,
        now - timedelta(hours=1),
        now,
        "Notice 2026/92 v1 was not answered within 12 h",
    )
    codec = AvroCodec(load_schema("reminder"), KafkaSchemaStore(bus.settings))
    producer = KafkaProducer(**kafka_config(bus.settings, "test-hq"))
    producer.send(
        TopicNames(bus.settings.topic_prefix).reminders("FR"),
        key=b"2026/92",
        value=codec.encode(reminder.to_avro()),
    ).get(30)
    producer.close()

    def surfaced() -> list[str]:
        with local.connect() as conn:
            return [r.text for r in conn.execute(sa.select(LOCAL_REMINDER))]

    bus.pump(lambda: surfaced() == [reminder.text])
    local.dispose()
