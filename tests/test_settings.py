from __future__ import annotations

from pathlib import Path

import pytest

from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import Settings


def test_defaults_then_file_then_environment_then_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "nb.toml"
    conf.write_text('[notice-bus]\ntopic_prefix = "file."\npartitions = 6\nbatch_size = 50\n')
    env = {"NOTICE_BUS_PARTITIONS": "12", "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"}
    s = Settings.load(conf, env=env, batch_size=7)
    assert s.topic_prefix == "file."
    assert s.partitions == 12
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.batch_size == 7
    assert s.retry_attempts == Settings().retry_attempts


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().partitions = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTICE_BUS_PARTITIONS": "many"}, "must be int"),
        ({"NOTICE_BUS_CONFIG": "/nonexistent.toml"}, "does not exist"),
    ],
)
def test_bad_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    conf = tmp_path / "nb.toml"
    conf.write_text("partitons = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'partitons'"):
        Settings.load(conf, env={})


def test_broker_timeout_from_file_then_environment(tmp_path: Path) -> None:
    conf = tmp_path / "nb.toml"
    conf.write_text("broker_timeout_s = 4\n")
    assert Settings.load(conf, env={}).broker_timeout_s == 4.0
    env = {"NOTICE_BUS_BROKER_TIMEOUT_S": "2.5"}
    assert Settings.load(conf, env=env).broker_timeout_s == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_broker_timeout_must_be_a_positive_number_of_seconds(value: str) -> None:
    with pytest.raises(ConfigError, match="broker_timeout_s"):
        Settings.load(env={"NOTICE_BUS_BROKER_TIMEOUT_S": value})
