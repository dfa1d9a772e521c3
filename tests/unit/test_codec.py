"""The payload codec: AES-GCM round trips, key rotation, plain payloads passing through, keys from settings."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from typer.testing import CliRunner

from orderflow.cli import app
from orderflow.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    CodecKey,
    CodecKeyError,
    EncryptionCodec,
    PayloadDecryptionError,
    UnknownEncryptionKeyError,
    codec_from_settings,
    key_fingerprint,
    new_key,
    parse_key_list,
)
from orderflow.settings import CodecSettings, Settings
from orderflow.temporal import data_converter

EMAIL = b"ada@example.com"
STREET = b"1 Main St"


def json_payload(body: bytes) -> Payload:
    """A payload as the pydantic converter writes one: JSON data, its encoding in the metadata."""
    return Payload(metadata={"encoding": b"json/plain", "messageType": b"Address"}, data=body)


ORIGINAL = json_payload(b'{"line1":"1 Main St","email":"ada@example.com"}')


def key(key_id: str) -> CodecKey:
    return CodecKey.from_base64(new_key(), key_id)


async def test_a_payload_is_encrypted_whole_and_decrypts_to_the_original() -> None:
    codec = EncryptionCodec(key("2026-11"))

    [encoded] = await codec.encode([ORIGINAL])

    assert dict(encoded.metadata) == {"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: b"2026-11"}
    raw = encoded.SerializeToString()
    # Neither the customer's data nor the original encoding or type name is readable.
    for secret in (EMAIL, STREET, b"json/plain", b"Address"):
        assert secret not in raw
    assert len(encoded.data) == 12 + len(ORIGINAL.SerializeToString()) + 16  # nonce + ciphertext + GCM tag
    assert await codec.decode([encoded]) == [ORIGINAL]


async def test_the_same_payload_encrypts_differently_each_time() -> None:
    codec = EncryptionCodec(key("k1"))

    first, second = await codec.encode([ORIGINAL, ORIGINAL])

    assert first.data[:12] != second.data[:12] and first.data != second.data


async def test_after_a_rotation_payloads_under_the_old_key_still_decrypt() -> None:
    old, new = key("2026-10"), key("2026-11")
    [before_rotation] = await EncryptionCodec(old).encode([ORIGINAL])

    rotated = EncryptionCodec(new, old_keys=[old])
    [after_rotation] = await rotated.encode([ORIGINAL])

    assert after_rotation.metadata[KEY_ID_METADATA] == b"2026-11"
    assert await rotated.decode([before_rotation, after_rotation]) == [ORIGINAL, ORIGINAL]


async def test_without_the_old_key_a_payload_fails_naming_the_missing_key_id() -> None:
    old, new = key("2026-10"), key("2026-11")
    [before_rotation] = await EncryptionCodec(old).encode([ORIGINAL])

    with pytest.raises(UnknownEncryptionKeyError, match=r"key id '2026-10'.*known: 2026-11"):
        await EncryptionCodec(new).decode([before_rotation])


async def test_a_different_key_under_the_same_id_or_altered_data_does_not_decrypt() -> None:
    [encoded] = await EncryptionCodec(key("k1")).encode([ORIGINAL])
    with pytest.raises(PayloadDecryptionError, match="'k1' does not decrypt"):
        await EncryptionCodec(key("k1")).decode([encoded])

    codec = EncryptionCodec(key("k2"))
    [encoded] = await codec.encode([ORIGINAL])
    tampered = Payload(metadata=encoded.metadata, data=encoded.data[:-1] + bytes([encoded.data[-1] ^ 1]))
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([tampered])


async def test_plain_payloads_from_before_encryption_pass_through_decoding() -> None:
    codec = EncryptionCodec(key("k1"))
    null = Payload(metadata={"encoding": b"binary/null"})
    [encrypted] = await codec.encode([ORIGINAL])

    assert await codec.decode([ORIGINAL, null, encrypted]) == [ORIGINAL, null, ORIGINAL]


def test_one_key_id_cannot_name_two_keys() -> None:
    with pytest.raises(CodecKeyError, match="configured twice"):
        EncryptionCodec(key("k1"), old_keys=[key("k1")])


def test_keys_must_be_32_bytes_of_base64() -> None:
    with pytest.raises(CodecKeyError, match="32 bytes"):
        CodecKey.from_base64(base64.b64encode(os.urandom(16)).decode())
    with pytest.raises(CodecKeyError, match="base64"):
        CodecKey.from_base64("not base64 at all!")
    assert len(base64.b64decode(new_key())) == 32


def test_a_key_never_shows_in_its_repr() -> None:
    encoded = new_key()
    codec_key = CodecKey.from_base64(encoded, "k1")
    codec = EncryptionCodec(codec_key)
    settings = Settings(codec=CodecSettings(key=encoded, key_id="k1"))  # type: ignore[arg-type]

    for shown in (repr(codec_key), repr(codec), repr(settings), str(settings.model_dump())):
        assert encoded not in shown and repr(codec_key.key) not in shown


async def test_the_data_converter_encrypts_pydantic_models_and_reads_them_back() -> None:
    from orderflow.canonical import Address

    address = Address(
        name="Ada Lovelace", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US",
        email="ada@example.com",
    )  # fmt: skip
    converter = data_converter(EncryptionCodec(key("k1")))

    [payload] = await converter.encode([address])

    assert payload.metadata["encoding"] == ENCRYPTED_ENCODING
    assert EMAIL not in payload.SerializeToString() and STREET not in payload.SerializeToString()
    assert await converter.decode([payload], [Address]) == [address]
    # A failure's message and stack trace are encrypted too: an adapter error may quote the address.
    failure = Failure()
    await converter.encode_failure(ValueError("no such street: 1 Main St"), failure)
    assert failure.message == "Encoded failure" and STREET not in failure.SerializeToString()
    assert "1 Main St" in str(await converter.decode_failure(failure))
    assert data_converter(None).payload_codec is None


def test_the_codec_is_off_unless_a_key_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ORDERFLOW_CODEC__")]:
        monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert not settings.codec.enabled
    assert codec_from_settings(settings.codec) is None


def test_the_key_and_old_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    current, old_a, old_b = new_key(), new_key(), new_key()
    monkeypatch.setenv("ORDERFLOW_CODEC__KEY_ID", "2026-11")
    monkeypatch.setenv("ORDERFLOW_CODEC__KEY", current)
    monkeypatch.setenv("ORDERFLOW_CODEC__OLD_KEYS", f"2026-10={old_a}, {old_b}")

    codec = codec_from_settings(Settings(_env_file=None).codec)  # type: ignore[call-arg]

    assert codec is not None and codec.key_id == "2026-11"
    # An old key given without an id is known by its fingerprint, the id it had as an id-less current key.
    assert codec.key_ids == {"2026-11", "2026-10", key_fingerprint(base64.b64decode(old_b))}


async def test_keys_can_come_from_files(tmp_path: Path) -> None:
    current, old = tmp_path / "codec.key", tmp_path / "old.keys"
    current.write_text(new_key() + "\n")
    old_key = new_key()
    old.write_text(f"# rotated out on 2026-11-01\n2026-10={old_key}\n")
    [before_rotation] = await EncryptionCodec(CodecKey.from_base64(old_key, "2026-10")).encode([ORIGINAL])

    codec = codec_from_settings(CodecSettings(key_file=current, old_keys_file=old))

    assert codec is not None and codec.key_id.startswith("k-")
    assert await codec.decode([before_rotation]) == [ORIGINAL]


def test_a_malformed_key_stops_the_codec_without_showing_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = base64.b64encode(b"short-key-material").decode()
    monkeypatch.setenv("ORDERFLOW_CODEC__KEY", bad)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    with pytest.raises(CodecKeyError, match="32 bytes") as raised:
        codec_from_settings(settings.codec)
    assert bad not in str(raised.value)
    with pytest.raises(ValueError, match="not both"):
        CodecSettings(key=new_key(), key_file=Path("codec.key")).current_key()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be read"):
        CodecSettings(key_file=Path("/nonexistent/codec.key")).current_key()
    with pytest.raises(ValidationError) as unknown_field:
        CodecSettings(key=bad, keyfile="codec.key")  # type: ignore[arg-type, call-arg]
    assert bad not in str(unknown_field.value)


def test_old_keys_parse_with_padding_comments_and_separators() -> None:
    a, b = new_key(), new_key()

    keys = parse_key_list(f"a={a}\n# comment\n\n b = {b} ,")

    assert [(k.key_id, k.key) for k in keys] == [("a", base64.b64decode(a)), ("b", base64.b64decode(b))]


def test_codec_key_prints_a_new_key_and_writes_a_private_file_once(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["codec-key"])
    assert printed.exit_code == 0, printed.output
    assert len(base64.b64decode(printed.output.strip(), validate=True)) == 32

    target = tmp_path / "codec.key"
    written = runner.invoke(app, ["codec-key", "--out", str(target)])
    assert written.exit_code == 0, written.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    first = target.read_text()
    assert CodecSettings(key_file=target).current_key() is not None

    again = runner.invoke(app, ["codec-key", "--out", str(target)])
    assert again.exit_code == 2 and target.read_text() == first
