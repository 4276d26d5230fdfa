"""Avro single-object encoding on fastavro.

Every message starts with ``C3 01`` and the 8-byte CRC-64-AVRO fingerprint of its writer schema,
so a reader knows which schema wrote it. The reader finds that schema in a :class:`SchemaStore`
and resolves it against its own, so readers on older and newer schemas read each other's
messages as long as the changes are compatible (added fields carry defaults).
"""

from __future__ import annotations

import io
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from notice_bus.errors import ConfigError, SchemaError

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

Schema = dict[str, Any]


def schema_fingerprint(schema: Schema) -> bytes:
    """The 8 bytes (little-endian CRC-64-AVRO) that identify ``schema`` on the wire."""
    canonical = to_parsing_canonical_form(parse_schema(schema))
    # fastavro renders the fingerprint's bytes in little-endian order already.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class SchemaStore(ABC):
    """Where a reader finds a writer's schema by its fingerprint.

    ``register`` makes a schema findable by every reader of the store before the first message
    written with it is sent; ``lookup`` returns ``None`` for a fingerprint nobody registered.
    Implementations are safe to call from several threads.
    """

    @abstractmethod
    def register(self, schema: Schema) -> bytes:
        """Make ``schema`` findable; returns its fingerprint."""

    @abstractmethod
    def lookup(self, fp: bytes) -> Schema | None:
        """The schema with fingerprint ``fp``, or ``None``."""


class MemorySchemaStore(SchemaStore):
    """Schemas known to this process only: the ones it ships and the ones it registers."""

    def __init__(self, schemas: Iterable[Schema] = ()) -> None:
        self._by_fp: dict[bytes, Schema] = {}
        self._lock = threading.Lock()
        for schema in schemas:
            self.register(schema)

    def register(self, schema: Schema) -> bytes:
        fp = schema_fingerprint(schema)
        with self._lock:
            self._by_fp.setdefault(fp, schema)
        return fp

    def lookup(self, fp: bytes) -> Schema | None:
        with self._lock:
            return self._by_fp.get(fp)


class AvroCodec:
    """Encodes records with one writer schema and decodes any schema the store knows.

    Schemas are parsed once, here; resolved reader/writer pairs are cached by fingerprint.
    """

    def __init__(
        self, schema: Schema, store: SchemaStore | None = None, *, reader_only: bool = False
    ) -> None:
        self.schema = schema
        self.name: str = schema["name"]
        self._parsed = parse_schema(schema)
        self._store = store if store is not None else MemorySchemaStore()
        # A reader-only schema (a projection) is never written, so it is not published.
        self._reader_only = reader_only
        self._fp = schema_fingerprint(schema) if reader_only else self._store.register(schema)
        self._header = MAGIC + self._fp
        self._writers: dict[bytes, Any] = {self._fp: self._parsed}

    @property
    def fingerprint(self) -> bytes:
        return self._fp

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._reader_only:
            raise SchemaError(f"{self.name}: a reader-only schema does not write messages")
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self._parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"record does not fit schema {self.name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Read a message written with any schema the store knows, as this codec's schema."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SchemaError("not an Avro single-object message (missing C3 01 header)")
        fp = data[2:HEADER_LEN]
        writer = self._writers.get(fp)
        if writer is None:
            found = self._store.lookup(fp)
            if found is None:
                raise SchemaError(f"unknown writer schema, fingerprint {fp.hex()}")
            try:
                writer = parse_schema(found)
            except Exception as exc:  # fastavro raises several unrelated types here
                raise SchemaError(f"writer schema {fp.hex()} does not parse: {exc}") from exc
            self._writers[fp] = writer
        try:
            record = schemaless_reader(io.BytesIO(data[HEADER_LEN:]), writer, self._parsed)
        except Exception as exc:  # truncated or corrupt bodies surface as many error types
            raise SchemaError(f"body does not decode as {self.name}: {exc!r}") from exc
        if not isinstance(record, dict):
            raise SchemaError(f"{self.name} is not a record schema")
        return record


def projection(schema: Schema, fields: Sequence[str]) -> Schema:
    """``schema`` reduced to ``fields``: a reader schema that lets fastavro skip the rest of a
    message instead of building it (the tracker needs four fields of a notice, not the person).
    """
    unknown = set(fields) - {f["name"] for f in schema["fields"]}
    if unknown:
        raise ConfigError(f"{schema['name']} has no field {', '.join(sorted(unknown))}")
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] in fields]}


def schema_dir() -> Path:
    """``NOTICE_BUS_SCHEMA_DIR``, else the ``schemas/`` folder of the source tree."""
    configured = os.environ.get("NOTICE_BUS_SCHEMA_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[3] / "schemas"
    if not path.is_dir():
        raise ConfigError(f"schema folder {path} not found; set NOTICE_BUS_SCHEMA_DIR")
    return path


@cache
def load_schema(name: str) -> Schema:
    """The current schema ``name`` (``notice_event``, ``ack``) from the schema folder."""
    path = schema_dir() / f"{name}.avsc"
    try:
        schema: Schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read schema {path}: {exc}") from exc
    return schema
