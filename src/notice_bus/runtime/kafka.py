"""Kafka clients as every role makes them: their configuration, the messages that say where
we connect and what went wrong (in words, not kafka-python's dumps), the retry of transient
errors, and the few calls kafka-python 3.0 has no public API for, each isolated here."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, TypeVar

from kafka import KafkaAdminClient
from kafka import errors as kerr
from kafka.errors import KafkaError, KafkaTimeoutError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay

from notice_bus.errors import AccessDenied, BrokerUnavailable, ConfigError
from notice_bus.runtime.retry import backoff, is_retriable
from notice_bus.runtime.settings import Settings

log = logging.getLogger("notice_bus.kafka")
_T = TypeVar("_T")


#: What every producer sends with (see :func:`kafka_config`).
PRODUCER_DURABILITY: Mapping[str, Any] = MappingProxyType(
    {"acks": "all", "enable_idempotence": True}
)


def kafka_config(settings: Settings, client_id: str, *, producer: bool = False) -> dict[str, Any]:
    """Options shared by every Kafka client we create; ``producer`` adds a producer's own.

    ``broker_timeout_s`` is mapped onto kafka-python's options here and nowhere else: how long
    a client waits for a first answer from the cluster (``bootstrap_timeout_ms``, whose 30 s
    default was the silent wait of every command without a broker), and how long a
    producer's ``send`` may block for metadata or buffer room (``max_block_ms``). Request
    time-outs keep kafka-python's defaults: a consumer's group join and a creation of
    hundreds of topics may take longer than a connection should.

    Every producer is idempotent and waits for every in-sync replica (``acks="all"``): with
    the topics' ``min.insync.replicas`` a write is acknowledged only once it survives a
    broker's loss, and a send retried across a leader change is written once. kafka-python 3
    defaults to both, but silently drops idempotence when a caller passes a conflicting
    option; said here, explicitly, such a conflict raises instead. Callers take them from
    here, and tests/test_producers.py holds every producer in ``src`` to that."""
    timeout_ms = int(settings.broker_timeout_s * 1000)
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": client_id,
        "bootstrap_timeout_ms": timeout_ms,
    }
    if producer:
        config["max_block_ms"] = timeout_ms
        config |= PRODUCER_DURABILITY
    config |= security_config(settings)
    if settings.secured:
        from notice_bus.runtime.identity import check_identity

        check_identity(settings)  # a refused identity said in words, once per process
    return config


def security_config(settings: Settings) -> dict[str, Any]:
    """kafka-python's options for ``settings``' identity: none for PLAINTEXT; TLS checked
    against ``ssl_cafile`` (host names too); a client certificate for SSL, a SCRAM user for
    SASL_SSL. Every client gets them here, so no role can connect without them."""
    if not settings.secured:
        return {}
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_password_file"):
        path = getattr(settings, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"setting {name}: cannot read {path}")
    config: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "ssl_cafile": settings.ssl_cafile,
        "ssl_check_hostname": True,
    }
    if settings.security_protocol == "SSL":
        config["ssl_certfile"] = settings.ssl_certfile
        config["ssl_keyfile"] = settings.ssl_keyfile
    else:
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.password()
    return config


def connecting(settings: Settings) -> None:
    """Say, at INFO, which cluster this process connects to: once per address, so that a
    service's many clients and reconnections do not repeat it."""
    from notice_bus.runtime.identity import identity_of

    with _ANNOUNCED_LOCK:
        first = settings.bootstrap_servers not in _ANNOUNCED
        _ANNOUNCED.add(settings.bootstrap_servers)
    if first:
        log.info(
            "connecting to Kafka at %s as %s", settings.bootstrap_servers, identity_of(settings)
        )


_ANNOUNCED: set[str] = set()
_ANNOUNCED_LOCK = threading.Lock()


def unreachable(settings: Settings, exc: KafkaError) -> BrokerUnavailable:
    """The error for a Kafka client that could not be created: it names the address and,
    when the cluster did not answer in time, the setting that bounds the wait."""
    where = settings.bootstrap_servers
    if isinstance(exc, KafkaTimeoutError):
        return BrokerUnavailable(
            f"no Kafka broker answered at {where} within {settings.broker_timeout_s:g} s"
            " (setting broker_timeout_s, NOTICE_BUS_BROKER_TIMEOUT_S)"
            + ("" if settings.secured else "; if that cluster is secured, set security_protocol")
        )
    return BrokerUnavailable(f"cannot reach Kafka at {where}: {explain(exc)}")


# What a Kafka error means for the person reading the message, most specific first.
# kafka-python's own texts can be the repr of whole metadata responses (a partition list
# with error codes and leader ids), which says nothing to an operator.
_MEANINGS: tuple[tuple[type[KafkaError], str], ...] = (
    (kerr.LeaderNotAvailableError, "no leader yet for a partition (the broker is starting)"),
    (kerr.NotLeaderForPartitionError, "a partition's leader moved (the cluster is electing one)"),
    (kerr.NotEnoughReplicasError, "not enough in-sync replicas to accept a write yet"),
    (kerr.NotEnoughReplicasAfterAppendError, "not enough in-sync replicas to accept a write yet"),
    (kerr.CoordinatorNotAvailableError, "no group coordinator yet (the broker is starting)"),
    (kerr.NodeNotReadyError, "the broker is not ready yet (it is starting or reconnecting)"),
    (kerr.KafkaConnectionError, "the connection to the broker failed"),
    (kerr.UnknownTopicOrPartitionError, "a topic or partition is not known to the broker yet"),
    (kerr.InvalidMetadataError, "the cluster's metadata is not settled yet (a broker restarted)"),
    (kerr.KafkaTimeoutError, "the broker did not answer in time"),
    (kerr.RequestTimedOutError, "the broker did not answer in time"),
    (kerr.TopicAuthorizationFailedError, "the cluster's ACLs forbid this topic to this client"),
    (kerr.GroupAuthorizationFailedError, "the cluster's ACLs forbid this group to this client"),
)
_DETAIL_CHARS = 200


def explain(exc: KafkaError) -> str:
    """``exc`` in words for people: what it means, and kafka-python's name for it (to search
    for); kafka-python's own text only when we have no words for it, cut short."""
    name = type(exc).__name__
    for kind, meaning in _MEANINGS:
        if isinstance(exc, kind):
            return f"{meaning} [{name}]"
    detail = " ".join(str(exc).split()).removeprefix(f"{name}:").strip()  # kafka-python names it
    if len(detail) > _DETAIL_CHARS:
        detail = detail[:_DETAIL_CHARS] + "…"
    return f"{name}: {detail}" if detail else name


def retry_transient(settings: Settings, what: str, call: Callable[[], _T]) -> _T:
    """``call()``, again while it raises a retriable Kafka error (a partition without a leader
    right after a broker restarts, say), for up to ``broker_timeout_s``; each retry is logged at
    WARNING in words. The last error, or any other, is raised as it came."""

    def say(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        words = explain(exc) if isinstance(exc, KafkaError) else repr(exc)
        log.warning("%s: %s; retrying in %g s", what, words, wait)

    return Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, KafkaError) and is_retriable(exc)),
        stop=stop_after_delay(settings.broker_timeout_s),
        wait=backoff(0.25, 2.0, 0.0),
        before_sleep=say,
        reraise=True,
    )(call)


def keep_trying(
    settings: Settings, what: str, connect: Callable[[], _T], stop: threading.Event
) -> _T | None:
    """``connect()`` until it returns, or None once ``stop`` is set: what a long-running
    service does while its broker is away. Each BrokerUnavailable is logged at WARNING with
    the address and the next wait, which doubles from 1 s to 30 s. ``stop`` is looked at
    between attempts: one attempt lasts up to ``broker_timeout_s``."""
    wait = _RETRY_FIRST_S
    while not stop.is_set():
        connecting(settings)
        try:
            return connect()
        except BrokerUnavailable as exc:
            log.warning("%s: %s; trying again in %g s", what, exc, wait)
        if stop.wait(wait):
            break
        wait = min(wait * 2, _RETRY_MAX_S)
    return None


_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0


def announce_topics(producer: Any, topics: Iterable[str]) -> None:
    """Tell ``producer`` of every topic it is about to write to, so that one metadata request
    covers them all. kafka-python otherwise asks for each new topic on its first send and
    waits for the answer: ~0.1 s a topic, 20 s for a first broadcast to 196 countries.
    Uses the producer's sender (kafka-python 3.0 has no public call for this); without one,
    the sends ask topic by topic as before."""
    sender = getattr(producer, "_sender", None)
    add = getattr(sender, "add_topic", None)
    if add is None:
        return
    for topic in topics:
        add(topic)


class _Cork:
    """Stands in for a producer's ``_sender.wakeup``: passes wake-ups on, except inside
    :func:`corked` blocks, where it notes them for the block's end."""

    def __init__(self, wakeup: Callable[[], None]) -> None:
        self.real = wakeup
        self.depth = 0
        self.missed = False

    def wakeup(self) -> None:
        with _CORKS:  # not lost to a block ending meanwhile
            if self.depth:
                self.missed = True
                return
        self.real()


_CORKS = threading.Lock()


@contextmanager
def corked(producer: Any) -> Iterator[None]:
    """Sends inside the block do not wake the producer's network thread; it is woken once,
    when the block ends. kafka-python 3.0 wakes it (a socket write, then a thread switch and a
    drain) at each send that starts a batch, so every send of a fan-out (HQ's broadcast to 196
    countries, a hub's acknowledgements) paid for one: corked, a send costs ~40% less here.
    Safe to nest and to use from several threads; without a sender, it does nothing."""
    sender: Any = getattr(producer, "_sender", None)
    if getattr(sender, "wakeup", None) is None:
        yield
        return
    with _CORKS:
        cork = sender.__dict__.get("_notice_bus_cork")
        if cork is None:
            cork = sender._notice_bus_cork = _Cork(sender.wakeup)
            sender.wakeup = cork.wakeup
        cork.depth += 1
    try:
        yield
    finally:
        with _CORKS:
            cork.depth -= 1
            wake = cork.depth == 0 and cork.missed
            if wake:
                cork.missed = False
        if wake:
            cork.real()


def admin_client(settings: Settings) -> Any:
    """A connected admin client; BrokerUnavailable (see :func:`unreachable`) without one."""
    connecting(settings)
    try:
        return KafkaAdminClient(**kafka_config(settings, "notice-bus-admin"))
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc


#: How long a broker holds a consumer's fetch when it has no data for it. A consumer has one
#: fetch in flight per broker, and leaves out of it the partitions whose records it still
#: holds: with Kafka's 500 ms, a fetch for a lane's idle partitions (reminders) held back the
#: next read of its busy one, up to half a second per megabyte of a bootstrap (kafka-python's
#: debug log: an empty FetchResponse after 521 ms, the notices partition "skipped" behind it).
#: Data arriving ends the wait at once, so a shorter one costs live traffic nothing; an idle
#: consumer pays one small request per broker every 100 ms. The adapter's and the tracker's.
FETCH_WAIT_MS = 100


def poll_or_none(consumer: Any, wait_ms: int, who: str) -> dict[Any, list[Any]] | None:
    """``consumer.poll``, or None if it failed. kafka-python 3.0 raises from poll when it
    cannot reach the coordinator (say, a broker restarting); the caller's loop, and with it the
    adapter or the tracker, must outlive that. Positions are unchanged: the next poll goes on
    from where this one would have."""
    try:
        return dict(consumer.poll(timeout_ms=wait_ms))
    except kerr.AuthorizationError as exc:  # revoked while running: waiting cannot mend it
        raise AccessDenied(
            f"{who}: the cluster refuses this client now ({explain(exc)}): its grants were"
            " revoked or never given; see `notice-bus acl show`"
        ) from exc
    except KafkaError as exc:
        logging.getLogger("notice_bus").warning(
            "%s: cannot poll the broker, trying again: %s", who, exc
        )
        time.sleep(wait_ms / 1000)  # what the poll would have waited
        return None


def failure(settings: Settings, exc: KafkaError, doing: str, resource: str = "") -> Exception:
    """The error to raise for ``exc``, met while ``doing``: the cluster's ACLs refusing is
    AccessDenied (waiting cannot mend it, and it is never an outage), anything else
    BrokerUnavailable."""
    from notice_bus.runtime.identity import identity_of  # identity imports this module

    if isinstance(exc, kerr.AuthorizationError):
        who = identity_of(settings)
        return AccessDenied(
            f"{doing}: the cluster's ACLs refuse {who} ({explain(exc)})",
            principal=who,
            resource=resource,
        )
    return BrokerUnavailable(f"{doing}: {explain(exc)}")
