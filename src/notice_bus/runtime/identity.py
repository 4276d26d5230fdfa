"""Is this process who it says it is? A check, before its first client, that the cluster
accepts its credentials, so that a refusal is said at once and in words.

kafka-python 3.0 treats a refused password or certificate like an unreachable broker: it tries
again until ``bootstrap_timeout_ms`` and then raises "Unable to bootstrap", a time-out, with the
real cause only in its log. The check tries one client in a thread and listens to that log
(kafka-python has no public hook for a connection's failure): the first refusal it hears ends
the wait, as :class:`~notice_bus.errors.AuthenticationFailed` or a ConfigError naming the cause.
A cluster that does not answer at all is BrokerUnavailable, as it would be for the caller.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from notice_bus.errors import (
    AccessDenied,
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigError,
    NoticeBusError,
)
from notice_bus.runtime.settings import Settings

#: The logger whose "Bootstrap connection to ... failed: <exception>" warnings carry the cause.
KAFKA_CONNECTIONS_LOGGER = "kafka.net.manager"
_CHECKED: set[tuple[str, ...]] = set()
_LOCK = threading.Lock()
_ATTEMPTS = itertools.count(1)
#: A broker refuses credentials by answering, then closing the connection; kafka-python 3.0
#: drops an answer that arrives with the close ("socket disconnected", about one connection in
#: three here, more under load), and its growing backoff left too few tries in the window: a
#: refused user was taken for an unreachable broker. Quick retries, and CLOSES closes in a row
#: of a connection the broker accepted, are a refusal, as Kafka's Java client also reads them.
_QUICK_RETRIES = {"reconnect_backoff_ms": 50, "reconnect_backoff_max_ms": 400}
CLOSES = 3


def check_identity(settings: Settings) -> None:
    """Raise what the cluster says of ``settings``' credentials, if it refuses them; once per
    process and identity once accepted. Nothing to check for PLAINTEXT."""
    if not settings.secured:
        return
    who = (
        settings.bootstrap_servers,
        settings.security_protocol,
        settings.sasl_username,
        hashlib.sha256(settings.password().encode()).hexdigest(),  # kept in memory only
        settings.ssl_certfile,
    )
    with _LOCK:
        if who in _CHECKED:
            return
        refusal = _try(settings)
        if refusal is None:
            _CHECKED.add(who)
            return
    raise refusal


def identity_of(settings: Settings) -> str:
    """Who ``settings`` claim to be, in words: the SCRAM user or the certificate file."""
    if settings.security_protocol == "SASL_SSL":
        return f"user {settings.sasl_username} ({settings.sasl_mechanism})"
    if settings.security_protocol == "SSL":
        return f"the certificate {settings.ssl_certfile}"
    return "nobody (PLAINTEXT)"


def refusal_of(settings: Settings, exc: BaseException) -> NoticeBusError | None:
    """The error to raise for ``exc``, a connection's failure, if it is a refusal."""
    where, who = settings.bootstrap_servers, identity_of(settings)
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, SaslAuthenticationFailedError) and settings.security_protocol == "SSL":
        return ConfigError(
            f"Kafka at {where} asks for a SASL user at that port, and security_protocol is SSL:"
            " use the cluster's mutual-TLS port, or security_protocol SASL_SSL"
        )
    if isinstance(exc, SaslAuthenticationFailedError):
        return AuthenticationFailed(
            f"Kafka at {where} refused {who}: a wrong password, or a user it does not know"
            f" (never issued, or revoked) [{name}]"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return ConfigError(f"Kafka at {where} does not offer {settings.sasl_mechanism} [{name}]")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return AuthenticationFailed(
            f"the broker at {where} shows a certificate that ssl_cafile"
            f" {settings.ssl_cafile} did not sign: the wrong CA file, or not our cluster"
        )
    if "ALERT" in text and "CERTIFICATE" in text.upper():
        return AuthenticationFailed(
            f"Kafka at {where} refused {who}: a certificate it does not trust (another CA,"
            f" expired), or none where it requires one [{text.split(']')[0].strip('[')}]"
        )
    if name == "InvalidReceiveError" or "WRONG_VERSION_NUMBER" in text:
        return ConfigError(
            f"Kafka at {where} does not speak security_protocol {settings.security_protocol}"
            " at that port: check the address and the setting"
        )
    return None


class _Listen(logging.Handler):
    """Keeps the first refusal among the connection failures kafka-python logs."""

    def __init__(self, settings: Settings, heard: threading.Event, threads: set[str]) -> None:
        super().__init__(logging.WARNING)
        self.settings = settings
        self.threads = threads  # ours: another client's failures (one given up on, still
        # retrying in its own thread) are not this identity's
        self.heard = heard
        self.refusal: NoticeBusError | None = None
        self.failures: list[BaseException] = []  # each connection's failure counted once
        self.closes = 0  # connections in a row the broker closed while they were set up

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName not in self.threads or self.refusal is not None:
            return
        args: Any = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if not isinstance(arg, BaseException) or any(arg is seen for seen in self.failures):
                continue
            self.failures.append(arg)
            self.refusal = refusal_of(self.settings, arg)
            if self.refusal is None and _closed_by_broker(arg):
                self.closes += 1
                if self.closes >= CLOSES:
                    self.refusal = closed_on(self.settings, self.closes)
            elif self.refusal is None:
                self.closes = 0
            if self.refusal is not None:
                self.heard.set()


def _closed_by_broker(exc: BaseException) -> bool:
    """The broker closed a connection it had accepted, before the connection was ready."""
    return isinstance(exc, KafkaConnectionError) and "socket disconnected" in str(exc)


def closed_on(settings: Settings, closes: int) -> AuthenticationFailed:
    """The refusal a broker says by closing every new connection while it is set up."""
    return AuthenticationFailed(
        f"Kafka at {settings.bootstrap_servers} refused {identity_of(settings)}: it closed"
        f" {closes} connections in a row from it while they were being set up, so it does not"
        " accept these credentials (a wrong password, a user it does not know or has revoked,"
        " a certificate it does not trust)"
    )


def _try(settings: Settings) -> NoticeBusError | None:
    from notice_bus.runtime.kafka import kafka_config, security_config, unreachable

    done = threading.Event()
    client_id = f"notice-bus-id-{next(_ATTEMPTS)}"
    listen = _Listen(settings, done, {client_id, f"kafka-io-{client_id}"})
    logger = logging.getLogger(KAFKA_CONNECTIONS_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(listen)
    logger.setLevel(logging.WARNING)  # the CLI silences kafka-python's logs; we need these
    logger.propagate = False  # heard here, not printed

    failed: list[KafkaError] = []

    def attempt() -> None:
        try:
            plain = kafka_config(settings.with_(security_protocol="PLAINTEXT"), client_id)
            KafkaAdminClient(**plain | security_config(settings) | _QUICK_RETRIES).close()
        except KafkaError as exc:
            failed.append(exc)
        finally:
            done.set()

    try:
        threading.Thread(target=attempt, name=client_id, daemon=True).start()
        done.wait(settings.broker_timeout_s + 5)
    finally:
        logger.removeHandler(listen)
        logger.setLevel(level)
        logger.propagate = propagate
    if listen.refusal is None and failed:
        # A refusal may end the client before its log is heard: kafka-python 3 keeps the
        # first SASL failure and raises it from the next bootstrap attempt.
        return refusal_of(settings, failed[0]) or unreachable(settings, failed[0])
    return listen.refusal


def check_access(settings: Settings, topics: list[str], group: str | None) -> None:
    """Raise AccessDenied, naming the topic or group and who we are, unless the cluster lets
    us read every one of ``topics`` and use ``group`` (if any). A consumer would not say:
    kafka-python leaves a forbidden topic out of its assignment with a warning, and polls
    nothing."""
    from notice_bus.runtime.kafka import admin_client, explain, retry_transient

    who = identity_of(settings)
    admin = admin_client(settings)
    try:
        for found in admin.describe_topics(topics):
            allowed = found.get("authorized_operations") or ()
            if found["error_code"] == _TOPIC_AUTHORIZATION_FAILED or "READ" not in allowed:
                raise AccessDenied(
                    f"{who} may not read topic {found['name']} at {settings.bootstrap_servers}:"
                    " the cluster's ACLs do not grant it (a bureau reads only its own"
                    " country's topics; check --countries, or ask HQ's operators to run"
                    " `notice-bus acl apply`)",
                    principal=who,
                    resource=found["name"],
                )
        if group is None:  # a reader that assigns itself its partitions, in no group
            return
        try:
            # A new cluster has no group coordinator for its first seconds: wait for one.
            retry_transient(settings, "checking the group", lambda: admin.describe_groups([group]))
        except GroupAuthorizationFailedError as exc:
            raise AccessDenied(
                f"{who} may not use consumer group {group} at {settings.bootstrap_servers}:"
                " the cluster's ACLs do not grant it",
                principal=who,
                resource=group,
            ) from exc
    except KafkaError as exc:
        raise BrokerUnavailable(f"checking access to {', '.join(topics)}: {explain(exc)}") from exc
    finally:
        admin.close()


_TOPIC_AUTHORIZATION_FAILED = 29
