"""compose.yaml cannot run here (no Docker engine); check that its structure holds together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_services_are_all_there() -> None:
    services = load()["services"]
    assert {"kafka", "postgres", "tracker", "topics"} <= set(services)
    adapters = [s for s in services.values() if s.get("command", [None])[0] == "adapter"]
    assert len(adapters) >= 2
    countries = {s["command"][s["command"].index("--country") + 1] for s in adapters}
    assert len(countries) == len(adapters)  # one adapter per country here
    for adapter in adapters:
        assert "--database-url" in adapter["command"]


def test_kafka_is_single_node_kraft() -> None:
    env = load()["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert str(env["KAFKA_NODE_ID"]) in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert "zookeeper" not in str(env).lower()


def test_every_dependency_exists_and_clients_point_at_the_broker() -> None:
    compose = load()
    services = compose["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        env = service.get("environment", {})
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
            assert host in services
            assert (
                f"PLAINTEXT://{host}:{port}"
                in services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
            )
    for volume in (v for s in services.values() for v in s.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert source == "./data" or (ROOT / source).exists(), source
        else:
            assert source in compose["volumes"]


def test_country_databases_are_created() -> None:
    services = load()["services"]
    init = (ROOT / "consumers" / "postgres-init.sql").read_text()
    for service in services.values():
        cmd = service.get("command", [])
        if "--database-url" in cmd:
            database = cmd[cmd.index("--database-url") + 1].rsplit("/", 1)[1]
            assert f"CREATE DATABASE {database};" in init


def test_image_builds_from_the_repo() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("pyproject.toml", "src", "schemas"):
        assert path in dockerfile and (ROOT / path).exists()
    assert "NOTICE_BUS_SCHEMA_DIR" in dockerfile
