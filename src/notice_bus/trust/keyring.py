"""HQ's signing keys, listed in a keyring that an offline root key signs.

An entry's key is valid for records appended from ``valid_from_ms`` on. Two ways to end it:

* retired (``valid_until_ms``): records appended at or after that time are not valid; those
  appended before stay valid, so a routine rotation leaves the log as it was;
* revoked (``revoked_at_ms``): nothing the key ever signed is valid any more, whatever its
  time, since whoever holds a stolen key can sign records of any age. That is why HQ re-signs
  its active notices after a revocation.

"Appended at" is the record's Kafka timestamp. It bounds a retired key only where the broker
sets it (``message.timestamp.type=LogAppendTime``); with CreateTime the producer picks it, so
a key that may have leaked is revoked, never merely retired.

On disk and on the wire a keyring is the JSON document ``{"keyring": <body>, "root_kid": ...,
"signature": <base64>}``: the root's Ed25519 signature over ``notice-bus/keyring/v1\\0`` and the
canonical JSON of the body (sorted keys, no spaces, ASCII, public keys in base64). Reading
re-serialises the body the same way, so only what the root signed is ever trusted. Every
change makes a new ``version``: a holder refuses a keyring older than the one it has, since a
replayed old keyring would undo a revocation (``from_bytes`` cannot know which it holds).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from notice_bus.errors import KeyringInvalid, OutputError
from notice_bus.trust.keys import PUBLIC_KEY_BYTES, key_id, raw_public_key

DOMAIN = b"notice-bus/keyring/v1\x00"
SIGNATURE_BYTES = 64
_DOCUMENT = frozenset({"keyring", "root_kid", "signature"})
_BODY = frozenset({"version", "issued_at_ms", "entries"})
_ENTRY = frozenset(
    {"kid", "owner", "public_key", "valid_from_ms", "valid_until_ms", "revoked_at_ms"}
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(ms: int) -> str:
    """``2026-12-05T10:00:00Z``, with milliseconds when there are some."""
    at = _EPOCH + timedelta(milliseconds=ms)
    return at.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class KeyEntry:
    kid: str
    owner: str
    public_key: bytes  # raw, 32 bytes
    valid_from_ms: int
    valid_until_ms: int | None = None
    revoked_at_ms: int | None = None

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise KeyringInvalid(
                f"key {self.kid}: a public key of {len(self.public_key)} bytes, not 32"
            )
        if key_id(self.public_key) != self.kid:
            raise KeyringInvalid(f"key {self.kid}: not the id of its public key")
        if not self.owner:
            raise KeyringInvalid(f"key {self.kid}: no owner")

    @property
    def active(self) -> bool:
        return self.valid_until_ms is None and self.revoked_at_ms is None


@dataclass(frozen=True, slots=True)
class Keyring:
    version: int
    issued_at_ms: int
    entries: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        kids = [e.kid for e in self.entries]
        if len(set(kids)) != len(kids):
            twice = next(k for k in kids if kids.count(k) > 1)
            raise KeyringInvalid(f"key {twice} is in the keyring twice")

    @classmethod
    def empty(cls) -> Keyring:
        return cls(version=0, issued_at_ms=0, entries=())

    def entry(self, kid: str) -> KeyEntry | None:
        return next((e for e in self.entries if e.kid == kid), None)

    def current(self, owner: str) -> KeyEntry:
        """The newest entry of ``owner`` that is neither retired nor revoked: the key to sign
        with."""
        active = [e for e in self.entries if e.owner == owner and e.active]
        if not active:
            raise KeyringInvalid(f"the keyring (version {self.version}) has no key of {owner!r}")
        return active[-1]

    def add(self, public_key: Ed25519PublicKey | bytes, owner: str, at_ms: int) -> Keyring:
        new = _new_entry(public_key, owner, at_ms)
        if self.entry(new.kid) is not None:
            raise KeyringInvalid(f"key {new.kid} is in the keyring already")
        return self._next(at_ms, (*self.entries, new))

    def retire(self, kid: str, at_ms: int) -> Keyring:
        old = self._known(kid)
        if old.valid_until_ms is not None:
            raise KeyringInvalid(f"key {kid} was retired already, at {utc(old.valid_until_ms)}")
        return self._next(at_ms, self._with(dataclasses.replace(old, valid_until_ms=at_ms)))

    def revoke(self, kid: str, at_ms: int) -> Keyring:
        old = self._known(kid)
        if old.revoked_at_ms is not None:
            raise KeyringInvalid(f"key {kid} was revoked already, at {utc(old.revoked_at_ms)}")
        return self._next(at_ms, self._with(dataclasses.replace(old, revoked_at_ms=at_ms)))

    def rotate(self, new_public_key: Ed25519PublicKey | bytes, owner: str, at_ms: int) -> Keyring:
        """Retire every active key of ``owner`` at ``at_ms`` and add the new one, valid from
        then: one new version, so no holder ever sees the owner with no key or two."""
        new = _new_entry(new_public_key, owner, at_ms)
        if self.entry(new.kid) is not None:
            raise KeyringInvalid(f"key {new.kid} is in the keyring already")
        entries = tuple(
            dataclasses.replace(e, valid_until_ms=at_ms) if e.owner == owner and e.active else e
            for e in self.entries
        )
        return self._next(at_ms, (*entries, new))

    def is_valid_at(self, kid: str, appended_at_ms: int) -> str | None:
        """None when ``kid`` may sign a record appended at ``appended_at_ms``, else why not."""
        e = self.entry(kid)
        if e is None:
            return f"key {kid} is unknown to the keyring (version {self.version})"
        if e.revoked_at_ms is not None:
            return f"key {kid} was revoked at {utc(e.revoked_at_ms)}"
        appended = f"this record was appended at {utc(appended_at_ms)}"
        if e.valid_until_ms is not None and appended_at_ms >= e.valid_until_ms:
            return f"key {kid} was retired at {utc(e.valid_until_ms)}; {appended}"
        if appended_at_ms < e.valid_from_ms:
            return f"key {kid} is valid from {utc(e.valid_from_ms)}; {appended}"
        return None

    def to_bytes(self, root: Ed25519PrivateKey) -> bytes:
        body = {
            "version": self.version,
            "issued_at_ms": self.issued_at_ms,
            "entries": [_entry_json(e) for e in self.entries],
        }
        signature = root.sign(DOMAIN + _canonical(body))
        return _canonical(
            {
                "keyring": body,
                "root_kid": key_id(root.public_key()),
                "signature": base64.b64encode(signature).decode("ascii"),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, root_public: Ed25519PublicKey) -> Keyring:
        try:
            doc = json.loads(data, object_pairs_hook=_unique, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyringInvalid(f"the keyring is not JSON: {exc}") from exc
        doc = _object(doc, _DOCUMENT, "the keyring document")
        root_kid, want = _str(doc, "root_kid", "the keyring document"), key_id(root_public)
        if root_kid != want:
            raise KeyringInvalid(
                f"the keyring is signed by root key {root_kid}, not by the configured root {want}"
            )
        signature = _base64(doc["signature"], SIGNATURE_BYTES, "the keyring's signature")
        body = _object(doc["keyring"], _BODY, "the keyring")
        try:
            root_public.verify(signature, DOMAIN + _canonical(body))
        except (InvalidSignature, ValueError) as exc:
            raise KeyringInvalid(
                "the keyring's signature does not match its content: altered, or not signed by"
                " the configured root key"
            ) from exc
        # Signed by the root: now its content is read, as strictly as its form was.
        if not isinstance(body["entries"], list):
            raise KeyringInvalid("the keyring: entries is not a JSON array")
        return cls(
            version=_int(body, "version", "the keyring"),
            issued_at_ms=_int(body, "issued_at_ms", "the keyring"),
            entries=tuple(_parse_entry(e, i) for i, e in enumerate(body["entries"])),
        )

    def _known(self, kid: str) -> KeyEntry:
        e = self.entry(kid)
        if e is None:
            raise KeyringInvalid(f"key {kid} is not in the keyring (version {self.version})")
        return e

    def _with(self, changed: KeyEntry) -> tuple[KeyEntry, ...]:
        return tuple(changed if e.kid == changed.kid else e for e in self.entries)

    def _next(self, at_ms: int, entries: tuple[KeyEntry, ...]) -> Keyring:
        # issued_at never goes back, even for a change dated in the past.
        return Keyring(self.version + 1, max(self.issued_at_ms, at_ms), entries)


def read_keyring(path: str | Path, root_public: Ed25519PublicKey) -> Keyring:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyringInvalid(f"{path}: cannot read the keyring file: {exc.strerror}") from exc
    try:
        return Keyring.from_bytes(data, root_public)
    except KeyringInvalid as exc:
        raise KeyringInvalid(f"{path}: {exc}") from exc


def write_keyring(path: str | Path, keyring: Keyring, root_private: Ed25519PrivateKey) -> None:
    """Write the signed keyring in place of the old one at once: a reader meets one or the
    other, never half of the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(keyring.to_bytes(root_private) + b"\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the keyring file: {exc.strerror}") from exc


def _new_entry(public_key: Ed25519PublicKey | bytes, owner: str, at_ms: int) -> KeyEntry:
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    return KeyEntry(key_id(raw), owner, raw, valid_from_ms=at_ms)


def _entry_json(e: KeyEntry) -> dict[str, Any]:
    return {
        "kid": e.kid,
        "owner": e.owner,
        "public_key": base64.b64encode(e.public_key).decode("ascii"),
        "valid_from_ms": e.valid_from_ms,
        "valid_until_ms": e.valid_until_ms,
        "revoked_at_ms": e.revoked_at_ms,
    }


def _parse_entry(value: Any, index: int) -> KeyEntry:
    where = f"the keyring's entry {index}"
    obj = _object(value, _ENTRY, where)
    return KeyEntry(
        kid=_str(obj, "kid", where),
        owner=_str(obj, "owner", where),
        public_key=_base64(obj["public_key"], PUBLIC_KEY_BYTES, f"{where}'s public_key"),
        valid_from_ms=_int(obj, "valid_from_ms", where),
        valid_until_ms=None
        if obj["valid_until_ms"] is None
        else _int(obj, "valid_until_ms", where),
        revoked_at_ms=None if obj["revoked_at_ms"] is None else _int(obj, "revoked_at_ms", where),
    )


def _canonical(value: Any) -> bytes:
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # an infinite float, from 1e999 in the document
        raise KeyringInvalid(f"the keyring holds a number JSON cannot carry: {exc}") from exc
    return text.encode("ascii")  # ensure_ascii, the default, escapes everything else


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one field: which one a reader takes would be a guess.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise KeyringInvalid("the keyring repeats a field in one JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise KeyringInvalid(f"the keyring holds {name}, which is not JSON")


def _object(value: Any, fields: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KeyringInvalid(f"{where} is not a JSON object")
    if missing := sorted(fields - value.keys()):
        raise KeyringInvalid(f"{where}: missing field {', '.join(missing)}")
    if unknown := sorted(value.keys() - fields):
        raise KeyringInvalid(f"{where}: unknown field {', '.join(unknown)}")
    return value


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyringInvalid(f"{where}: {name} is not an integer")
    return value


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise KeyringInvalid(f"{where}: {name} is not a string")
    return value


def _base64(value: Any, length: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except (binascii.Error, ValueError) as exc:
        raise KeyringInvalid(f"{what} is not base64") from exc
    if raw is None or len(raw) != length:
        raise KeyringInvalid(f"{what} is not {length} bytes in base64")
    return raw
