"""Encrypted payloads: an AES-256-GCM payload codec, so customer data never sits in plaintext in Temporal.

Every payload a client or worker sends (workflow inputs and results, activity inputs and results, signals,
queries, memos) is serialised to its protobuf bytes, metadata included, and encrypted whole. What the
Temporal server stores is then only:

    metadata: {"encoding": "binary/encrypted", "encryption-key-id": "<key id>"}
    data:     nonce (12 bytes) + AES-256-GCM ciphertext (with its 16-byte tag)

so not even the original encoding (json/plain, the pydantic type) is visible. One current key encrypts;
old keys are kept for decryption only, so histories written before a rotation still read. Payloads that
were never encrypted pass through decoding untouched: histories from before encryption was switched on
stay readable. Search attributes are not payloads and are never encrypted: keep PII out of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

if TYPE_CHECKING:
    from orderflow.settings import CodecSettings

# The metadata encoding of an encrypted payload (the name Temporal's own encryption samples use).
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random per payload, so a key may encrypt ~2^32 payloads safely

__all__ = [
    "ENCRYPTED_ENCODING",
    "KEY_ID_METADATA",
    "CodecKey",
    "CodecKeyError",
    "EncryptionCodec",
    "PayloadDecryptionError",
    "UnknownEncryptionKeyError",
    "codec_from_settings",
    "decode_key",
    "describe_keys",
    "key_fingerprint",
    "new_key",
    "parse_key_list",
]


class CodecKeyError(ValueError):
    """A configured payload encryption key is malformed (not 32 bytes of base64) or ambiguous."""


class UnknownEncryptionKeyError(ValueError):
    """A payload was encrypted under a key id that is neither the current key nor a configured old key."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload does not decrypt under the key its id names: wrong key material or tampered data."""


def new_key() -> str:
    """A fresh payload encryption key: 32 random bytes, base64."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def decode_key(encoded: str) -> bytes:
    """The 32 key bytes of a base64 key, refusing anything that is not an AES-256 key."""
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecKeyError("a payload encryption key must be base64 (see `orderflow codec-key`)") from exc
    if len(key) != KEY_BYTES:
        raise CodecKeyError(
            f"a payload encryption key must be {KEY_BYTES} bytes, base64 (got {len(key)} bytes); "
            "create one with `orderflow codec-key`"
        )
    return key


def key_fingerprint(key: bytes) -> str:
    """A key id derived from the key itself, for keys configured without one (reveals nothing of the key)."""
    return "k-" + hashlib.sha256(b"orderflow-codec-key-id:" + key).hexdigest()[:12]


@dataclass(frozen=True, repr=False)
class CodecKey:
    """One payload encryption key and the id written next to every payload it encrypts."""

    key_id: str
    key: bytes

    def __post_init__(self) -> None:
        if not self.key_id or any(c in self.key_id for c in ",= \n\t"):
            raise CodecKeyError(f"invalid encryption key id {self.key_id!r}: no spaces, commas or '='")
        if len(self.key) != KEY_BYTES:
            raise CodecKeyError(f"an encryption key must be {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        # Never the key material, even in a traceback's locals.
        return f"CodecKey(key_id={self.key_id!r})"

    @classmethod
    def from_base64(cls, encoded: str, key_id: str | None = None) -> CodecKey:
        """A key from its base64 form; without an id, the id is the key's fingerprint."""
        key = decode_key(encoded)
        return cls(key_id or key_fingerprint(key), key)


def parse_key_list(text: str) -> list[CodecKey]:
    """Old keys written as `id=base64key` entries, separated by commas or lines (`#` starts a comment).

    An entry without `id=` gets the key's fingerprint as its id, the same id an id-less current key has.
    """
    keys: list[CodecKey] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in line.split(","):
            entry = entry.strip()
            if not entry:
                continue
            # base64 may end in '=' padding, so only an '=' before the key material separates the id.
            key_id, sep, encoded = entry.partition("=")
            if sep and encoded.rstrip("="):
                keys.append(CodecKey.from_base64(encoded, key_id.strip()))
            else:
                keys.append(CodecKey.from_base64(entry))
    return keys


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the current key and decrypts with whichever configured key it names."""

    def __init__(self, current: CodecKey, old_keys: Sequence[CodecKey] = ()) -> None:
        self._current = current
        keys: dict[str, bytes] = {}
        for codec_key in (current, *old_keys):
            known = keys.get(codec_key.key_id)
            if known is not None and known != codec_key.key:
                raise CodecKeyError(f"encryption key id {codec_key.key_id!r} is configured twice with different keys")
            keys[codec_key.key_id] = codec_key.key
        self._ciphers: dict[str, AESGCM] = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def key_id(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return self._current.key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """Every key id this codec can decrypt."""
        return frozenset(self._ciphers)

    def __repr__(self) -> str:
        return f"EncryptionCodec(key_id={self.key_id!r}, old={sorted(self.key_ids - {self.key_id})})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """The payloads encrypted whole (metadata and data) with the current key."""
        cipher = self._ciphers[self._current.key_id]
        key_id = self._current.key_id.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            ciphertext = cipher.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id},
                    data=nonce + ciphertext,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """The original payloads; ones that were never encrypted come back as they are."""
        return [self._decrypt(payload) for payload in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownEncryptionKeyError(
                f"payload was encrypted with key id {key_id!r}, which is not configured "
                f"(known: {', '.join(sorted(self._ciphers))}); add it to ORDERFLOW_CODEC__OLD_KEYS "
                "as id=base64key to read this history"
            )
        data = payload.data
        try:
            plaintext = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag as exc:
            raise PayloadDecryptionError(
                f"payload under key id {key_id!r} does not decrypt: the key configured for that id is "
                "not the one it was encrypted with, or the payload was altered"
            ) from exc
        decoded = Payload()
        decoded.ParseFromString(plaintext)
        return decoded


def codec_from_settings(settings: CodecSettings) -> EncryptionCodec | None:
    """The payload codec the settings configure, or None when no key is configured (encryption off)."""
    current = settings.current_key()
    if current is None:
        return None
    return EncryptionCodec(current, settings.decryption_keys())


def describe_keys(codec: EncryptionCodec) -> Mapping[str, str]:
    """The codec's key ids and their roles, for a startup log line (never key material)."""
    return {key_id: ("current" if key_id == codec.key_id else "decrypt-only") for key_id in sorted(codec.key_ids)}
