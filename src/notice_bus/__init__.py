"""notice-bus: red notices from HQ to every member country's police systems over Apache Kafka.

The public surface is re-exported here; everything else is internal and may change.
"""

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.errors import (
    AlreadyCancelled,
    BrokerSetupError,
    BrokerUnavailable,
    ConfigError,
    HQStateError,
    InvalidMessage,
    InvalidNotice,
    LocalSystemRejected,
    LocalSystemUnavailable,
    NoticeBusError,
    OutputError,
    SchemaError,
    TransientError,
    WriteConflict,
)
from notice_bus.hq.publisher import HQ, read_drafts
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.wire.codec import AvroCodec, MemorySchemaStore, SchemaStore
from notice_bus.wire.model import Ack, AckStatus, Action, ArrestWarrant, NoticeEvent, Person
from notice_bus.wire.topics import init_topics, registered_countries
from notice_bus.wire.validation import Draft, parse_draft

__all__ = [
    "HQ",
    "Ack",
    "AckStatus",
    "Action",
    "Adapter",
    "AlreadyCancelled",
    "ArrestWarrant",
    "AvroCodec",
    "BrokerSetupError",
    "BrokerUnavailable",
    "ConfigError",
    "CountryReport",
    "Draft",
    "HQStateError",
    "InvalidMessage",
    "InvalidNotice",
    "LocalSystemRejected",
    "LocalSystemUnavailable",
    "MemorySchemaStore",
    "NoticeBusError",
    "NoticeEvent",
    "OutputError",
    "Person",
    "SchemaError",
    "SchemaStore",
    "Settings",
    "Sink",
    "SqlSink",
    "Status",
    "Tracker",
    "TransientError",
    "WriteConflict",
    "build_report",
    "init_topics",
    "parse_draft",
    "read_drafts",
    "registered_countries",
]
