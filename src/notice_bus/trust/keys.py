"""Key files: Ed25519 key pairs in PEM, and 32-byte secrets in hex.

A private key is written unencrypted as PEM PKCS#8 and a secret as one line of hex, both with
mode 0600: the file system's permissions are their only protection, so they are set on the
open file descriptor before a byte is written, whether the file is new or not. A public key is
PEM SubjectPublicKeyInfo, mode 0644. Every failure to read one (a missing file, garbage, a key
of another type, a secret of another length) is a :class:`ConfigError` naming the path; a file
that cannot be written is an :class:`OutputError`.

A key's id is the first 16 hex digits of the SHA-256 of its raw 32 bytes: short enough for a
record header, and derived from the key, so that an id cannot name two keys in one keyring.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from notice_bus.errors import ConfigError, OutputError

SECRET_BYTES = 32
PUBLIC_KEY_BYTES = 32
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate_secret() -> bytes:
    """A fresh random secret for :func:`write_secret` (the acknowledgements' master secret)."""
    return secrets.token_bytes(SECRET_BYTES)


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The key's 32 raw bytes, as the keyring stores them."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """The id of a public key, given as an object or as its raw 32 bytes."""
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    return hashlib.sha256(raw).hexdigest()[:16]


def write_private_key(path: str | Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(Path(path), pem, PRIVATE_MODE, "private key")


def write_public_key(path: str | Path, key: Ed25519PublicKey) -> None:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(Path(path), pem, PUBLIC_MODE, "public key")


def read_private_key(path: str | Path) -> Ed25519PrivateKey:
    data = _read(Path(path), "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's word for "this key needs a password"
        raise ConfigError(
            f"{path}: the private key is encrypted; only unencrypted ones are read"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: holds {_kind(key)}, not an Ed25519 private key")
    return key


def read_public_key(path: str | Path) -> Ed25519PublicKey:
    data = _read(Path(path), "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path}: not a PEM public key (SubjectPublicKeyInfo)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: holds {_kind(key)}, not an Ed25519 public key")
    return key


def write_secret(path: str | Path, data: bytes) -> None:
    _check_secret(Path(path), data)
    _write(Path(path), data.hex().encode("ascii") + b"\n", PRIVATE_MODE, "secret")


def read_secret(path: str | Path) -> bytes:
    text = _read(Path(path), "secret")
    try:
        data = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: the secret is not one line of hex digits") from exc
    _check_secret(Path(path), data)
    return data


def _check_secret(path: Path, data: bytes) -> None:
    if len(data) != SECRET_BYTES:
        raise ConfigError(f"{path}: a secret of {len(data)} bytes; {SECRET_BYTES} are needed")


def _kind(key: object) -> str:
    name = type(key).__name__.lstrip("_").removesuffix("PrivateKey").removesuffix("PublicKey")
    return f"a key of type {name}"


def _write(path: Path, data: bytes, mode: int, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            # The mode of os.open applies to a new file only, and the umask may narrow it.
            os.fchmod(fd, mode)
            f.write(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what} file: {exc.strerror}") from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {what} file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc.strerror}") from exc
