"""The wire format: single-object encoding and schema evolution both ways."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from notice_bus.errors import SchemaError
from notice_bus.wire.codec import (
    MAGIC,
    AvroCodec,
    MemorySchemaStore,
    load_schema,
    projection,
    schema_fingerprint,
)
from notice_bus.wire.model import Ack, AckStatus, NoticeEvent
from tests.factories import PERSON, event

V2 = json.loads((Path(__file__).parent / "schemas" / "notice_event_v2.avsc").read_text())
#: The schema before unknown lists: every list an array, "unknown" sent as [].
V1 = json.loads((Path(__file__).parent / "schemas" / "notice_event_v1.avsc").read_text())
#: Unknown eyes, hair, nationalities and images (None); known to have no language (()).
UNKNOWNS = replace(
    PERSON,
    nationalities=None,
    eyes_colors_id=None,
    hairs_id=None,
    languages_spoken_ids=(),
    images=None,
)


def test_event_round_trip_keeps_every_field() -> None:
    codec = AvroCodec(load_schema("notice_event"))
    original = event(target_countries=("FR", "TH"))
    assert NoticeEvent.from_avro(codec.decode(codec.encode(original.to_avro()))) == original


def test_message_starts_with_single_object_header_and_fingerprint() -> None:
    schema = load_schema("ack")
    codec = AvroCodec(schema)
    ack = Ack("FR", "2026/1", 1, AckStatus.RECORDED, event().published_at, "FR@test")
    data = codec.encode(ack.to_avro())
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(schema)


def test_an_ack_for_several_events_round_trips() -> None:
    codec = AvroCodec(load_schema("ack"))
    at = event().published_at
    ack = Ack(
        "FR", "2026/1", 1, AckStatus.RECORDED, at, "FR@test",
        received_at=at, also=(("2026/2", 3), ("2026/3", 1)),
    )  # fmt: skip
    back = Ack.from_avro(codec.decode(codec.encode(ack.to_avro())))
    assert back == ack
    assert back.events() == [("2026/1", 1), ("2026/2", 3), ("2026/3", 1)]


def test_fingerprint_matches_avro_spec_for_a_primitive() -> None:
    # The Avro spec's CRC-64-AVRO of "int" is 0x7275d51a3f395c8f, little-endian on the wire.
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")  # type: ignore[arg-type]


def test_v1_reader_reads_v2_message_ignoring_the_new_field() -> None:
    store = MemorySchemaStore()
    writer = AvroCodec(V2, store)
    reader = AvroCodec(load_schema("notice_event"), store)
    original = event()
    decoded = reader.decode(writer.encode({**original.to_avro(), "priority": "urgent"}))
    assert "priority" not in decoded
    assert NoticeEvent.from_avro(decoded) == original


def test_v2_reader_reads_v1_message_with_the_default() -> None:
    store = MemorySchemaStore()
    writer = AvroCodec(load_schema("notice_event"), store)
    reader = AvroCodec(V2, store)
    decoded = reader.decode(writer.encode(event().to_avro()))
    assert decoded["priority"] is None
    assert decoded["notice_id"] == "2026/100"


def test_unknown_writer_schema_is_a_schema_error() -> None:
    data = AvroCodec(V2, MemorySchemaStore()).encode({**event().to_avro(), "priority": None})
    reader = AvroCodec(load_schema("notice_event"), MemorySchemaStore())
    with pytest.raises(SchemaError, match="unknown writer schema"):
        reader.decode(data)


@pytest.mark.parametrize("data", [b"", b"{json}", b"\xc3\x01short", MAGIC + b"\x00" * 8 + b"\xff"])
def test_garbage_is_a_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError):
        AvroCodec(load_schema("notice_event")).decode(data)


def test_record_that_does_not_fit_is_refused_on_encode() -> None:
    with pytest.raises(SchemaError, match="does not fit"):
        AvroCodec(load_schema("ack")).encode({"country": "FR"})


def test_a_projection_reads_only_its_fields_and_is_never_published() -> None:
    store = MemorySchemaStore()
    full = AvroCodec(load_schema("notice_event"), store)
    known = len(store._by_fp)
    fields = ("notice_id", "version", "action")
    reader = AvroCodec(projection(load_schema("notice_event"), fields), store, reader_only=True)
    assert len(store._by_fp) == known  # a reader-only schema does not enter the store
    e = event()
    assert reader.decode(full.encode(e.to_avro())) == {
        "notice_id": e.notice_id,
        "version": e.version,
        "action": e.action.value,
    }
    with pytest.raises(SchemaError, match="reader-only"):
        reader.encode({"notice_id": "x", "version": 1, "action": "PUBLISH"})


def test_unknown_lists_round_trip_apart_from_empty_ones() -> None:
    codec = AvroCodec(load_schema("notice_event"))
    original = event(person=UNKNOWNS)
    back = NoticeEvent.from_avro(codec.decode(codec.encode(original.to_avro())))
    assert back == original
    assert back.person is not None
    assert back.person.eyes_colors_id is None and back.person.languages_spoken_ids == ()


def test_a_reader_on_the_schema_before_unknown_lists_reads_them_as_empty() -> None:
    store = MemorySchemaStore()
    writer = AvroCodec(load_schema("notice_event"), store)
    reader = AvroCodec(V1, store)
    decoded = reader.decode(writer.encode(event(person=UNKNOWNS).to_avro()))
    assert "unknown_lists" not in decoded["person"]
    old = NoticeEvent.from_avro(decoded)
    assert old.person == replace(
        UNKNOWNS, nationalities=(), eyes_colors_id=(), hairs_id=(), images=()
    )


def test_a_message_of_the_schema_before_unknown_lists_has_every_list_known() -> None:
    store = MemorySchemaStore()
    writer = AvroCodec(V1, store)
    reader = AvroCodec(load_schema("notice_event"), store)
    original = event(person=replace(PERSON, eyes_colors_id=("BRO",)))
    decoded = reader.decode(writer.encode(original.to_avro()))
    assert decoded["person"]["unknown_lists"] == []
    assert NoticeEvent.from_avro(decoded) == original
