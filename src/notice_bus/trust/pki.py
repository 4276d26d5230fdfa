"""``notice-bus pki``: everything a test or small deployment needs to be trusted, in one folder.

    DIR/ca.crt, ca.key            the CA every broker and client certificate is signed by
    DIR/broker/server.pem          the broker's key and certificate (127.0.0.1, localhost and
                                   the --broker-name given)
    DIR/<principal>/               admin, hq, tracker, bureau-CC, hub-NAME: client.crt/.key
                                   (mutual TLS; CN = the principal), scram.password (SCRAM),
                                   notice-bus.toml (the settings that use them)
    DIR/signing/root.key, .pub     the keyring's root (keep root.key offline)
    DIR/hq/signing.key             HQ's current notice-signing key
    DIR/signing/ack-master.key     HQ's and the tracker's secret; DIR/bureau-CC/ack.keys derive
    DIR/principals.toml            the registry ``acl apply`` grants (no secrets)

Idempotent: what exists is kept, so running it again with one more country issues that
country alone. Private keys and passwords are written with mode 0600. A large deployment has a
CA of its own; the certificates' only requirement is that their CN is the principal's name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from notice_bus.errors import OutputError
from notice_bus.trust import keys
from notice_bus.trust.ack_mac import bureau_key
from notice_bus.trust.keyring import Keyring, write_keyring
from notice_bus.trust.principals import (
    Principal,
    bureau_name,
    hub_name,
    read_principals,
    write_principals,
)

_YEARS = 3
ORGANISATION = "notice-bus"


def issue(
    folder: str | Path,
    *,
    countries: Iterable[str] = (),
    hubs: Mapping[str, Sequence[str]] | None = None,
    protocol: str = "SASL_SSL",
    broker_names: Sequence[str] = (),
) -> list[Path]:
    """Issue what is missing in ``folder`` for admin, HQ, the tracker, a bureau per country and
    the ``hubs`` (name: countries); returns the files written. The broker's certificate names
    localhost, 127.0.0.1 and ``broker_names`` (the hosts clients reach it by), and is issued
    again when it lacks one of them."""
    root = Path(folder).resolve()
    written: list[Path] = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = _ca(root, written)
        server = root / "broker" / "server.pem"
        names = ["localhost", "127.0.0.1", *broker_names]
        if not server.exists() or not set(names) <= names_in(server):
            _write_pair(server, server, "broker", ca_key, ca_cert, server_names=names)
            written.append(server)
        registry_path = root / "principals.toml"
        registry = read_principals(registry_path) if registry_path.exists() else {}
        wanted = [
            Principal("admin", "admin"),
            Principal("hq", "hq"),
            Principal("tracker", "tracker"),
        ]
        wanted += [Principal(bureau_name(c), "bureau", (c,)) for c in countries]
        wanted += [Principal(hub_name(h), "hub", tuple(cs)) for h, cs in (hubs or {}).items()]
        master = _signing(root, written)
        for p in wanted:
            if p.name in registry and set(p.countries) <= set(registry[p.name].countries):
                continue
            if p.name in registry:  # a hub given more countries keeps its credentials
                p = Principal(
                    p.name, p.role, tuple(dict.fromkeys(registry[p.name].countries + p.countries))
                )
            registry[p.name] = p
            _principal(root, p, ca_key, ca_cert, master, protocol, written)
        write_principals(registry_path, registry.values())
    except OSError as exc:
        raise OutputError(f"cannot write the credentials in {root}: {exc}") from exc
    return written


def _ca(root: Path, written: list[Path]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = root / "ca.key", root / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "notice-bus CA"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _secret_file(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    written += [key_path, cert_path]
    return key, cert


def _write_pair(
    key_path: Path,
    cert_path: Path,
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server_names: Sequence[str] = (),
) -> None:
    """A key and a certificate for ``common_name`` signed by the CA; the same path for both
    makes one PEM file holding the key then the certificate (Kafka's PEM key store)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if server_names
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server_names:
        names = [_general_name(n) for n in server_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    if key_path == cert_path:
        _secret_file(key_path, _pem_key(key) + cert)
    else:
        _secret_file(key_path, _pem_key(key))
        cert_path.write_bytes(cert)


def _signing(root: Path, written: list[Path]) -> bytes:
    """The keyring's root, HQ's first signing key in a keyring the root signs, and the ack
    master secret; returns the latter."""
    folder = root / "signing"
    root_key_path, hq_key_path = folder / "root.key", root / "hq" / "signing.key"
    if not root_key_path.exists():
        root_key = keys.generate_private_key()
        keys.write_private_key(root_key_path, root_key)
        keys.write_public_key(folder / "root.pub", root_key.public_key())
        hq_key = keys.generate_private_key()
        keys.write_private_key(hq_key_path, hq_key)
        ring = Keyring.empty().add(keys.raw_public_key(hq_key.public_key()), "hq", _now_ms())
        write_keyring(folder / "keyring.json", ring, root_key)
        written += [root_key_path, folder / "root.pub", hq_key_path, folder / "keyring.json"]
    master_path = folder / "ack-master.key"
    if not master_path.exists():
        keys.write_secret(master_path, keys.generate_secret())
        written.append(master_path)
    return keys.read_secret(master_path)


def _principal(
    root: Path,
    p: Principal,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    master: bytes,
    protocol: str,
    written: list[Path],
) -> None:
    folder = root / p.name
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "client.crt").exists():
        _write_pair(folder / "client.key", folder / "client.crt", p.name, ca_key, ca_cert)
        written += [folder / "client.key", folder / "client.crt"]
    if not (folder / "scram.password").exists():
        _secret_file(folder / "scram.password", secrets.token_urlsafe(24).encode())
        written.append(folder / "scram.password")
    lines = [
        f"# notice-bus settings of {p.name} ({p.role}), written by notice-bus pki.",
        "# Use: NOTICE_BUS_CONFIG=<this file>, or copy these lines into your own.",
        f'security_protocol = "{protocol}"',
        f'sasl_username = "{p.name}"',
        f'sasl_password_file = "{folder / "scram.password"}"',
        f'ssl_cafile = "{root / "ca.crt"}"',
        f'ssl_certfile = "{folder / "client.crt"}"',
        f'ssl_keyfile = "{folder / "client.key"}"',
        f'root_key_file = "{root / "signing" / "root.pub"}"',
        f'principals_file = "{root / "principals.toml"}"',
    ]
    if p.role == "hq":
        lines.append(f'signing_key_file = "{root / "hq" / "signing.key"}"')
        lines.append(f'keyring_file = "{root / "signing" / "keyring.json"}"')
    if p.role in ("hq", "tracker", "admin"):
        lines.append(f'ack_master_file = "{root / "signing" / "ack-master.key"}"')
    if p.role in ("bureau", "hub"):
        keyfile = folder / "ack.keys"
        text = "".join(f"{c} {bureau_key(master, c).hex()}\n" for c in p.countries)
        _secret_file(keyfile, text.encode())
        lines.append(f'ack_key_file = "{keyfile}"')
    (folder / "notice-bus.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(folder / "notice-bus.toml")


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def names_in(path: Path) -> set[str]:
    """The host names and addresses a certificate (the last PEM block of ``path``) is for."""
    cert = x509.load_pem_x509_certificates(path.read_bytes())[-1]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in san}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner alone, from the moment the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)
