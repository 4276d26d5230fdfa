"""A deployment's topics, made ready for its principals: ``notice-bus topics init``.

On a PLAINTEXT cluster that is the topics alone. On a secured one only HQ and admin may write
the schema topic, so every schema is registered now (a bureau's or the tracker's codec then
finds its own there), and the registry's grants are applied when ``principals_file`` is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from notice_bus.runtime.settings import Settings
from notice_bus.trust.acl import Applied, apply_registry
from notice_bus.wire.codec import load_schema, schema_dir
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import init_topics


@dataclass(frozen=True, slots=True)
class Initialised:
    created: list[str]
    applied: Applied | None  # the grants, where a principals file was given


def init_cluster(settings: Settings, countries: Iterable[str]) -> Initialised:
    """Create ``countries``' topics; on a secured cluster also register every schema and
    apply the principals' grants. Idempotent, like each of its parts."""
    created = init_topics(settings, countries)
    if not settings.secured:
        return Initialised(created, None)
    store = KafkaSchemaStore(settings)
    for path in sorted(schema_dir().glob("*.avsc")):
        store.register(load_schema(path.stem))
    return Initialised(created, apply_registry(settings) if settings.principals_file else None)
