"""HQ's keyring on Kafka: HQ publishes the keyring the offline root signed, every bureau reads it.

The topic (``_keyring``, compacted, one record per version) is written by HQ alone, but that is
not what makes it trusted: a bureau takes only a keyring the root key it was configured with
signed, and never one older than the newest it has seen (a replayed old keyring would undo a
revocation). A bureau that meets a key it does not know reads the topic again, at most once per
:data:`REFRESH_EVERY_S`, so a rotation reaches running adapters without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, ConfigError, KeyringInvalid, SignatureInvalid
from notice_bus.runtime.kafka import explain, kafka_config, retry_transient, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.trust.ack_mac import AckSigner, signer_for
from notice_bus.trust.keyring import Keyring
from notice_bus.trust.keys import read_private_key, read_public_key
from notice_bus.trust.signing import Signer, Verifier
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.keyring")
REFRESH_EVERY_S = 5.0
_READ_TIMEOUT_S = 30.0


def publish_keyring(settings: Settings, document: bytes, root: Ed25519PublicKey) -> Keyring:
    """Put ``document`` (a keyring file's bytes) on the topic, after checking that ``root``
    signed it; returns the keyring."""
    keyring = Keyring.from_bytes(document, root)
    producer = KafkaProducer(**kafka_config(settings, "notice-bus-keyring", producer=True))
    topic = TopicNames(settings.topic_prefix).keyring
    key = f"v{keyring.version:08d}".encode()
    try:
        retry_transient(
            settings,
            "publishing the keyring",
            lambda: producer.send(topic, key=key, value=document).get(timeout=30),
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"publishing the keyring on {topic}: {explain(exc)}") from exc
    finally:
        producer.close()
    return keyring


class KeyringFeed:
    """The newest keyring on the topic that ``settings.root_key_file``'s root signed."""

    def __init__(self, settings: Settings) -> None:
        if not settings.root_key_file:
            raise ConfigError("no root_key_file: the keyring's root public key is needed")
        self._settings = settings
        self._root = read_public_key(settings.root_key_file)
        self._topic = TopicNames(settings.topic_prefix).keyring
        self._keyring: Keyring | None = None
        self._read_at = -REFRESH_EVERY_S
        self._lock = threading.Lock()

    def current(self) -> Keyring:
        if self._keyring is None:
            self.refresh()
        assert self._keyring is not None
        return self._keyring

    def refresh(self, *, if_due: bool = False) -> bool:
        """Read the topic again; True if a newer keyring came. ``if_due``: not more often
        than once per REFRESH_EVERY_S."""
        with self._lock:
            if if_due and time.monotonic() - self._read_at < REFRESH_EVERY_S:
                return False
            self._read_at = time.monotonic()
            newest = self._newest(self._read_all())
            if newest is None:
                if self._keyring is None:
                    raise ConfigError(
                        f"no keyring signed by {self._settings.root_key_file} on topic"
                        f" {self._topic}: HQ publishes it when it starts signing"
                    )
                return False
            if self._keyring is not None and newest.version <= self._keyring.version:
                return False
            self._keyring = newest
            log.info("keyring version %d: %d keys", newest.version, len(newest.entries))
            return True

    def _newest(self, documents: list[tuple[Any, bytes]]) -> Keyring | None:
        best: Keyring | None = None
        for where, document in documents:
            try:
                keyring = Keyring.from_bytes(document, self._root)
            except KeyringInvalid as exc:  # not ours: said, never taken
                log.error("keyring topic: skipped %s: %s", where, exc)
                continue
            if best is None or keyring.version > best.version:
                best = keyring
        return best

    def _read_all(self) -> list[tuple[Any, bytes]]:
        try:
            consumer = KafkaConsumer(
                **kafka_config(self._settings, "notice-bus-keyring"), enable_auto_commit=False
            )
        except KafkaError as exc:
            raise unreachable(self._settings, exc) from exc
        try:
            tp = TopicPartition(self._topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            out: list[tuple[Any, bytes]] = []
            deadline = time.monotonic() + _READ_TIMEOUT_S
            while consumer.position(tp) < end and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    out += [(f"offset {r.offset}", r.value) for r in records if r.value]
            return out
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"reading the keyring topic {self._topic}: {explain(exc)}"
            ) from exc
        finally:
            consumer.close()


class NoticeChecker:
    """Checks HQ's signature on a notice record; a key it does not know makes it read the
    keyring topic again (at most every REFRESH_EVERY_S) before it says no."""

    def __init__(self, feed: KeyringFeed) -> None:
        self._feed = feed
        self._verifier: Verifier | None = None  # read with the first record: HQ may start later

    def problem(self, record: Any) -> str | None:
        """None if ``record`` is signed by a key valid at its append time, else why not."""
        try:
            if self._verifier is None:
                self._verifier = Verifier(self._feed.current())
            self._check(record)
            return None
        except SignatureInvalid as first:
            try:
                if not self._feed.refresh(if_due=True):
                    return first.reason
            except (BrokerUnavailable, ConfigError) as exc:
                log.warning("keyring not read again: %s", exc)
                return first.reason
            self._verifier = Verifier(self._feed.current())
            try:
                self._check(record)
                return None
            except SignatureInvalid as again:
                return again.reason

    def _check(self, record: Any) -> None:
        assert self._verifier is not None
        self._verifier.verify(record.key, record.value, record.headers, record.timestamp)


def hq_signer(settings: Settings) -> Signer | None:
    """HQ's signer, from ``signing_key_file``, once its keyring (``keyring_file``) is on the
    topic and names that key as HQ's current one; None where nothing is signed (PLAINTEXT
    without a key). A secured HQ without a key is refused: its bureaus would reject all."""
    if not settings.signing_key_file:
        if settings.secured:
            raise ConfigError(
                "a secured HQ signs every notice: set signing_key_file and keyring_file"
                " (notice-bus pki writes both)"
            )
        return None
    signer = Signer(read_private_key(settings.signing_key_file))
    if not (settings.keyring_file and settings.root_key_file):
        raise ConfigError("signing_key_file needs keyring_file and root_key_file beside it")
    try:
        document = Path(settings.keyring_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read keyring_file {settings.keyring_file}: {exc}") from exc
    keyring = publish_keyring(settings, document, read_public_key(settings.root_key_file))
    current = keyring.current("hq")
    if current.kid != signer.kid:
        raise ConfigError(
            f"HQ's signing key {signer.kid} ({settings.signing_key_file}) is not HQ's current"
            f" key in keyring version {keyring.version} ({current.kid}): rotate with"
            " `notice-bus keys rotate`, or point signing_key_file at the current key"
        )
    return signer


def bureau_trust(
    settings: Settings, countries: list[str]
) -> tuple[NoticeChecker | None, dict[str, AckSigner | None]]:
    """What a bureau's adapter trusts and signs with: a checker of HQ's signatures (from
    ``root_key_file``) and each country's acknowledgement MAC (from ``ack_key_file``). A
    secured bureau must have both; a PLAINTEXT one without them checks and signs nothing."""
    if settings.root_key_file:
        checker: NoticeChecker | None = NoticeChecker(KeyringFeed(settings))
    elif settings.secured:
        raise ConfigError(
            "a secured bureau checks HQ's signatures: set root_key_file (notice-bus pki writes it)"
        )
    else:
        checker = None
    return checker, {cc: signer_for(settings, cc) for cc in countries}
