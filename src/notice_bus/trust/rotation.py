"""``notice-bus keys rotate``: HQ's next signing key, in a keyring the offline root signs.

A rotation retires the current key: what it signed before stays valid (the compacted notices
topics keep old versions for bureaus that join later), what is appended after is not. A
revocation (``--revoke``, a key that may have leaked) invalidates everything the key ever
signed, so HQ then signs again the newest record of every notice in every country's topic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, ConfigError
from notice_bus.runtime.kafka import explain, kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.trust import keys
from notice_bus.trust.keyring import Keyring, read_keyring, write_keyring
from notice_bus.trust.keyring_topic import publish_keyring
from notice_bus.trust.signing import KID_HEADER, Signer
from notice_bus.wire.topics import TopicNames, registered_countries


def rotate(
    settings: Settings, root_key: str | Path, *, revoke: bool = False
) -> tuple[Keyring, int]:
    """Make HQ's next key (written over ``signing_key_file``), publish the new keyring, and
    after a revocation sign the notices again; (the keyring, records signed again)."""
    if not (settings.signing_key_file and settings.keyring_file and settings.root_key_file):
        raise ConfigError("keys rotate needs signing_key_file, keyring_file and root_key_file")
    root = keys.read_private_key(root_key)
    if keys.key_id(root.public_key()) != keys.key_id(keys.read_public_key(settings.root_key_file)):
        raise ConfigError(f"{root_key} is not the root whose public key is root_key_file")
    keyring = read_keyring(settings.keyring_file, root.public_key())
    old = keyring.current("hq").kid
    new = keys.generate_private_key()
    now = int(time.time() * 1000)
    if revoke:
        keyring = keyring.revoke(old, now).add(new.public_key(), "hq", now)
    else:
        keyring = keyring.rotate(new.public_key(), "hq", now)
    write_keyring(settings.keyring_file, keyring, root)
    publish_keyring(settings, Path(settings.keyring_file).read_bytes(), root.public_key())
    keys.write_private_key(settings.signing_key_file, new)  # HQ signs with it from now on
    signed = resign(settings, Signer(new), old) if revoke else 0
    return keyring, signed


def resign(settings: Settings, signer: Signer, kid: str) -> int:
    """Send again, signed by ``signer``, the newest record of each notice whose signature is
    by ``kid``, in every registered country's notices topic; returns how many."""
    names = TopicNames(settings.topic_prefix)
    topics = [names.notices(cc) for cc in registered_countries(settings)]
    if not topics:
        return 0
    try:
        consumer = KafkaConsumer(**kafka_config(settings, "notice-bus-resign"))
        producer = KafkaProducer(**kafka_config(settings, "notice-bus-resign", producer=True))
    except KafkaError as exc:
        raise BrokerUnavailable(f"signing again: {explain(exc)}") from exc
    try:
        newest = _newest(consumer, topics)
        futures = [
            producer.send(r.topic, key=r.key, value=r.value, headers=signer.headers(r.key, r.value))
            for r in newest.values()
            if dict(r.headers or ()).get(KID_HEADER, b"").decode(errors="replace") == kid
        ]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=60)
        return len(futures)
    except KafkaError as exc:
        raise BrokerUnavailable(f"signing again: {explain(exc)}") from exc
    finally:
        consumer.close()
        producer.close()


def _newest(consumer: Any, topics: list[str]) -> dict[tuple[str, bytes], Any]:
    """The newest record of each key of ``topics``, read to the ends seen at the start."""
    from kafka import TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    newest: dict[tuple[str, bytes], Any] = {}
    deadline = time.monotonic() + 120
    while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                if r.key is not None and r.value is not None:
                    newest[(r.topic, r.key)] = r
    return newest
