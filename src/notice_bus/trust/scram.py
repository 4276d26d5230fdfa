"""The cluster's SCRAM users, kept equal to the registry: a user for every principal whose
password ``notice-bus pki`` wrote (``<folder>/<name>/scram.password``), none for a revoked one.
The broker stores only a salted hash; the password stays in its file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kafka.admin import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion
from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable
from notice_bus.runtime.kafka import explain
from notice_bus.trust.principals import Principal

MECHANISM = ScramMechanism.SCRAM_SHA_512


def sync_users(
    admin: Any, registry: Mapping[str, Principal], folder: Path
) -> tuple[list[str], list[str]]:
    """Add the missing users, remove the revoked ones; (added, removed). ``admin`` (the super
    user) itself is never touched: it was made when the broker's storage was formatted."""
    try:
        have = {
            user
            for user, found in admin.describe_user_scram_credentials().items()
            if not found["error"] and found["credential_infos"]
        }
        changes: list[Any] = []
        added, removed = [], []
        for p in registry.values():
            password = folder / p.name / "scram.password"
            if p.role == "admin":
                continue
            if p.revoked_at and p.name in have:
                changes.append(UserScramCredentialDeletion(p.name, MECHANISM))
                removed.append(p.name)
            elif not p.revoked_at and p.name not in have and password.exists():
                secret = password.read_text(encoding="utf-8").strip()
                changes.append(UserScramCredentialUpsertion(p.name, MECHANISM, secret))
                added.append(p.name)
        if changes:
            errors = {u: e for u, e in admin.alter_user_scram_credentials(changes).items() if e}
            if errors:
                user, error = next(iter(errors.items()))
                raise BrokerUnavailable(f"changing SCRAM user {user}: {error}")
    except KafkaError as exc:
        raise BrokerUnavailable(f"changing the cluster's SCRAM users: {explain(exc)}") from exc
    return added, removed
