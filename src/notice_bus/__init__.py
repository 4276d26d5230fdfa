"""notice-bus: red notices from HQ to every member country's police systems over Apache Kafka.

The public surface is re-exported here; everything else is internal and may change.
"""

from notice_bus.adapter import Adapter
from notice_bus.codec import AvroCodec, MemorySchemaStore, SchemaStore
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
from notice_bus.hq import HQ, read_drafts
from notice_bus.model import Ack, AckStatus, Action, ArrestWarrant, NoticeEvent, Person
from notice_bus.report import CountryReport, Status, build_report
from notice_bus.settings import Settings
from notice_bus.sink import Sink
from notice_bus.sql_sink import SqlSink
from notice_bus.topics import init_topics, registered_countries
from notice_bus.tracker import Tracker
from notice_bus.validation import Draft, parse_draft

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
