"""What signing costs, per record, on this machine: `python -m bench.signing`.

HQ signs each event once (:class:`Signer`, Ed25519) and every bureau verifies each record it
reads (:class:`Verifier`, with its public keys loaded once); a bureau MACs each
acknowledgement (:class:`AckSigner`, HMAC-SHA256) and the tracker checks them all
(:class:`AckVerifier`). Each operation runs on a 700-byte Avro-like value, ``NUMBER`` times per
run, best of ``REPEAT`` runs (timeit's advice: the others measure the machine's other work).
"verify, cold" is the function form, which loads the public key on every call.
"""

from __future__ import annotations

import os
import platform
import random
import timeit
from collections.abc import Callable

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend

from notice_bus.trust.ack_mac import AckSigner, AckVerifier, bureau_key
from notice_bus.trust.keyring import Keyring
from notice_bus.trust.keys import generate_private_key, generate_secret
from notice_bus.trust.signing import Signer, Verifier, verify

NUMBER = int(os.environ.get("BENCH_SIGNING_NUMBER", "2000"))
REPEAT = 5
KEY = b"2026/104857"


def avro_like_value(size: int = 700) -> bytes:
    """Single-object encoding's marker and fingerprint, then length-prefixed text fields and
    a few numbers, as a notice event's encoding looks: not compressible to nothing."""
    rng = random.Random(7)
    out = bytearray(b"\xc3\x01" + rng.randbytes(8))
    words = b"SMITH JOHN ALIAS JOHNNY born 1980 FR DE fraud money laundering armed robbery"
    while len(out) < size:
        field = b" ".join(rng.choice(words.split()) for _ in range(rng.randint(1, 6)))
        out += bytes([len(field) * 2 % 256]) + field + rng.randbytes(2)
    return bytes(out[:size])


def measure() -> dict[str, float]:
    """Microseconds per operation, by operation."""
    value = avro_like_value()
    private = generate_private_key()
    signer = Signer(private)
    ring = Keyring.empty().add(private.public_key(), "hq", 0)
    verifier = Verifier(ring)
    headers = signer.headers(KEY, value)
    master = generate_secret()
    ack_signer = AckSigner(bureau_key(master, "FR"), "FR")
    ack_verifier = AckVerifier(master)
    ack_headers = ack_signer.headers(KEY, value)
    at = 1

    def check_ack() -> None:
        if ack_verifier.check("FR", KEY, value, ack_headers) is not None:
            raise AssertionError("the benchmark's acknowledgement does not pass")

    ops: dict[str, Callable[[], object]] = {
        "ed25519_sign_us": lambda: signer.headers(KEY, value),
        "ed25519_verify_us": lambda: verifier.verify(KEY, value, headers, at),
        "ed25519_verify_cold_us": lambda: verify(ring, KEY, value, headers, at),
        "ack_mac_us": lambda: ack_signer.headers(KEY, value),
        "ack_check_us": check_ack,
    }
    for op in ops.values():
        op()  # fails here, before timing, if the record does not pass
    return {
        name: min(timeit.repeat(op, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6
        for name, op in ops.items()
    }


LABELS = {
    "ed25519_sign_us": "sign (Signer.headers)",
    "ed25519_verify_us": "verify (Verifier.verify)",
    "ed25519_verify_cold_us": "verify, cold (verify())",
    "ack_mac_us": "ack MAC (AckSigner.headers)",
    "ack_check_us": "ack check (AckVerifier.check)",
}


def main() -> None:
    print(
        f"signing, {len(avro_like_value())}-byte value, best of {REPEAT} x {NUMBER}; Python"
        f" {platform.python_version()}, cryptography {cryptography.__version__}"
        f" ({backend.openssl_version_text()}), {platform.machine()}, {os.cpu_count()} CPUs"
    )
    figures = measure()
    print(f"{'operation':32} {'µs/op':>8} {'ops/s/core':>11}")
    for name, us in figures.items():
        print(f"{LABELS[name]:32} {us:8.1f} {1e6 / us:11,.0f}")


if __name__ == "__main__":
    main()
