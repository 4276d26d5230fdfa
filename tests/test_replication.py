"""The topics' replication and durability (issue 18): ``replication_factor`` and
``min_insync_replicas`` at 0 follow the cluster's brokers, every topic refuses unclean leader
elections, and a replication the cluster cannot give is a ConfigError in words."""

from __future__ import annotations

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from notice_bus.cli import main
from notice_bus.cli.exit_codes import EX_CONFIG
from notice_bus.errors import ConfigError
from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import count_brokers, expected_replication, init_topics


@pytest.mark.parametrize(
    ("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_automatic_replication_follows_the_brokers(brokers: int, expected: tuple[int, int]) -> None:
    assert expected_replication(brokers, Settings()) == expected


@pytest.mark.parametrize(
    ("brokers", "rf", "isr", "expected"),
    [
        (5, 5, 0, (5, 2)),  # a positive factor as is; 2 in sync from 3 copies up
        (5, 2, 0, (2, 1)),
        (3, 0, 3, (3, 3)),  # a positive min.insync.replicas as is
        (5, 0, 1, (3, 1)),
        (1, 1, 1, (1, 1)),
    ],
)
def test_positive_settings_are_used_as_they_are(
    brokers: int, rf: int, isr: int, expected: tuple[int, int]
) -> None:
    settings = Settings(replication_factor=rf, min_insync_replicas=isr)
    assert expected_replication(brokers, settings) == expected


def test_more_replicas_than_brokers_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        expected_replication(2, Settings(replication_factor=3))
    assert "replication_factor is 3" in str(error.value)
    assert "2 broker(s)" in str(error.value)


def test_more_in_sync_replicas_than_replicas_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:  # automatic: 1 copy on one broker
        expected_replication(1, Settings(min_insync_replicas=2))
    assert "min_insync_replicas is 2" in str(error.value) and "1 replica(s)" in str(error.value)
    with pytest.raises(ConfigError, match=r"'min_insync_replicas' \(3\) cannot exceed"):
        Settings(replication_factor=2, min_insync_replicas=3)


@pytest.mark.parametrize("name", ["replication_factor", "min_insync_replicas"])
def test_a_negative_replication_setting_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}' must be 0 \(automatic\) or a positive"):
        Settings().with_(**{name: -1})


def test_replication_settings_come_from_the_environment() -> None:
    env = {"NOTICE_BUS_REPLICATION_FACTOR": "3", "NOTICE_BUS_MIN_INSYNC_REPLICAS": "2"}
    settings = Settings.load(env=env)
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    with pytest.raises(ConfigError, match="'min_insync_replicas' must be int"):
        Settings.load(env={"NOTICE_BUS_MIN_INSYNC_REPLICAS": "two"})


def _topics_as_created(settings: Settings, topics: list[str]) -> dict[str, tuple[set[int], dict]]:
    """Each topic's replica counts (one per partition) and its configs, read back."""
    admin = admin_client(settings)
    try:
        described = {t["name"]: t for t in admin.describe_topics(topics)}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    return {
        t: (
            {len(p["replica_nodes"]) for p in described[t]["partitions"]},
            {k: v["value"] for k, v in configs[t].items()},
        )
        for t in topics
    }


@pytest.mark.kafka
def test_topics_init_on_one_broker_makes_one_replica_and_refuses_unclean_leaders(
    settings: Settings,
) -> None:
    assert (settings.replication_factor, settings.min_insync_replicas) == (0, 0)  # defaults
    admin = admin_client(settings)
    try:
        assert count_brokers(settings, admin) == 1  # the tests' single broker
    finally:
        admin.close()
    created = init_topics(settings, ["FR"])
    assert len(created) == 10  # 8 of FR's, the schemas and the keyring
    for topic, (replicas, configs) in _topics_as_created(settings, created).items():
        assert replicas == {1}, topic
        assert configs["min.insync.replicas"] == "1", topic
        assert configs["unclean.leader.election.enable"] == "false", topic
    # What each had before is still there.
    notices = _topics_as_created(settings, [f"{settings.topic_prefix}notices.FR"])
    assert notices[f"{settings.topic_prefix}notices.FR"][1]["cleanup.policy"] == "compact"


@pytest.mark.kafka
def test_two_replicas_on_one_broker_is_a_config_error_naming_the_setting(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as error:
        init_topics(cli_env.with_(replication_factor=2), ["FR"])
    assert "replication_factor is 2" in str(error.value) and "1 broker(s)" in str(error.value)
    monkeypatch.setenv("NOTICE_BUS_REPLICATION_FACTOR", "2")
    assert main(["topics", "init", "--countries", "FR"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "replication_factor is 2" in err and "1 broker(s)" in err
    assert "NOTICE_BUS_REPLICATION_FACTOR" in err
    assert "INVALID_REPLICATION_FACTOR" not in err and "error 38" not in err
    # Nothing was created: the same command with the default works, and creates it all.
    monkeypatch.delenv("NOTICE_BUS_REPLICATION_FACTOR")
    assert main(["topics", "init", "--countries", "FR"]) == 0
    assert "created 10 topics" in capsys.readouterr().out
