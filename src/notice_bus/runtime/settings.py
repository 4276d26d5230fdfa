"""Typed, frozen settings, read from a TOML file and the environment.

Precedence, lowest first: defaults, the config file (``NOTICE_BUS_CONFIG``, else ``notice-bus.toml``
in the working directory if present), environment variables, explicit overrides. Every key of the
file has an environment twin: ``topic_prefix`` is ``NOTICE_BUS_TOPIC_PREFIX``. The Kafka address
also honours the conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from notice_bus.errors import ConfigError

STATE_DIR = Path(".notice-bus")
#: Each security protocol, and the settings it cannot do without.
_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "PLAINTEXT": (),
    "SSL": ("ssl_cafile", "ssl_certfile", "ssl_keyfile"),
    "SASL_SSL": ("ssl_cafile", "sasl_username"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that differs between deployments."""

    bootstrap_servers: str = "localhost:9092"
    #: How long a client waits for a first answer from the cluster, and a producer's send for
    #: its metadata: a one-shot command (publish, cancel, topics, dlq) fails after this long
    #: without a broker; the adapter and the tracker try again, with backoff.
    broker_timeout_s: float = 10.0
    #: Prepended to every topic name; lets several deployments (or tests) share one cluster.
    topic_prefix: str = ""
    partitions: int = 3
    #: Copies of every partition of the topics ``topics init`` creates: 0 is automatic,
    #: ``min(3, brokers)`` with the brokers counted at creation; a positive number is used as
    #: is. A write is acknowledged once ``min_insync_replicas`` copies have it (0: automatic, 2
    #: with 3 copies or more, else 1): on three brokers, losing one loses no acknowledged write.
    replication_factor: int = 0
    min_insync_replicas: int = 0
    hq_database_url: str = f"sqlite:///{STATE_DIR}/hq.db"
    tracker_database_url: str = f"sqlite:///{STATE_DIR}/tracker.db"
    #: A database shared by every host of the adapters (PostgreSQL; ``{country}`` stands for
    #: the country's code) for the version ledger of plug-ins that cannot keep it in their own
    #: system. Empty: such a ledger is a SQLite file on this host's disk, which orders versions
    #: only as long as the country's partitions stay on this host (see
    #: notice_bus.bureau.sinks.local_system).
    ledger_database_url: str = ""
    #: How long HQ keeps its list of registered countries before asking the broker again
    #: (listing every topic costs ~0.1 ms a topic); see HQ for how a newcomer catches up.
    country_refresh_s: float = 10.0
    #: Largest number of records an adapter writes in one transaction.
    batch_size: int = 500
    poll_timeout_ms: int = 500
    #: How long the group waits for a silent member before giving its partitions to another.
    session_timeout_ms: int = 10000
    #: Retries of a transient failure (local system or broker down) before the adapter gives up
    #: on the batch and starts over from the last committed offset.
    retry_attempts: int = 8
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    #: A country whose p95 apply lag or oldest outstanding notice exceeds this is LAGGING. A
    #: healthy adapter records a notice within a second; ten is an early warning, well before
    #: any service-level deadline.
    lag_threshold_s: float = 10.0
    #: A country with outstanding notices that has said nothing for this long is DOWN.
    down_after_s: float = 60.0
    #: A consumer group whose committed offsets have not moved for this long, with work
    #: waiting and members present, is STALLED.
    stall_after_s: float = 60.0
    #: How often the tracker samples consumer groups, and how long a window health covers.
    sample_interval_s: float = 10.0
    window_s: float = 300.0
    #: Service levels: a notice must be recorded within, and answered within (a SIRENE
    #: bureau answers within 12 hours). Per-country overrides live in ``policy_file``.
    record_within_s: float = 900.0
    answer_within_s: float = 43200.0
    policy_file: str = ""
    #: Where escalations are POSTed (empty: none), and how often an overdue notice is
    #: reminded on the country's reminders topic.
    webhook_url: str = ""
    reminder_interval_s: float = 3600.0
    #: How this process proves who it is to Kafka: PLAINTEXT (nobody: a closed network or
    #: tests), SSL (mutual TLS, the certificate's CN is the principal) or SASL_SSL (TLS, and a
    #: SCRAM-SHA-512 user and password). ``notice-bus pki`` writes a settings file of these for
    #: each principal. Secrets come from a file or the environment, never the command line.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    sasl_password_file: str = ""
    #: The CA that signed the brokers' certificates; with SSL, this client's own certificate
    #: and key (PEM).
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    #: HQ: the Ed25519 key that signs every notice event. Bureaus: the keyring's root public
    #: key, the trust anchor every signature is checked against (empty: no check; refused on
    #: a secured cluster).
    signing_key_file: str = ""
    root_key_file: str = ""
    #: HQ: the keyring file (signed by the root) it publishes for bureaus.
    keyring_file: str = ""
    #: A bureau: its key for acknowledgements and answers. HQ and the tracker: the master
    #: secret every bureau's key derives from.
    ack_key_file: str = ""
    ack_master_file: str = ""
    #: The bureaus and hubs the cluster's ACLs grant (``notice-bus pki`` writes it).
    principals_file: str = ""
    #: HQ's review: publish a bureau's request at once when screening finds nothing (the
    #: "appear automatically" path); otherwise every request waits for a reviewer. Screening
    #: uses the shipped Article 3 rules plus those of ``screening_rules_file`` (TOML).
    auto_publish_clean: bool = True
    screening_rules_file: str = ""
    #: Copy verification: how often HQ's service publishes each country's manifest (0:
    #: only on demand, ``notice-bus verify``), and what a bureau does with the differences
    #: it finds: ``report`` them only, or ``mend`` what it can from the compacted topic.
    manifest_interval_s: float = 3600.0
    repair: str = "report"

    def __post_init__(self) -> None:
        for name in ("replication_factor", "min_insync_replicas"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"setting {name!r} must be 0 (automatic) or a positive number,"
                    f" got {getattr(self, name)!r}"
                )
        if 0 < self.replication_factor < self.min_insync_replicas:
            raise ConfigError(
                f"setting 'min_insync_replicas' ({self.min_insync_replicas}) cannot exceed"
                f" 'replication_factor' ({self.replication_factor}): no write could be"
                " acknowledged"
            )
        if not 0 < self.broker_timeout_s < math.inf:
            raise ConfigError(
                f"setting 'broker_timeout_s' must be a positive number of seconds,"
                f" got {self.broker_timeout_s!r}"
            )
        if self.repair not in ("report", "mend"):
            raise ConfigError(f"setting 'repair' must be report or mend, got {self.repair!r}")
        if self.security_protocol not in _PROTOCOLS:
            raise ConfigError(
                f"setting 'security_protocol' must be one of {', '.join(_PROTOCOLS)},"
                f" got {self.security_protocol!r}"
            )
        needed = _PROTOCOLS[self.security_protocol]
        if self.security_protocol == "SASL_SSL" and not self.sasl_password_file:
            needed = (*needed, "sasl_password")
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"security_protocol {self.security_protocol} needs the setting(s)"
                f" {', '.join(missing)} (NOTICE_BUS_{missing[0].upper()}, or notice-bus pki's"
                " settings file)"
            )

    @property
    def secured(self) -> bool:
        return self.security_protocol != "PLAINTEXT"

    def password(self) -> str:
        """The SASL password, from ``sasl_password`` or else ``sasl_password_file``."""
        if self.sasl_password or not self.sasl_password_file:
            return self.sasl_password
        try:
            return Path(self.sasl_password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read sasl_password_file {self.sasl_password_file}: {exc.strerror}"
            ) from exc

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def overlay(self, config_file: str | Path) -> Settings:
        """A copy with the settings of ``config_file`` on top: a principal's credentials (the
        file ``notice-bus pki`` writes for it) over a deployment's settings."""
        return self.with_(**_coerce(_read_file(Path(config_file)), source=str(config_file)))

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults < config file < environment < ``overrides`` (``None`` values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or env.get("NOTICE_BUS_CONFIG")
        if path is None and Path("notice-bus.toml").is_file():
            path = "notice-bus.toml"
        if path is not None:
            values.update(_read_file(Path(path)))
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            values["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        for f in fields(cls):
            key = f"NOTICE_BUS_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(values, source=str(path) if path else "environment"))


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; a missing or malformed file is a ConfigError naming ``what``."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def _read_file(path: Path) -> dict[str, Any]:
    data = read_toml(path, "config file")
    # Accept both a flat file and one whose keys sit under [notice-bus].
    section = data.get("notice-bus", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [notice-bus] must be a table")
    return dict(section)


def _coerce(values: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(Settings)}
    out: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(f"{source}: unknown setting {name!r}; known: {', '.join(known)}")
        kind = type(getattr(Settings(), name))
        try:
            out[name] = _boolean(raw) if kind is bool else kind(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: setting {name!r} must be {kind.__name__}, got {raw!r}"
            ) from exc
    return out


def _boolean(raw: Any) -> bool:
    """``true``/``false`` (yes/no, on/off, 1/0) from a file or the environment."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(raw)
