"""HQ's keyring (validity, rotation, the root's signature, strict reading) and the key files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from notice_bus.errors import ConfigError, KeyringInvalid
from notice_bus.trust.keyring import DOMAIN, Keyring, read_keyring, write_keyring
from notice_bus.trust.keys import (
    generate_private_key,
    generate_secret,
    key_id,
    raw_public_key,
    read_private_key,
    read_public_key,
    read_secret,
    write_private_key,
    write_public_key,
    write_secret,
)
from tests.factories import T0, T1, T2


@pytest.fixture
def root() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture
def ring() -> Keyring:
    """HQ's key, rotated once; a bureau's key, revoked."""
    ring = Keyring.empty().add(generate_private_key().public_key(), "hq", T0)
    ring = ring.add(generate_private_key().public_key(), "bureau-FR", T0)
    ring = ring.rotate(generate_private_key().public_key(), "hq", T1)
    return ring.revoke(ring.current("bureau-FR").kid, T2)


def sign_body(body: Any, root: Ed25519PrivateKey) -> bytes:
    """A document around any body, signed by ``root`` as the module does it."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = base64.b64encode(root.sign(DOMAIN + canonical)).decode()
    doc = {"keyring": body, "root_kid": key_id(root.public_key()), "signature": signature}
    return json.dumps(doc).encode()


def body_of(ring: Keyring, root: Ed25519PrivateKey) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ring.to_bytes(root))["keyring"]
    return body


def test_rotation_keeps_the_old_key_for_earlier_records() -> None:
    old, new = generate_private_key().public_key(), generate_private_key().public_key()
    ring = Keyring.empty().add(old, "hq", T0)
    rotated = ring.rotate(new, "hq", T1)
    assert rotated.version == ring.version + 1 and rotated.issued_at_ms == T1
    assert rotated.current("hq").kid == key_id(new)
    assert rotated.is_valid_at(key_id(old), T1 - 1) is None
    assert rotated.is_valid_at(key_id(old), T1) is not None
    assert rotated.is_valid_at(key_id(new), T1) is None
    assert rotated.is_valid_at(key_id(new), T1 - 1) is not None


def test_current_is_the_newest_active_key() -> None:
    a, b, c = (generate_private_key().public_key() for _ in range(3))
    ring = Keyring.empty().add(a, "hq", T0).add(b, "hq", T1).add(c, "tracker", T2)
    assert ring.current("hq").kid == key_id(b)
    assert ring.retire(key_id(b), T2).current("hq").kid == key_id(a)


def test_changes_leave_the_keyring_they_were_made_on_alone(ring: Keyring) -> None:
    kid = ring.current("hq").kid
    retired, before = ring.retire(kid, T2).entry(kid), ring.entry(kid)
    assert retired is not None and retired.valid_until_ms == T2
    assert before is not None and before.valid_until_ms is None


def test_validity_reasons_are_in_words(ring: Keyring) -> None:
    old, new = (e.kid for e in ring.entries if e.owner == "hq")
    revoked = ring.entries[1].kid
    assert ring.is_valid_at(old, T0) is None
    assert ring.is_valid_at(old, T1 + 1500) == (
        f"key {old} was retired at 2026-12-01T00:00:00Z;"
        " this record was appended at 2026-12-01T00:00:01.500Z"
    )
    assert ring.is_valid_at(revoked, T0) == f"key {revoked} was revoked at 2026-12-05T10:00:00Z"
    assert str(ring.is_valid_at(new, T0)).startswith(
        f"key {new} is valid from 2026-12-01T00:00:00Z"
    )
    assert (
        ring.is_valid_at("0" * 16, T1)
        == "key 0000000000000000 is unknown to the keyring (version 4)"
    )


def test_refused_changes(ring: Keyring) -> None:
    hq = ring.current("hq")
    with pytest.raises(KeyringInvalid, match="already"):
        ring.add(hq.public_key, "hq", T2)
    with pytest.raises(KeyringInvalid, match="already"):
        ring.rotate(hq.public_key, "hq", T2)
    with pytest.raises(KeyringInvalid, match="retired already"):
        ring.retire(ring.entries[0].kid, T2)
    with pytest.raises(KeyringInvalid, match="revoked already"):
        ring.revoke(ring.entries[1].kid, T2)
    with pytest.raises(KeyringInvalid, match="not in the keyring"):
        ring.retire("0" * 16, T2)
    with pytest.raises(KeyringInvalid, match="no key of 'bureau-FR'"):
        ring.current("bureau-FR")


def test_the_keyring_survives_its_json(ring: Keyring, root: Ed25519PrivateKey) -> None:
    data = ring.to_bytes(root)
    assert Keyring.from_bytes(data, root.public_key()) == ring
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["root_kid"] == key_id(root.public_key())
    assert (
        base64.b64decode(doc["keyring"]["entries"][0]["public_key"]) == ring.entries[0].public_key
    )


def test_an_altered_keyring_is_refused(ring: Keyring, root: Ed25519PrivateKey) -> None:
    data = ring.to_bytes(root)
    at = data.index(b'"owner":"bureau-FR"') + len(b'"owner":"bureau-')
    tampered = data[:at] + b"D" + data[at + 1 :]  # bureau-DR
    assert json.loads(tampered)  # still JSON: only the signature can tell
    with pytest.raises(KeyringInvalid, match="signature does not match"):
        Keyring.from_bytes(tampered, root.public_key())


def test_a_keyring_signed_by_another_root_is_refused(
    ring: Keyring, root: Ed25519PrivateKey
) -> None:
    other = generate_private_key()
    with pytest.raises(KeyringInvalid, match="not by the configured root"):
        Keyring.from_bytes(ring.to_bytes(other), root.public_key())
    # Another root naming ours does not help it.
    doc = json.loads(ring.to_bytes(other))
    doc["root_kid"] = key_id(root.public_key())
    with pytest.raises(KeyringInvalid, match="signature does not match"):
        Keyring.from_bytes(json.dumps(doc).encode(), root.public_key())


Edit = Callable[[dict[str, Any]], object]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.pop("version"), "missing field version"),
        (lambda b: b.update(extra=1), "unknown field extra"),
        (lambda b: b.update(version=True), "version is not an integer"),
        (lambda b: b.update(version=1.0), "version is not an integer"),
        (lambda b: b.update(entries={}), "entries is not a JSON array"),
        (lambda b: b["entries"][0].pop("revoked_at_ms"), "missing field revoked_at_ms"),
        (lambda b: b["entries"][0].update(valid_until_ms="soon"), "not an integer"),
        (lambda b: b["entries"][0].update(kid="0" * 16), "not the id of its public key"),
        (lambda b: b["entries"][0].update(owner=""), "no owner"),
        (lambda b: b["entries"][0].update(public_key="AAAA"), "not 32 bytes"),
        (lambda b: b["entries"][0].update(public_key="%%%"), "not base64"),
        (lambda b: b["entries"].append(b["entries"][0]), "in the keyring twice"),
    ],
)
def test_a_signed_but_malformed_keyring_is_refused(
    ring: Keyring, root: Ed25519PrivateKey, edit: Edit, expected: str
) -> None:
    body = body_of(ring, root)
    edit(body)
    with pytest.raises(KeyringInvalid, match=expected):
        Keyring.from_bytes(sign_body(body, root), root.public_key())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", "not JSON"),
        (b"[]", "document is not a JSON object"),
        (b'{"keyring": {}, "root_kid": "x"}', "missing field signature"),
        (b'{"keyring": {}, "keyring": {}, "root_kid": "x", "signature": ""}', "repeats a field"),
        (b'{"keyring": NaN, "root_kid": "x", "signature": ""}', "NaN"),
    ],
)
def test_a_malformed_document_is_refused(
    root: Ed25519PrivateKey, data: bytes, expected: str
) -> None:
    with pytest.raises(KeyringInvalid, match=expected):
        Keyring.from_bytes(data, root.public_key())


def test_keyring_files(tmp_path: Path, ring: Keyring, root: Ed25519PrivateKey) -> None:
    path = tmp_path / "etc" / "keyring.json"
    write_keyring(path, ring, root)
    assert read_keyring(path, root.public_key()) == ring
    assert os.listdir(path.parent) == ["keyring.json"]  # no temporary file left
    with pytest.raises(KeyringInvalid, match=f"{tmp_path}/missing.json: cannot read"):
        read_keyring(tmp_path / "missing.json", root.public_key())
    with pytest.raises(KeyringInvalid, match=f"{path}: the keyring is signed by root key"):
        read_keyring(path, generate_private_key().public_key())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_key_files_are_0600(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "keys" / "hq.pem"
    write_private_key(path, key)
    assert mode(path) == 0o600
    assert raw_public_key(read_private_key(path).public_key()) == raw_public_key(key.public_key())
    path.chmod(0o644)  # a file that was there before is narrowed too
    write_private_key(path, key)
    assert mode(path) == 0o600


def test_public_key_files(tmp_path: Path) -> None:
    key = generate_private_key().public_key()
    write_public_key(tmp_path / "hq.pub", key)
    assert mode(tmp_path / "hq.pub") == 0o644
    assert key_id(read_public_key(tmp_path / "hq.pub")) == key_id(key)
    assert key_id(key) == hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def test_bad_key_files_name_the_path_and_the_fault(tmp_path: Path) -> None:
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN nothing-----\n")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "rsa.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    write_private_key(tmp_path / "ed.pem", generate_private_key())
    cases: list[tuple[Callable[[Path], object], str, str]] = [
        (read_private_key, "missing.pem", "no such private key file"),
        (read_private_key, "garbage.pem", "not a PEM private key"),
        (read_private_key, "rsa.pem", "holds a key of type RSA, not an Ed25519 private key"),
        (read_public_key, "ed.pem", "not a PEM public key"),
        (read_public_key, "missing.pem", "no such public key file"),
    ]
    for read, name, expected in cases:
        with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / name}: {expected}")):
            read(tmp_path / name)


def test_secrets(tmp_path: Path) -> None:
    secret = generate_secret()
    write_secret(tmp_path / "ack.key", secret)
    assert mode(tmp_path / "ack.key") == 0o600
    assert read_secret(tmp_path / "ack.key") == secret
    (tmp_path / "short.key").write_text(secret[:16].hex())
    with pytest.raises(ConfigError, match=r"short\.key: a secret of 16 bytes; 32 are needed"):
        read_secret(tmp_path / "short.key")
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(ConfigError, match=r"bad\.key: the secret is not one line of hex"):
        read_secret(tmp_path / "bad.key")
    with pytest.raises(ConfigError, match="a secret of 31 bytes"):
        write_secret(tmp_path / "other.key", secret[:31])
