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
from notice_bus.wire.topics import expected_replication

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def brokers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Kafka brokers, by service name."""
    return {
        n: s
        for n, s in compose["services"].items()
        if s.get("image", "").startswith("apache/kafka:")
    }


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the container sees it: every value a string."""
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def test_services_are_all_there() -> None:
    services = load()["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "postgres", "tracker", "topics"} <= set(services)
    adapters = [s for s in services.values() if s.get("command", [None])[0] == "adapter"]
    assert len(adapters) >= 2
    countries = {s["command"][s["command"].index("--country") + 1] for s in adapters}
    assert len(countries) == len(adapters)  # one adapter per country here
    for adapter in adapters:
        assert "--database-url" in adapter["command"]


def test_kafka_is_a_three_node_kraft_quorum() -> None:
    """Three combined broker+controller nodes of one cluster, each a voter at its own name,
    where its controller listener is."""
    compose = load()
    nodes = brokers(compose)
    assert len(nodes) == 3
    envs = {name: env_of(s) for name, s in nodes.items()}
    ids = {name: int(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert len(set(ids.values())) == 3
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    (quorum,) = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    voters = dict(voter.split("@") for voter in quorum.split(","))
    assert voters == {str(ids[n]): f"{n}:{port_of(nodes[n], 'CONTROLLER')}" for n in nodes}
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert "zookeeper" not in str(env).lower()
        # A voter the others can reach: its controller listener is not on loopback alone.
        controller = listeners(env["KAFKA_LISTENERS"])["CONTROLLER"]
        assert controller.rpartition(":")[0] in ("", "0.0.0.0", name), name
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"


def listeners(text: str) -> dict[str, str]:
    """``CLIENTS://:9092,CONTROLLER://kafka-1:9093`` -> {"CLIENTS": ":9092", ...}"""
    return {name: where for name, _, where in (i.partition("://") for i in text.split(","))}


def port_of(broker: dict[str, Any], listener: str) -> str:
    return listeners(broker["environment"]["KAFKA_LISTENERS"])[listener].rpartition(":")[2]


def test_the_cluster_keeps_every_acknowledged_write_through_a_broker_loss() -> None:
    """Three copies of everything, the groups' offsets too; a write needs two in sync, so one
    broker down loses nothing and stops nothing; no replica that fell behind becomes leader."""
    compose = load()
    nodes = brokers(compose)
    for name, broker in nodes.items():
        env = env_of(broker)
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2, name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        assert re.search(r"-Xmx\d+[mg]\b", env["KAFKA_HEAP_OPTS"]), name  # a bounded heap
    # What `topics init` gives our topics, checked as it checks them on this cluster.
    topics = env_of(compose["services"]["topics"])
    topics.pop("NOTICE_BUS_CONFIG")  # the admin's credentials, written by the pki service
    settings = Settings.load(env=topics)
    assert expected_replication(len(nodes), settings) == (3, 2)
    # Not automatic: with a broker missing, `topics init` refuses rather than make 2 copies.
    assert settings.replication_factor == len(nodes)
    # The topics wait for every broker.
    depends = compose["services"]["topics"]["depends_on"]
    for name in nodes:
        assert depends[name]["condition"] == "service_healthy", name


def test_every_notice_bus_setting_in_the_environment_is_one() -> None:
    known = {f"NOTICE_BUS_{f.name.upper()}" for f in fields(Settings)} | {"NOTICE_BUS_CONFIG"}
    for name, service in load()["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("NOTICE_BUS_"):
                assert key in known, f"{name}: {key} is no setting"


def test_every_dependency_exists_and_clients_point_at_the_broker() -> None:
    compose = load()
    services = compose["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        env = service.get("environment", {})
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            hosts = set()
            for address in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
                host, port = address.split(":")
                assert host in services, f"{name}: {host}"
                assert listener_of(services[host], f"{host}:{port}")
                hosts.add(host)
            # Every broker: a client starts with any one of them down.
            assert hosts == set(brokers(compose)), name
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


def test_the_brokers_let_in_only_clients_with_a_certificate_and_an_acl() -> None:
    for name, kafka in brokers(load()).items():
        env = kafka["environment"]
        assert listener_of(kafka, f"{name}:9092") == "SSL"
        assert set(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")) == {
            "CLIENTS:SSL",
            "CONTROLLER:SSL",
        }
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "CLIENTS"  # between brokers too
        assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:broker", "User:admin"}
        # The image's start script asks for Java keystores when a listener's name says SSL.
        assert "SSL" not in env["KAFKA_LISTENERS"] + env["KAFKA_ADVERTISED_LISTENERS"]
        mounts = dict(reversed(v.split(":")[:2]) for v in kafka["volumes"])
        for key in ("KAFKA_SSL_KEYSTORE_LOCATION", "KAFKA_SSL_TRUSTSTORE_LOCATION"):
            assert env[key].rsplit("/", 1)[0] in mounts, (name, key)


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
    names = names_in(tmp_path / "broker" / "server.pem")
    for broker in brokers({"services": services}):  # the names clients and voters use
        assert broker in names, broker
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


def test_each_broker_has_its_data_on_a_volume_of_its_own() -> None:
    compose = load()
    volumes: list[str] = []
    for name, kafka in brokers(compose).items():
        log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].split(",")
        mounts = dict(reversed(v.split(":")[:2]) for v in kafka["volumes"])
        for log_dir in log_dirs:
            assert mounts.get(log_dir) in compose["volumes"], (
                f"{name}: {log_dir} is not on a volume"
            )
            volumes.append(mounts[log_dir])
        # A fixed cluster id (a UUID, base64url) lets a recreated container use the same data.
        cluster_id = kafka["environment"]["CLUSTER_ID"]
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert len(volumes) == len(set(volumes)) == 3  # no two brokers share one


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
