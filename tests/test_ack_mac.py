"""Acknowledgement MACs: each bureau's key is derived from the master, and only it passes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from notice_bus.errors import ConfigError
from notice_bus.trust.ack_mac import MAC_HEADER, NO_MAC, AckSigner, AckVerifier, bureau_key
from notice_bus.trust.keys import generate_secret

KEY = b"2026/1234"
VALUE = b"\x02RECORDED by the national system" * 4


@pytest.fixture
def master() -> bytes:
    return generate_secret()


@pytest.fixture
def verifier(master: bytes) -> AckVerifier:
    return AckVerifier(master)


def fr(master: bytes) -> AckSigner:
    return AckSigner(bureau_key(master, "FR"), "FR")


def test_an_acknowledgement_of_the_bureau_passes(master: bytes, verifier: AckVerifier) -> None:
    assert verifier.check("FR", KEY, VALUE, fr(master).headers(KEY, VALUE)) is None
    assert verifier.check("FR", KEY, None, fr(master).headers(KEY, None)) is None
    headers = [("source.topic", b"x"), *fr(master).headers(KEY, VALUE)]
    assert verifier.check("FR", KEY, VALUE, headers) is None


def test_the_mac_is_the_documented_one(master: bytes) -> None:
    # Computed here from the formula, so that another implementation can follow it.
    key = hmac.new(master, b"notice-bus/ack-key/v1\x00FR", hashlib.sha256).digest()
    assert bureau_key(master, "FR") == key
    msg = (
        b"notice-bus/ack/v1\x00FR\x00" + b"\x00\x00\x00\x09" + KEY + hashlib.sha256(VALUE).digest()
    )
    assert fr(master).headers(KEY, VALUE) == [
        (MAC_HEADER, hmac.new(key, msg, hashlib.sha256).digest())
    ]


def test_bureau_keys_differ(master: bytes) -> None:
    assert bureau_key(master, "FR") != bureau_key(master, "DE")
    assert bureau_key(master, "FR") != bureau_key(generate_secret(), "FR")


def test_another_countrys_bureau_fails(master: bytes, verifier: AckVerifier) -> None:
    mismatch = "MAC does not match: not written by FR's bureau, or altered"
    de = AckSigner(bureau_key(master, "DE"), "DE")
    assert verifier.check("FR", KEY, VALUE, de.headers(KEY, VALUE)) == mismatch
    # DE's bureau claiming to be FR's, with its own key.
    posing = AckSigner(bureau_key(master, "DE"), "FR")
    assert verifier.check("FR", KEY, VALUE, posing.headers(KEY, VALUE)) == mismatch
    assert verifier.check("DE", KEY, VALUE, de.headers(KEY, VALUE)) is None


def test_another_master_fails(master: bytes) -> None:
    headers = fr(master).headers(KEY, VALUE)
    assert AckVerifier(generate_secret()).check("FR", KEY, VALUE, headers) is not None


def test_an_altered_record_fails(master: bytes, verifier: AckVerifier) -> None:
    headers = fr(master).headers(KEY, VALUE)
    mismatch = "MAC does not match: not written by FR's bureau, or altered"
    assert verifier.check("FR", KEY, VALUE + b"!", headers) == mismatch
    assert verifier.check("FR", KEY, None, headers) == mismatch
    assert verifier.check("FR", b"2026/1235", VALUE, headers) == mismatch
    (_, tag) = headers[0]
    flipped = bytes([tag[0] ^ 1]) + tag[1:]
    assert verifier.check("FR", KEY, VALUE, [(MAC_HEADER, flipped)]) == mismatch


@pytest.mark.parametrize("headers", [None, [], [("nb-kid", b"0" * 16)]])
def test_a_record_without_a_mac_fails(
    verifier: AckVerifier, headers: list[tuple[str, bytes]] | None
) -> None:
    assert verifier.check("FR", KEY, VALUE, headers) == NO_MAC == "no MAC header nb-mac"


def test_malformed_macs_fail(master: bytes, verifier: AckVerifier) -> None:
    [(_, tag)] = fr(master).headers(KEY, VALUE)
    twice = [(MAC_HEADER, tag), (MAC_HEADER, tag)]
    assert verifier.check("FR", KEY, VALUE, twice) == "2 nb-mac headers, not 1"
    assert verifier.check("FR", KEY, VALUE, [(MAC_HEADER, tag[:16])]) == (
        "the nb-mac header holds 16 bytes, not 32"
    )
    assert verifier.check("FR", KEY, VALUE, [(MAC_HEADER, None)]) is not None
    assert verifier.check("fr", KEY, VALUE, [(MAC_HEADER, tag)]) == "'fr' is not a country code"


def test_bad_secrets_and_countries_are_refused(master: bytes) -> None:
    with pytest.raises(ConfigError, match="16 bytes, not 32"):
        AckVerifier(master[:16])
    with pytest.raises(ConfigError, match="16 bytes, not 32"):
        AckSigner(master[:16], "FR")
    with pytest.raises(ConfigError, match="not a country code"):
        AckSigner(bureau_key(master, "FR"), "FR\x00")
    with pytest.raises(ConfigError, match="not a country code"):
        bureau_key(master, "FRA")
