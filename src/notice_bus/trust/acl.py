"""What the broker lets each principal do: ``notice-bus acl apply``, ``acl show``, revocation.

The grants, every one ALLOW on a LITERAL name (a prefix ``notices.FR`` would also match
``notices.FRX``), with the configured topic prefix:

- HQ writes every country's notices and reminders, reads their acks, responses and requests,
  and writes the schema and keyring topics;
- the tracker reads every country's notices, acks and responses, writes reminders (its
  escalation), uses its own group and describes the adapters' groups;
- a bureau reads its own notices, reminders and dead letters, writes its own acks, responses,
  requests and dead letters, and uses its own group and the one that replays its dead letters;
- a hub, the union for its countries, its hub group and its shards' (a PREFIXED ``NAME.``:
  hub names have no dot, so no other hub's group starts so);
- everyone reads the schema and keyring topics. ``admin`` is the broker's super user.

Applying is idempotent and exact for the registry's principals: missing grants are created,
grants the registry no longer implies (a revoked bureau's, a country moved out of a hub) are
deleted, and ACLs of principals the registry does not name are left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import KafkaError

from notice_bus.errors import AccessDenied, BrokerUnavailable, ConfigError
from notice_bus.runtime.kafka import admin_client, explain
from notice_bus.runtime.settings import Settings
from notice_bus.trust.principals import Principal, read_principals, revoked, write_principals
from notice_bus.trust.scram import sync_users
from notice_bus.wire.groups import group_id, hub_group_id, review_group_id
from notice_bus.wire.topics import TopicNames, registered_countries


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ACL: ``principal`` (a registry name) may ``operation`` the ``resource`` ``name``."""

    principal: str
    resource: str  # TOPIC, GROUP, CLUSTER
    name: str
    operation: str  # READ, WRITE, DESCRIBE
    pattern: str = "LITERAL"

    def acl(self) -> ACL:
        return ACL(
            principal=f"User:{self.principal}",
            host="*",
            operation=ACLOperation[self.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[self.resource], self.name, ACLResourcePatternType[self.pattern]
            ),
        )


def grants(
    settings: Settings, principals: Mapping[str, Principal], countries: Iterable[str]
) -> list[Grant]:
    """Every grant the registry implies, for ``countries`` (HQ's and the tracker's reach)."""
    t = TopicNames(settings.topic_prefix)
    every = sorted(set(countries).union(*(p.countries for p in principals.values())))
    out: list[Grant] = []
    for p in principals.values():
        if p.revoked_at or p.role == "admin":
            continue
        n = p.name

        def topic(name: str, op: str, n: str = n) -> None:
            out.append(Grant(n, "TOPIC", name, op))

        topic(t.schemas, "READ")
        topic(t.keyring, "READ")
        if p.role == "hq":
            topic(t.schemas, "WRITE")
            topic(t.keyring, "WRITE")
            # HQ's review service reads every country's requests in a group of its own.
            out.append(Grant(n, "GROUP", review_group_id(settings), "READ"))
            for cc in every:
                for name in (t.notices(cc), t.reminders(cc), t.decisions(cc), t.manifests(cc)):
                    topic(name, "WRITE")
                topic(t.notices(cc), "READ")  # to sign the notices again after a revocation
                for name in (t.acks(cc), t.responses(cc), t.requests(cc)):
                    topic(name, "READ")
        elif p.role == "tracker":
            out.append(Grant(n, "GROUP", f"{settings.topic_prefix}notice-bus.tracker", "READ"))
            out.append(
                Grant(n, "GROUP", f"{settings.topic_prefix}notice-bus.", "DESCRIBE", "PREFIXED")
            )
            for cc in every:
                for name in (t.notices(cc), t.acks(cc), t.responses(cc), t.decisions(cc)):
                    topic(name, "READ")
                topic(t.reminders(cc), "WRITE")
        else:  # a bureau, or a hub: the same for each of its countries
            for cc in p.countries:
                for name in (
                    t.notices(cc),
                    t.reminders(cc),
                    t.dead_letters(cc),
                    t.decisions(cc),
                    t.manifests(cc),
                ):
                    topic(name, "READ")
                for name in (t.acks(cc), t.responses(cc), t.requests(cc), t.dead_letters(cc)):
                    topic(name, "WRITE")
                out.append(Grant(n, "GROUP", f"{settings.topic_prefix}notice-bus.dlq.{cc}", "READ"))
            if p.role == "bureau":
                out.append(Grant(n, "GROUP", group_id(settings, p.countries[0]), "READ"))
            else:  # the hub's group, and those of its shards (``--processes``: NAME.1-of-2)
                own = hub_group_id(settings, p.name.removeprefix("hub-"))
                out.append(Grant(n, "GROUP", own, "READ"))
                out.append(Grant(n, "GROUP", f"{own}.", "READ", "PREFIXED"))
    return sorted(set(out))


def current(admin: Any, principals: Iterable[str]) -> set[Grant]:
    """The ALLOW grants the broker holds for ``principals`` (registry names)."""
    wanted = {f"User:{p}" for p in principals}
    everything = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    try:
        acls, error = admin.describe_acls(everything)
    except KafkaError as exc:
        raise _failed("reading the cluster's ACLs", exc) from exc
    if error.errno:
        raise _failed("reading the cluster's ACLs", error)
    return {
        Grant(
            a.principal.removeprefix("User:"),
            a.resource_pattern.resource_type.name,
            a.resource_pattern.resource_name,
            a.operation.name,
            a.resource_pattern.pattern_type.name,
        )
        for a in acls
        if a.principal in wanted and a.permission_type == ACLPermissionType.ALLOW
    }


def apply(admin: Any, wanted: Iterable[Grant], principals: Iterable[str]) -> tuple[int, int]:
    """Make the broker's grants of ``principals`` exactly ``wanted``; (created, deleted)."""
    want = set(wanted)
    have = current(admin, principals)
    create = sorted(want - have)
    delete = sorted(have - want)
    try:
        if create:
            result = admin.create_acls([g.acl() for g in create])
            if result["failed"]:
                raise _failed("creating ACLs", result["failed"][0])
        if delete:
            admin.delete_acls([g.acl() for g in delete])
    except KafkaError as exc:
        raise _failed("changing the cluster's ACLs", exc) from exc
    if create or delete:
        _await(admin, want, principals)
    return len(create), len(delete)


def _await(admin: Any, want: set[Grant], principals: Iterable[str], timeout_s: float = 15) -> None:
    """Return once the broker answers with ``want``: the controller has accepted the change,
    and the broker's authorizer, which answers this from the same metadata, has it too. A
    client started right after ``acl apply`` is then let in."""
    names = list(principals)
    deadline = time.monotonic() + timeout_s
    while current(admin, names) != want:
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"the broker did not show the new ACLs within {timeout_s:g} s; run"
                " `notice-bus acl show` to see what it holds"
            )
        time.sleep(0.1)


def table(found: Iterable[Grant]) -> str:
    """``acl show``: one line per grant, grouped by principal."""
    rows = [("PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "PATTERN")]
    rows += [(g.principal, g.operation, g.resource, g.name, g.pattern) for g in sorted(found)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _failed(what: str, exc: Any) -> Exception:
    name = type(exc).__name__
    if "Authorization" in name or "SecurityDisabled" in name:
        return AccessDenied(
            f"{what}: the cluster refused it ({name}); ACLs are managed with the admin"
            " principal's credentials, on a broker with an authorizer"
        )
    words = explain(exc) if isinstance(exc, KafkaError) else str(exc)
    return BrokerUnavailable(f"{what}: {words}")


@dataclass(frozen=True, slots=True)
class Applied:
    created: int
    deleted: int
    users_added: list[str]
    users_removed: list[str]


def apply_registry(settings: Settings) -> Applied:
    """``acl apply``: the grants of ``principals_file``'s registry, for every registered
    country, and the SCRAM users of its folder (added if missing, removed once revoked)."""
    registry = read_principals(registry_path(settings))
    admin = admin_client(settings)
    try:
        wanted = grants(settings, registry, registered_countries(settings, admin))
        created, deleted = apply(admin, wanted, registry)
        added, removed = sync_users(admin, registry, registry_path(settings).parent)
    finally:
        admin.close()
    return Applied(created, deleted, added, removed)


def revoke(settings: Settings, name: str, at: str) -> Applied:
    """Mark ``name`` revoked in the registry, then apply it: its grants and its SCRAM user go,
    and the broker refuses its next request, on connections open already too."""
    path = registry_path(settings)
    registry = read_principals(path)
    if name not in registry:
        raise ConfigError(f"{name} is not in the principals file {path}: nothing to revoke")
    if not registry[name].revoked_at:
        registry[name] = revoked(registry[name], at)
        write_principals(path, registry.values())
    return apply_registry(settings)


def registry_path(settings: Settings) -> Path:
    if not settings.principals_file:
        raise ConfigError(
            "no principals file: set principals_file (NOTICE_BUS_PRINCIPALS_FILE), the"
            " principals.toml that notice-bus pki writes"
        )
    return Path(settings.principals_file)
