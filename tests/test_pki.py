"""``notice-bus pki`` and the grants its registry implies, without a broker (the broker's side
is tests/test_security.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import Settings
from notice_bus.trust.acl import Grant, grants
from notice_bus.trust.pki import issue, names_in
from notice_bus.trust.principals import read_principals


def test_issue_is_idempotent_and_adds_only_what_is_missing(tmp_path: Path) -> None:
    first = issue(tmp_path, countries=["FR"])
    assert tmp_path / "bureau-FR" / "client.crt" in first
    assert issue(tmp_path, countries=["FR"]) == []
    again = issue(tmp_path, countries=["FR", "DE"])
    assert {p.parent.name for p in again if p.parent.name.startswith("bureau-")} == {"bureau-DE"}
    for secret in ("ca.key", "bureau-DE/client.key", "bureau-DE/scram.password", "hq/signing.key"):
        assert stat.S_IMODE((tmp_path / secret).stat().st_mode) == 0o600, secret


def test_the_broker_certificate_names_the_hosts_it_is_reached_by(tmp_path: Path) -> None:
    server = tmp_path / "broker" / "server.pem"
    issue(tmp_path)
    assert names_in(server) == {"localhost", "127.0.0.1"}
    # A broker reached as kafka (say): the certificate is issued again to name it.
    assert server in issue(tmp_path, broker_names=["kafka", "10.0.0.7"])
    assert names_in(server) == {"localhost", "127.0.0.1", "kafka", "10.0.0.7"}
    assert issue(tmp_path, broker_names=["kafka"]) == []


def test_a_hub_is_granted_its_groups_and_its_shards_and_no_one_elses(tmp_path: Path) -> None:
    issue(tmp_path, countries=["FR"], hubs={"south": ["GR", "CY"]})
    registry = read_principals(tmp_path / "principals.toml")
    mine = {
        g for g in grants(Settings(), registry, ["FR", "GR", "CY"]) if g.principal == "hub-south"
    }
    groups = {(g.name, g.pattern) for g in mine if g.resource == "GROUP"}
    assert ("notice-bus.hub.south", "LITERAL") in groups
    assert ("notice-bus.hub.south.", "PREFIXED") in groups  # --processes: south.1-of-2
    assert ("notice-bus.dlq.GR", "LITERAL") in groups
    assert not any("FR" in name or "hub.north" in name for name, _ in groups)
    assert Grant("hub-south", "TOPIC", "notices.CY", "READ") in mine
    assert Grant("hub-south", "TOPIC", "notices.FR", "READ") not in mine


@pytest.mark.parametrize("name", ["south.x", "a b", ""])
def test_a_hub_name_that_would_widen_its_grants_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="hub name"):
        issue(tmp_path, hubs={name: ["GR"]})
