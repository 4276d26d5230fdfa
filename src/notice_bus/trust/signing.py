"""Notice signatures, carried in Kafka record headers.

HQ signs each record it writes with its current Ed25519 key (:class:`Signer`) and puts two
headers on it: ``nb-kid``, the key's id in ASCII, and ``nb-sig``, the 64-byte signature. A
reader checks them against HQ's keyring (:class:`Verifier`): the key must be valid for the
record's append time (see :mod:`notice_bus.trust.keyring`) and the signature must match.

The signed message is ``notice-bus/notice/v1\\0``, the record key's length (4 bytes, big-endian)
and bytes, the SHA-256 of the value (of ``b""`` for a tombstone) and the key id: the length
keeps key and value apart, and the key id binds the signature to the key it names. The topic
is deliberately left out: a notice's record is the same on every country's topic, so HQ signs
it once per event and puts the same headers on every country's copy. A signature says who
wrote a record, not when nor for whom: replaying an old record of HQ's is only caught by what
the value says (the notice's version).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from notice_bus.errors import SignatureInvalid
from notice_bus.trust.keyring import Keyring
from notice_bus.trust.keys import key_id

KID_HEADER = "nb-kid"
SIG_HEADER = "nb-sig"
DOMAIN = b"notice-bus/notice/v1\x00"
SIGNATURE_BYTES = 64
NO_SIGNATURE = f"the record carries no signature (headers {KID_HEADER}/{SIG_HEADER})"
MISMATCH = "the signature does not match the record: altered, or signed with another key"
_KID = re.compile(rb"[0-9a-f]{16}\Z")

Headers = Sequence[tuple[str, bytes | None]]


def message(key: bytes | None, value: bytes | None, kid: str) -> bytes:
    """What is signed; a record without a key is signed as one with an empty key."""
    key = key or b""
    return (
        DOMAIN
        + len(key).to_bytes(4, "big")
        + key
        + hashlib.sha256(value or b"").digest()
        + kid.encode("ascii")
    )


class Signer:
    """Signs records with one private key; ``kid`` is its id."""

    __slots__ = ("_key", "_kid_bytes", "kid")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.kid = key_id(private_key.public_key())
        self._kid_bytes = self.kid.encode("ascii")

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r})"

    def headers(self, key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
        signature = self._key.sign(message(key, value, self.kid))
        return [(KID_HEADER, self._kid_bytes), (SIG_HEADER, signature)]


class Verifier:
    """Checks records against one keyring, keeping the public keys it loads, per key id, for
    the records that follow. A new keyring takes a new Verifier.

    It also remembers the last signatures that matched: a hub reads the same record on each
    of its countries' topics, and the same signature over the same message always verifies
    the same, so only the first copy pays for the Ed25519 check (111 us here, bench/signing.py).
    The key's validity at each record's own time is checked for every copy."""

    __slots__ = ("_keys", "_matched", "checks", "keyring")

    #: How many matched signatures it remembers: a notice's copies arrive close together.
    REMEMBERED = 4096

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._matched: dict[tuple[bytes, bytes], None] = {}
        self.checks = 0  # Ed25519 checks made; the other records' signatures were remembered

    def verify(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        appended_at_ms: int,
    ) -> None:
        """Return if HQ's keyring vouches for the record, else raise :class:`SignatureInvalid`
        saying why."""
        kid, signature = _read_headers(headers)
        reason = self.keyring.is_valid_at(kid, appended_at_ms)
        if reason is not None:
            raise SignatureInvalid(reason)
        public = self._keys.get(kid)
        if public is None:
            entry = self.keyring.entry(kid)
            assert entry is not None  # is_valid_at said it is known
            public = Ed25519PublicKey.from_public_bytes(entry.public_key)
            self._keys[kid] = public
        signed = (signature, message(key, value, kid))
        if signed in self._matched:
            return
        self.checks += 1
        try:
            public.verify(*signed)
        except InvalidSignature as exc:
            raise SignatureInvalid(MISMATCH) from exc
        self._matched[signed] = None
        if len(self._matched) > self.REMEMBERED:  # the oldest goes (dicts keep their order)
            self._matched.pop(next(iter(self._matched), signed), None)


def verify(
    keyring: Keyring,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    appended_at_ms: int,
) -> None:
    """:meth:`Verifier.verify` for one record; a loop over records keeps a Verifier."""
    Verifier(keyring).verify(key, value, headers, appended_at_ms)


def _read_headers(headers: Headers | None) -> tuple[str, bytes]:
    kids = [v for k, v in headers or () if k == KID_HEADER]
    sigs = [v for k, v in headers or () if k == SIG_HEADER]
    if not kids and not sigs:
        raise SignatureInvalid(NO_SIGNATURE)
    # One of each, exactly: with two, which one counts would be a guess.
    for name, values in ((KID_HEADER, kids), (SIG_HEADER, sigs)):
        if len(values) != 1:
            raise SignatureInvalid(f"malformed signature: {len(values)} {name} headers, not 1")
    kid, sig = kids[0], sigs[0]
    if kid is None or not _KID.match(kid):
        raise SignatureInvalid(
            f"malformed signature: the {KID_HEADER} header is not a key id (16 hex digits)"
        )
    if sig is None or len(sig) != SIGNATURE_BYTES:
        size = 0 if sig is None else len(sig)
        raise SignatureInvalid(
            f"malformed signature: the {SIG_HEADER} header holds {size} bytes, not 64"
        )
    return kid.decode("ascii"), sig
