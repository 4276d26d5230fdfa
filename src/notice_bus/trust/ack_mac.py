"""Bureau acknowledgements, authenticated with an HMAC under a key of the bureau's own.

HQ and the tracker hold one 32-byte master secret. The bureau of country CC holds
``bureau_key(master, "CC")``, HMAC-SHA256 of ``notice-bus/ack-key/v1\\0CC`` under the master: the
tracker derives every country's key from the master, so it needs no table of secrets, and a
bureau cannot make another country's key from its own.

The bureau puts the tag in the header ``nb-mac``: HMAC-SHA256, under its key, of
``notice-bus/ack/v1\\0``, the country, ``\\0``, the record key's length (4 bytes, big-endian)
and bytes, and the SHA-256 of the value (of ``b""`` for a tombstone). The country is in the
message as well as in the key, so a tag says which bureau the record claims to come from.
Tags are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from notice_bus.errors import ConfigError, NoticeBusError
from notice_bus.runtime.settings import Settings
from notice_bus.trust.keys import SECRET_BYTES

MAC_HEADER = "nb-mac"
KEY_DOMAIN = b"notice-bus/ack-key/v1\x00"
DOMAIN = b"notice-bus/ack/v1\x00"
TAG_BYTES = 32
NO_MAC = f"no MAC header {MAC_HEADER}"
_COUNTRY = re.compile(r"[A-Z]{2}\Z")  # ISO 3166-1 alpha-2, as notice_bus.wire has it

Headers = Sequence[tuple[str, bytes | None]]


def bureau_key(master: bytes, country: str) -> bytes:
    """The key of ``country``'s bureau, derived from the master secret."""
    _check_secret(master, "the master secret")
    return hmac.digest(master, KEY_DOMAIN + _country(country), "sha256")


def tag(bureau_key: bytes, country: str, key: bytes | None, value: bytes | None) -> bytes:
    """The MAC of a record of ``country``'s bureau; a record without a key as one with an
    empty key."""
    key = key or b""
    msg = (
        DOMAIN
        + _country(country)
        + b"\x00"
        + len(key).to_bytes(4, "big")
        + key
        + hashlib.sha256(value or b"").digest()
    )
    return hmac.digest(bureau_key, msg, "sha256")


class AckSigner:
    """A bureau's: puts the MAC on each of its acknowledgements."""

    __slots__ = ("_key", "country")

    def __init__(self, bureau_key: bytes, country: str) -> None:
        _check_secret(bureau_key, f"the bureau key of {country}")
        _country(country)
        self._key = bureau_key
        self.country = country

    def __repr__(self) -> str:
        return f"AckSigner(country={self.country!r})"

    def headers(self, key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
        return [(MAC_HEADER, tag(self._key, self.country, key, value))]


class AckVerifier:
    """HQ's and the tracker's: checks any country's acknowledgements. Bureau keys are derived
    once per country and kept (at most one per country code)."""

    __slots__ = ("_keys", "_master")

    def __init__(self, master: bytes) -> None:
        _check_secret(master, "the master secret")
        self._master = master
        self._keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "AckVerifier()"

    def check(
        self, country: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> str | None:
        """None when ``country``'s bureau wrote the record as it is, else why not."""
        if not _COUNTRY.match(country):
            return f"{country!r} is not a country code"
        macs = [v for k, v in headers or () if k == MAC_HEADER]
        if not macs:
            return NO_MAC
        if len(macs) > 1:  # which one counts would be a guess
            return f"{len(macs)} {MAC_HEADER} headers, not 1"
        mac = macs[0]
        if mac is None or len(mac) != TAG_BYTES:
            return f"the {MAC_HEADER} header holds {len(mac or b'')} bytes, not {TAG_BYTES}"
        bkey = self._keys.get(country)
        if bkey is None:
            bkey = self._keys[country] = bureau_key(self._master, country)
        if not hmac.compare_digest(mac, tag(bkey, country, key, value)):
            return f"MAC does not match: not written by {country}'s bureau, or altered"
        return None


def _country(country: str) -> bytes:
    if not _COUNTRY.match(country):
        raise ConfigError(f"{country!r} is not a country code (two capital letters)")
    return country.encode("ascii")


def _check_secret(secret: bytes, what: str) -> None:
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"{what} has {len(secret)} bytes, not {SECRET_BYTES}")


def read_ack_keys(path: str | Path) -> dict[str, bytes]:
    """A bureau's or hub's keys, by country: the ``CC hex`` lines ``notice-bus pki`` writes."""
    keys: dict[str, bytes] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read ack_key_file {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        country, _, hexed = line.strip().partition(" ")
        try:
            keys[country] = bytes.fromhex(hexed.strip())
            _country(country)
            _check_secret(keys[country], f"{path}:{number}")
        except (ValueError, NoticeBusError) as exc:
            raise ConfigError(f"ack_key_file {path}, line {number}: not `CC hex`: {exc}") from exc
    return keys


def signer_for(settings: Settings, country: str) -> AckSigner | None:
    """The MAC of ``country``'s acknowledgements and answers, from ``ack_key_file``; None
    where the deployment does not MAC them (PLAINTEXT without a key file)."""
    if not settings.ack_key_file:
        if settings.secured:
            raise ConfigError(
                "a secured bureau signs its acknowledgements: set ack_key_file"
                " (notice-bus pki writes it)"
            )
        return None
    keys = read_ack_keys(settings.ack_key_file)
    if country not in keys:
        raise ConfigError(f"ack_key_file {settings.ack_key_file} has no key for {country}")
    return AckSigner(keys[country], country)
