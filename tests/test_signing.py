"""Notice signatures: a record HQ signed passes, anything else fails with the right reason."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from notice_bus.errors import NoticeBusError, SignatureInvalid
from notice_bus.trust.keyring import Keyring
from notice_bus.trust.keys import generate_private_key, key_id
from notice_bus.trust.signing import (
    KID_HEADER,
    MISMATCH,
    NO_SIGNATURE,
    SIG_HEADER,
    Headers,
    Signer,
    Verifier,
    verify,
)
from tests.factories import T0, T1, T2

KEY = b"2026/1234"
VALUE = b"\x00\x01avro-ish bytes of a red notice" * 20


Mangle = Callable[[bytes, bytes], list[tuple[str, bytes | None]]]


@pytest.fixture
def hq_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture
def hq(hq_key: Ed25519PrivateKey) -> Signer:
    return Signer(hq_key)


@pytest.fixture
def ring(hq_key: Ed25519PrivateKey) -> Keyring:
    return Keyring.empty().add(hq_key.public_key(), "hq", T0)


def reason(
    ring: Keyring, key: bytes | None, value: bytes | None, headers: Headers | None, at: int
) -> str:
    with pytest.raises(SignatureInvalid) as info:
        verify(ring, key, value, headers, at)
    assert str(info.value) == info.value.reason
    return info.value.reason


def test_a_signed_record_verifies(hq: Signer, ring: Keyring) -> None:
    headers = hq.headers(KEY, VALUE)
    assert [name for name, _ in headers] == [KID_HEADER, SIG_HEADER]
    verify(ring, KEY, VALUE, headers, T0 + 1)
    Verifier(ring).verify(KEY, VALUE, [("reason", b"other headers pass"), *headers], T0 + 1)


def test_a_signed_tombstone_verifies(hq: Signer, ring: Keyring) -> None:
    verify(ring, KEY, None, hq.headers(KEY, None), T0 + 1)
    assert reason(ring, KEY, VALUE, hq.headers(KEY, None), T0 + 1) == MISMATCH


def test_the_signed_message_is_the_documented_one(hq_key: Ed25519PrivateKey, hq: Signer) -> None:
    # Built here from the formula, so that another implementation can follow it.
    kid = key_id(hq_key.public_key())
    msg = b"notice-bus/notice/v1\x00" + b"\x00\x00\x00\x09" + KEY
    msg += hashlib.sha256(VALUE).digest() + kid.encode()
    assert hq.kid == kid
    assert hq.headers(KEY, VALUE) == [(KID_HEADER, kid.encode()), (SIG_HEADER, hq_key.sign(msg))]


def test_the_same_record_gets_the_same_headers_on_every_topic(hq: Signer) -> None:
    # Ed25519 is deterministic and the topic is not signed: HQ signs once per event.
    assert hq.headers(KEY, VALUE) == hq.headers(KEY, VALUE)


def test_a_verifier_checks_many_records_with_one_key_load(hq: Signer, ring: Keyring) -> None:
    verifier = Verifier(ring)
    for n in range(3):
        value = VALUE + bytes([n])
        verifier.verify(KEY, value, hq.headers(KEY, value), T0 + n)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verifier.verify(KEY, VALUE, hq.headers(KEY, VALUE + b"!"), T0)


def test_a_hubs_copies_of_a_record_are_checked_once_and_each_at_its_own_time(
    hq: Signer, ring: Keyring
) -> None:
    verifier = Verifier(ring.rotate(generate_private_key().public_key(), "hq", T1))
    headers = hq.headers(KEY, VALUE)
    for _ in range(196):  # the same record on every country's topic
        verifier.verify(KEY, VALUE, headers, T0 + 1)
    assert verifier.checks == 1
    with pytest.raises(SignatureInvalid, match="retired"):  # a copy appended after retirement
        verifier.verify(KEY, VALUE, headers, T1 + 1)
    with pytest.raises(SignatureInvalid, match="does not match"):  # same headers, other value
        verifier.verify(KEY, VALUE + b"!", headers, T0 + 1)
    assert verifier.checks == 2


def test_an_altered_value_fails(hq: Signer, ring: Keyring) -> None:
    headers = hq.headers(KEY, VALUE)
    assert reason(ring, KEY, VALUE[:-1] + b"X", headers, T0 + 1) == MISMATCH


def test_an_altered_key_fails(hq: Signer, ring: Keyring) -> None:
    headers = hq.headers(KEY, VALUE)
    assert reason(ring, b"2026/1235", VALUE, headers, T0 + 1) == MISMATCH
    assert reason(ring, None, VALUE, headers, T0 + 1) == MISMATCH


def test_a_signature_under_another_kid_fails(hq: Signer, ring: Keyring) -> None:
    other_key = generate_private_key()
    other = Signer(other_key)
    ring = ring.add(other_key.public_key(), "hq-backup", T0)
    (_, kid), (_, sig) = hq.headers(KEY, VALUE)
    verify(ring, KEY, VALUE, [(KID_HEADER, kid), (SIG_HEADER, sig)], T0 + 1)
    swapped = [(KID_HEADER, other.kid.encode()), (SIG_HEADER, sig)]
    assert reason(ring, KEY, VALUE, swapped, T0 + 1) == MISMATCH


def test_a_key_outside_the_keyring_fails(ring: Keyring) -> None:
    stranger = Signer(generate_private_key())
    got = reason(ring, KEY, VALUE, stranger.headers(KEY, VALUE), T0 + 1)
    assert got == f"key {stranger.kid} is unknown to the keyring (version 1)"


@pytest.mark.parametrize("headers", [None, [], [("reason", b"x")]])
def test_an_unsigned_record_fails(ring: Keyring, headers: Headers | None) -> None:
    assert reason(ring, KEY, VALUE, headers, T0 + 1) == NO_SIGNATURE


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda kid, sig: [(KID_HEADER, kid)], f"0 {SIG_HEADER} headers"),
        (lambda kid, sig: [(SIG_HEADER, sig)], f"0 {KID_HEADER} headers"),
        (lambda kid, sig: [(KID_HEADER, kid), (KID_HEADER, kid), (SIG_HEADER, sig)], "2 nb-kid"),
        (lambda kid, sig: [(KID_HEADER, kid), (SIG_HEADER, sig), (SIG_HEADER, sig)], "2 nb-sig"),
        (lambda kid, sig: [(KID_HEADER, kid.upper()), (SIG_HEADER, sig)], "not a key id"),
        (lambda kid, sig: [(KID_HEADER, b"\xff" * 16), (SIG_HEADER, sig)], "not a key id"),
        (lambda kid, sig: [(KID_HEADER, kid + b"\n"), (SIG_HEADER, sig)], "not a key id"),
        (lambda kid, sig: [(KID_HEADER, None), (SIG_HEADER, sig)], "not a key id"),
        (lambda kid, sig: [(KID_HEADER, kid), (SIG_HEADER, sig[:63])], "holds 63 bytes"),
        (lambda kid, sig: [(KID_HEADER, kid), (SIG_HEADER, sig.hex().encode())], "holds 128"),
        (lambda kid, sig: [(KID_HEADER, kid), (SIG_HEADER, None)], "holds 0 bytes"),
    ],
)
def test_malformed_headers_fail(hq: Signer, ring: Keyring, mangle: Mangle, expected: str) -> None:
    (_, kid), (_, sig) = hq.headers(KEY, VALUE)
    got = reason(ring, KEY, VALUE, mangle(kid, sig), T0 + 1)
    assert got.startswith("malformed signature: ") and expected in got


def test_a_retired_key_signs_only_what_was_appended_before(hq: Signer, ring: Keyring) -> None:
    ring = ring.rotate(generate_private_key().public_key(), "hq", T1)
    headers = hq.headers(KEY, VALUE)
    verify(ring, KEY, VALUE, headers, T1 - 1)
    assert reason(ring, KEY, VALUE, headers, T1) == (
        f"key {hq.kid} was retired at 2026-12-01T00:00:00Z;"
        " this record was appended at 2026-12-01T00:00:00Z"
    )


def test_a_revoked_key_signs_nothing_any_more(hq: Signer, ring: Keyring) -> None:
    headers = hq.headers(KEY, VALUE)
    verify(ring, KEY, VALUE, headers, T0 + 1)
    ring = ring.revoke(hq.kid, T2)
    expected = f"key {hq.kid} was revoked at 2026-12-05T10:00:00Z"
    assert reason(ring, KEY, VALUE, headers, T0 + 1) == expected  # long before the revocation
    assert reason(ring, KEY, VALUE, headers, T2 + 1) == expected


def test_a_key_signs_nothing_appended_before_it_was_added(hq: Signer, ring: Keyring) -> None:
    got = reason(ring, KEY, VALUE, hq.headers(KEY, VALUE), T0 - 1)
    assert got.startswith(f"key {hq.kid} is valid from 2026-11-01T00:00:00Z;")


def test_signature_invalid_is_a_notice_bus_error() -> None:
    assert issubclass(SignatureInvalid, NoticeBusError)
    assert not SignatureInvalid.retriable
