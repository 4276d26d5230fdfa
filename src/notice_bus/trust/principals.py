"""Who may connect, and as what: the registry of principals ``notice-bus acl apply`` grants.

A principal is a name the cluster knows (a SCRAM user, or the CN of a client certificate) and a
role: ``admin`` (topics, ACLs and users; the broker's super user), ``hq``, ``tracker``, ``bureau``
(one country) or ``hub`` (several countries in one adapter). The registry is a TOML file with no
secrets in it, written by ``notice-bus pki`` next to the credentials it issues:

    [principals.bureau-FR]
    role = "bureau"
    countries = ["FR"]
    revoked_at = "2026-12-05T10:00:00Z"   # only once revoked: no grants, no credential
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import read_toml

ROLES = ("admin", "hq", "tracker", "bureau", "hub")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    countries: tuple[str, ...] = ()
    revoked_at: str = ""

    @property
    def kafka_name(self) -> str:
        """The principal as the broker's ACLs name it."""
        return f"User:{self.name}"


def bureau_name(country: str) -> str:
    return f"bureau-{country}"


def hub_name(hub: str) -> str:
    """The principal of hub ``hub``: letters, digits, ``_`` and ``-`` only, since its
    shards' groups are granted by the prefix ``hub.NAME.`` that a dotted name would extend."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", hub):
        raise ConfigError(f"hub name {hub!r}: use letters, digits, _ and - only")
    return f"hub-{hub}"


def read_principals(path: str | Path) -> dict[str, Principal]:
    """The registry at ``path``, by name; a ConfigError says what is wrong and where."""
    data = read_toml(path, "principals file")
    table = data.get("principals", {})
    if not isinstance(table, dict):
        raise ConfigError(f"principals file {path}: [principals] must be a table")
    out: dict[str, Principal] = {}
    for name, entry in table.items():
        role = entry.get("role") if isinstance(entry, dict) else None
        if role not in ROLES:
            raise ConfigError(
                f"principals file {path}: {name}: role must be one of {', '.join(ROLES)},"
                f" got {role!r}"
            )
        countries = entry.get("countries", [])
        if not isinstance(countries, list) or not all(isinstance(c, str) for c in countries):
            raise ConfigError(f"principals file {path}: {name}: countries must be a list of codes")
        if role in ("bureau", "hub") and not countries:
            raise ConfigError(f"principals file {path}: {name}: a {role} needs its countries")
        out[name] = Principal(name, role, tuple(countries), str(entry.get("revoked_at", "")))
    return out


def write_principals(path: str | Path, principals: Iterable[Principal]) -> None:
    """Write the registry (replacing the file at once, so a reader never sees half of it)."""
    lines = ["# notice-bus principals: who may connect, and as what. No secrets here.", ""]
    for p in sorted(principals, key=lambda p: (ROLES.index(p.role), p.name)):
        lines += [f"[principals.{p.name}]", f'role = "{p.role}"']
        if p.countries:
            lines.append("countries = [" + ", ".join(f'"{c}"' for c in p.countries) + "]")
        if p.revoked_at:
            lines.append(f'revoked_at = "{p.revoked_at}"')
        lines.append("")
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text("\n".join(lines), encoding="utf-8")
    os.replace(partial, target)


def revoked(principal: Principal, at: str) -> Principal:
    return replace(principal, revoked_at=at)
