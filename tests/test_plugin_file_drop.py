"""The file-drop plug-in: directly, behind the version ledger, and on a real Kafka broker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.local_system import LedgerSink, load_system
from notice_bus.errors import ConfigError, LocalSystemUnavailable
from notice_bus.tracker.tables import ACK
from notice_bus.wire.model import Action
from notice_bus_file_drop import FileDrop
from tests.conftest import Bus
from tests.factories import PERSON, draft, event


def files(inbox: Path) -> dict[str, bytes]:
    """Every file in the inbox, hidden temp files included, by name."""
    return {p.name: p.read_bytes() for p in sorted(inbox.iterdir())}


def load(inbox: Path, name: str) -> Any:
    return json.loads((inbox / name).read_bytes().decode("utf-8"))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def ledger(inbox: Path, tmp_path: Path) -> LedgerSink:
    return LedgerSink(FileDrop(inbox=str(inbox)), ledger_url=f"sqlite:///{tmp_path}/ledger.db")


# --- the plug-in on its own ---------------------------------------------------------------


def test_write_drops_one_complete_file_per_version(inbox: Path) -> None:
    drop = FileDrop(inbox=str(inbox))
    drop.write([event("2026/1"), event("2026/2", 3, Action.UPDATE, target_countries=("FR",))])

    assert sorted(files(inbox)) == ["2026-1.v1.notice.json", "2026-2.v3.notice.json"]
    body = load(inbox, "2026-2.v3.notice.json")
    assert body == {
        **PERSON.to_avro(),
        "notice_id": "2026/2",
        "version": 3,
        "status": "ACTIVE",
        "requesting_country": "RU",
        "published_at": "2026-11-23T08:00:00+00:00",
        "target_countries": ["FR"],
    }
    assert body["arrest_warrants"] == [
        {"issuing_country_id": "RU", "charge": "Мошенничество", "charge_translation": "Fraud"}
    ]


def test_withdraw_drops_a_withdrawal_file(inbox: Path) -> None:
    FileDrop(inbox=str(inbox)).withdraw([event("2026/1", 2, Action.CANCEL, reason="arrested")])
    assert list(files(inbox)) == ["2026-1.v2.withdrawal.json"]
    assert load(inbox, "2026-1.v2.withdrawal.json") == {
        "notice_id": "2026/1",
        "version": 2,
        "reason": "arrested",
        "published_at": "2026-11-23T08:00:00+00:00",
    }


def test_unicode_names_are_written_as_utf8_not_escaped(inbox: Path) -> None:
    names = {"2026/1": "Иванов", "2026/2": "สมชาย", "2026/3": "عبد الله", "2026/4": "王小明"}
    FileDrop(inbox=str(inbox)).write(
        [event(i, person=replace(PERSON, name=n)) for i, n in names.items()]
    )
    for notice_id, name in names.items():
        raw = (inbox / f"{notice_id.replace('/', '-')}.v1.notice.json").read_bytes()
        assert name.encode("utf-8") in raw  # verbatim, not \\u escapes
        assert b"\\u" not in raw
        assert json.loads(raw)["name"] == name


def test_replay_leaves_identical_files_and_no_temp_files(inbox: Path) -> None:
    drop = FileDrop(inbox=str(inbox))
    batch = [event("2026/1"), event("2026/2", 2, Action.UPDATE)]
    drop.write(batch)
    drop.withdraw([event("2026/3", 4, Action.CANCEL, reason="dead")])
    first = files(inbox)
    assert len(first) == 3 and not any(n.startswith(".") for n in first)

    drop.write(batch)
    drop.withdraw([event("2026/3", 4, Action.CANCEL, reason="dead")])
    assert files(inbox) == first


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_are_not_world_readable_by_default(inbox: Path) -> None:
    old = os.umask(0)  # the mode is ours, not the umask's
    try:
        drop = FileDrop(inbox=str(inbox))
        drop.write([event("2026/1")])
        drop.withdraw([event("2026/2", 2, Action.CANCEL)])
    finally:
        os.umask(old)
    assert {name: mode(inbox / name) for name in files(inbox)} == {
        "2026-1.v1.notice.json": 0o640,
        "2026-2.v2.withdrawal.json": 0o640,
    }


@pytest.mark.parametrize(("option", "expected"), [("0644", 0o644), ("600", 0o600), (0o660, 0o660)])
def test_file_mode_option(inbox: Path, option: str | int, expected: int) -> None:
    FileDrop(inbox=str(inbox), file_mode=option).write([event("2026/1")])
    assert mode(inbox / "2026-1.v1.notice.json") == expected


@pytest.mark.parametrize("option", ["rw-r-----", "0999", "01777", -1, True])
def test_a_bad_file_mode_is_a_config_error(inbox: Path, option: str | int) -> None:
    with pytest.raises(ConfigError, match="file_mode"):
        FileDrop(inbox=str(inbox), file_mode=option)


def test_missing_or_wrong_inbox_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        FileDrop(inbox=str(tmp_path / "nowhere"))
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        FileDrop(inbox=str(tmp_path / "plain"))
    with pytest.raises(ConfigError, match="format"):
        FileDrop(inbox=str(tmp_path), format="xml")


def test_loaded_by_its_entry_point_name(inbox: Path) -> None:
    system = load_system("file-drop", {"inbox": str(inbox)})
    assert isinstance(system, FileDrop) and system.inbox == inbox
    with pytest.raises(ConfigError, match="does not accept"):
        load_system("file-drop", {"inbox": str(inbox), "folder": "x"})


@pytest.mark.parametrize("how", ["removed", "replaced by a file"])
def test_inbox_failing_after_start_is_unavailable_and_unhealthy(inbox: Path, how: str) -> None:
    drop = FileDrop(inbox=str(inbox))
    assert drop.health().ok
    # Tests run as root, where chmod does not stop writes: take the folder away instead.
    inbox.rmdir()
    if how == "replaced by a file":
        inbox.write_text("not a folder")

    with pytest.raises(LocalSystemUnavailable, match=str(inbox)) as info:
        drop.write([event("2026/1")])
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.retriable
    with pytest.raises(LocalSystemUnavailable, match=str(inbox)):
        drop.withdraw([event("2026/1", 2, Action.CANCEL)])
    health = drop.health()
    assert not health.ok and str(inbox) in health.detail

    # The mount comes back: so does the plug-in.
    if inbox.is_file():
        inbox.unlink()
    inbox.mkdir()
    assert drop.health().ok
    drop.write([event("2026/1")])
    assert list(files(inbox)) == ["2026-1.v1.notice.json"]


def test_the_batch_system_never_sees_a_half_written_file(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, bytes]] = []
    real_write = os.write

    def spying_write(fd: int, data: Any) -> int:
        seen.append(files(inbox))  # what a batch job listing the folder would see right now
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spying_write)
    FileDrop(inbox=str(inbox)).write([event("2026/1"), event("2026/2")])
    monkeypatch.undo()

    assert seen
    for listing in seen:
        for name, data in listing.items():
            if name.startswith("."):
                assert name.endswith(".tmp")  # a name the batch system ignores
            else:
                assert json.loads(data)["notice_id"]  # complete, never a prefix
    assert sorted(files(inbox)) == ["2026-1.v1.notice.json", "2026-2.v1.notice.json"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_leaves_no_partial_file_and_no_temp_file(
    inbox: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    drop = FileDrop(inbox=str(inbox))
    drop.write([event("2026/1")])
    before = files(inbox)

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(LocalSystemUnavailable, match="No space left"):
        drop.write([event("2026/1", 2, Action.UPDATE), event("2026/2")])
    assert files(inbox) == before  # neither a v2 file nor a temp file

    monkeypatch.undo()
    drop.write([event("2026/1", 2, Action.UPDATE), event("2026/2")])
    assert sorted(files(inbox)) == [
        "2026-1.v1.notice.json",
        "2026-1.v2.notice.json",
        "2026-2.v1.notice.json",
    ]


# --- behind the version ledger -------------------------------------------------------------


def test_an_older_version_after_a_newer_one_is_never_dropped(inbox: Path, tmp_path: Path) -> None:
    sink = ledger(inbox, tmp_path)
    sink.add(event("2026/5", 2, Action.UPDATE), 0)
    sink.flush()
    sink.add(event("2026/5", 1), 0)
    sink.flush()
    sink.close()
    assert list(files(inbox)) == ["2026-5.v2.notice.json"]


def test_after_a_cancel_a_stale_update_is_never_dropped(inbox: Path, tmp_path: Path) -> None:
    sink = ledger(inbox, tmp_path)
    sink.add(event("2026/5"), 0)
    sink.add(event("2026/6", 4, Action.CANCEL), 1)  # a cancel for a notice never seen
    sink.flush()
    sink.add(event("2026/5", 3, Action.CANCEL), 0)
    sink.flush()
    sink.add(event("2026/5", 2, Action.UPDATE), 0)
    sink.add(event("2026/6", 3, Action.UPDATE), 1)
    sink.flush()
    sink.close()
    assert sorted(files(inbox)) == [
        "2026-5.v1.notice.json",
        "2026-5.v3.withdrawal.json",
        "2026-6.v4.withdrawal.json",
    ]


def test_a_failed_flush_is_not_recorded_and_is_dropped_on_retry(
    inbox: Path, tmp_path: Path
) -> None:
    sink = ledger(inbox, tmp_path)
    sink.add(event("2026/7"), 0)
    inbox.rename(tmp_path / "unmounted")
    with pytest.raises(LocalSystemUnavailable):
        sink.flush()
    assert not sink.health().ok
    (tmp_path / "unmounted").rename(inbox)
    sink.flush()  # the adapter's retry: the buffer is still there, the ledger did not move on
    sink.close()
    assert list(files(inbox)) == ["2026-7.v1.notice.json"]


# --- end to end on a real Kafka broker -----------------------------------------------------


def recorded(bus: Bus, count: int) -> Callable[[], bool]:
    def done() -> bool:
        with bus.tracker.engine.connect() as conn:
            query = sa.select(ACK).where(ACK.c.country == "FR", ACK.c.status == "RECORDED")
            return len(conn.execute(query).all()) >= count

    return done


@pytest.mark.kafka
def test_end_to_end_into_a_drop_folder(
    make_bus: Callable[..., Bus], inbox: Path, tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    adapter = Adapter(bus.settings, {"FR": ledger(inbox, tmp_path)})
    bus.adapters["FR"] = adapter
    try:
        bus.hq.publish([draft("2026/1"), draft("2026/2", name="สมชาย"), draft("2026/3")])
        bus.pump(recorded(bus, 3))
        bus.hq.publish([draft("2026/2", name="สมชาย", weight=81.5)])
        bus.hq.cancel("2026/3", "arrested in Bangkok")
        bus.pump(recorded(bus, 5))
    finally:
        adapter.close()
        del bus.adapters["FR"]

    assert sorted(files(inbox)) == [
        "2026-1.v1.notice.json",
        "2026-2.v1.notice.json",
        "2026-2.v2.notice.json",
        "2026-3.v1.notice.json",
        "2026-3.v2.withdrawal.json",
    ]
    first, update = load(inbox, "2026-2.v1.notice.json"), load(inbox, "2026-2.v2.notice.json")
    assert (first["name"], first["weight"], first["status"]) == ("สมชาย", None, "ACTIVE")
    assert (update["version"], update["weight"], update["requesting_country"]) == (2, 81.5, "RU")
    assert load(inbox, "2026-1.v1.notice.json")["forename"] == "Алексей"
    withdrawal = load(inbox, "2026-3.v2.withdrawal.json")
    assert (withdrawal["version"], withdrawal["reason"]) == (2, "arrested in Bangkok")


@pytest.mark.kafka
def test_unknown_lists_reach_the_file_as_null_over_kafka(
    make_bus: Callable[..., Bus], inbox: Path, tmp_path: Path
) -> None:
    """HQ's draft with unknown (null) lists, through HQ's database, the wire and the adapter:
    the file holds null for them, and [] for a list known to be empty."""
    bus = make_bus(["FR"])
    adapter = Adapter(bus.settings, {"FR": ledger(inbox, tmp_path)})
    bus.adapters["FR"] = adapter
    try:
        bus.hq.publish(
            [
                draft(
                    "2026/7",
                    ("FR",),
                    nationalities=None,
                    eyes_colors_id=None,
                    hairs_id=(),
                    images=None,
                )
            ]
        )
        bus.pump(recorded(bus, 1))
    finally:
        adapter.close()
        del bus.adapters["FR"]
    body = load(inbox, "2026-7.v1.notice.json")
    assert (body["nationalities"], body["eyes_colors_id"], body["images"]) == (None, None, None)
    assert (body["hairs_id"], body["languages_spoken_ids"]) == ([], [])


def test_entries_list_the_newest_file_of_each_notice(inbox: Path, tmp_path: Path) -> None:
    from notice_bus.wire.digest import Entry, content_hash

    drop = FileDrop(inbox=str(inbox))
    drop.write([event("2026/1", 1), event("2026/2", 1)])
    drop.write([event("2026/1", 2, Action.UPDATE, person=replace(PERSON, weight=80.5))])
    drop.withdraw([event("2026/2", 2, Action.CANCEL, reason="arrested")])
    (inbox / ".2026-3.v1.notice.json.ab12.tmp").write_text("{")  # half written: not listed
    listed = sorted(drop.entries() or ())
    person = replace(PERSON, weight=80.5).to_avro()
    assert listed == [
        Entry("2026/1", 2, "ACTIVE", content_hash("RU", person)),
        Entry("2026/2", 2, "WITHDRAWN", ""),
    ]
    assert ledger(inbox, tmp_path).entries() is not None
    assert FileDrop(inbox=str(inbox), listable=False).entries() is None
