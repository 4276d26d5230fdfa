"""compose.yaml cannot run here (no Docker engine); check that its structure holds together."""

from __future__ import annotations

import base64
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from notice_bus.hq.publisher import read_drafts
from notice_bus.runtime.settings import Settings

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
            assert (ROOT / source).exists(), source
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


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the notice-bus image."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def test_kafka_data_is_on_its_volume() -> None:
    compose = load()
    kafka = compose["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].split(",")
    mounts = dict(reversed(v.split(":")[:2]) for v in kafka["volumes"])
    for log_dir in log_dirs:
        assert mounts.get(log_dir) in compose["volumes"], f"{log_dir} is not on a volume"
    # A fixed cluster id (a UUID, base64url) lets a recreated container use the same data.
    cluster_id = kafka["environment"]["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_every_notice_bus_service_has_a_healthcheck_on_its_port() -> None:
    services = ours(load())
    assert any(s.get("command", [None])[0] == "dashboard" for s in services.values())
    for name, service in services.items():
        if service.get("restart") == "no":  # one-shot commands
            continue
        check = " ".join(service["healthcheck"]["test"])
        command = service["command"]
        flag = "--port" if command[0] == "dashboard" else "--metrics-port"
        port = command[command.index(flag) + 1]
        path = "/healthz" if command[0] == "dashboard" else "/metrics"
        assert f"127.0.0.1:{port}{path}" in check, name
        if "--metrics-port" in command:  # reachable by a Prometheus on the network
            assert command[command.index("--metrics-host") + 1] == "0.0.0.0", name


def test_images_are_pinned() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in load()["services"].items():
        image = service["image"]
        tag = image.partition(":")[2]
        if "build" in service:
            assert image == f"notice-bus:{version}", name
        else:  # a patch release, not a floating major or latest
            assert re.match(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$", tag), image


def test_documented_hq_commands_use_files_in_the_repo() -> None:
    hq = load()["services"]["hq"]
    mounts = {}
    for volume in hq["volumes"]:
        source, target = volume.split(":")[:2]
        assert (ROOT / source).exists(), source
        mounts[target] = ROOT / source
    header = (ROOT / "compose.yaml").read_text().split("\nname:", 1)[0]
    files = re.findall(r"run --rm hq publish (\S+)", header)
    assert files
    for file in files:
        target = next(t for t in mounts if file.startswith(t + "/"))
        local = mounts[target] / file.removeprefix(target + "/")
        assert local.is_file(), file
        assert read_drafts(local)  # valid, every notice


def test_example_notices_reach_the_compose_countries() -> None:
    drafts = read_drafts(ROOT / "examples" / "notices.json")
    topics = load()["services"]["topics"]["command"]
    countries = set(topics[topics.index("--countries") + 1].split(","))
    assert {c for d in drafts for c in d.target_countries} <= countries
    assert any(not d.target_countries for d in drafts)  # a broadcast too
    assert any(d.person.languages_spoken_ids is None for d in drafts)  # INTERPOL's null kept


def test_example_config_documents_every_setting_at_its_default() -> None:
    path = ROOT / "examples" / "notice-bus.toml"
    assert Settings.load(config_file=path, env={}) == Settings()
    # Uncommented, the commented-out settings are the defaults too.
    text = path.read_text()
    uncommented = re.sub(r"(?m)^# (\w+ = .*)$", r"\1", text)
    assert tomllib.loads(uncommented)["notice-bus"] == {
        f.name: getattr(Settings(), f.name) for f in fields(Settings)
    }
