"""compose.yaml cannot run here (no Docker engine); check that its structure holds together."""

from __future__ import annotations

import base64
import re
import shlex
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from notice_bus.cli import main
from notice_bus.hq.publisher import read_drafts
from notice_bus.runtime.settings import Settings
from notice_bus.trust.pki import names_in

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
            assert listener_of(services[host], f"{host}:{port}")
    for volume in (v for s in services.values() for v in s.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
        else:
            assert source in compose["volumes"]


def listener_of(broker: dict[str, Any], address: str) -> str:
    """The security protocol of the broker's advertised listener at ``address``."""
    env = broker["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, _, where = listener.partition("://")
        if where == address:
            return protocols[name]
    raise AssertionError(f"the broker advertises no listener at {address}")


def test_the_broker_lets_in_only_clients_with_a_certificate_and_an_acl() -> None:
    kafka = load()["services"]["kafka"]
    env = kafka["environment"]
    assert listener_of(kafka, "kafka:9092") == "SSL"
    assert set(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")) == {
        "CLIENTS:SSL",
        "CONTROLLER:SSL",
    }
    assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:broker", "User:admin"}
    # The image's start script asks for Java keystores when a listener's name says SSL.
    assert "SSL" not in env["KAFKA_LISTENERS"] + env["KAFKA_ADVERTISED_LISTENERS"]
    mounts = dict(reversed(v.split(":")[:2]) for v in kafka["volumes"])
    for key in ("KAFKA_SSL_KEYSTORE_LOCATION", "KAFKA_SSL_TRUSTSTORE_LOCATION"):
        assert env[key].rsplit("/", 1)[0] in mounts, key


def test_each_service_connects_as_a_principal_the_pki_service_issues(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Runs the pki service's `notice-bus pki` as written (its /pki here in tmp_path), then
    checks every service's settings file is one it wrote, for the right principal."""
    services = load()["services"]
    script = services["pki"]["command"][0]
    argv = shlex.split(script.split("&&")[0])[1:]
    argv[argv.index("--dir") + 1] = str(tmp_path)
    assert main(argv) == 0
    assert "kafka" in names_in(tmp_path / "broker" / "server.pem")  # the name clients use
    topics = services["topics"]["command"]
    assert argv[argv.index("--countries") + 1] == topics[topics.index("--countries") + 1]
    for name, service in ours({"services": services}).items():
        if name == "pki":
            continue
        config = service["environment"]["NOTICE_BUS_CONFIG"]
        principal = config.removeprefix("/pki/").split("/")[0]
        command = service.get("command", [])
        if command and command[0] == "adapter":
            assert principal == f"bureau-{command[command.index('--country') + 1]}", name
        else:
            want = {"topics": "admin", "hq": "hq", "review": "hq", "tracker": "tracker"}
            want["dashboard"] = "tracker"
            assert principal == want[name], name
        settings = (tmp_path / config.removeprefix("/pki/")).read_text()
        assert 'security_protocol = "SSL"' in settings, name
        assert "pki:/pki:ro" in service["volumes"], name


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
        if not source.startswith("./"):
            continue  # a named volume
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
