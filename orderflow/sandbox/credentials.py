"""Credentials the sandbox needs generated locally: the key pair behind NetSuite's M2M certificate.

Real NetSuite holds the public certificate of a mapping and the integration holds the private
key. For a sandbox we generate one pair per machine, under `.orderflow/sandbox/`, so no private key
is ever committed and both the sandbox and the adapter's default settings find it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def public_key_path(private_key_file: Path) -> Path:
    """Where the public half of a generated key pair is kept."""
    return private_key_file.with_suffix(".pub.pem")


def ensure_m2m_keypair(private_key_file: Path) -> Path:
    """Create an RSA key pair for the M2M mapping if there is none yet; returns the public key file."""
    public_file = public_key_path(private_key_file)
    if private_key_file.exists() and public_file.exists():
        return public_file
    private_key_file.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Owner-only from the first byte: a private key is never world-readable, even briefly.
    fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_file.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public_file
