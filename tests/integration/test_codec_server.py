"""The codec server speaks Temporal's remote codec protocol and lets only the UI's origin call it from a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from orderflow.cli.codec import SERVICE_NAME, create_codec_app
from orderflow.codec import ENCRYPTED_ENCODING, KEY_ID_METADATA, CodecKey, EncryptionCodec, new_key

UI = "http://localhost:8233"
ORIGINAL = [
    Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"ada@example.com","line1":"1 Main St"}'),
    Payload(metadata={"encoding": b"binary/null"}),
]


def as_json(payloads: list[Payload]) -> dict[str, Any]:
    """The request body the UI and the CLI send: proto3 JSON of Payloads (base64 data and metadata)."""
    return json_format.MessageToDict(Payloads(payloads=payloads))


def from_json(body: bytes) -> list[Payload]:
    return list(json_format.Parse(body, Payloads()).payloads)


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(CodecKey.from_base64(new_key(), "2026-11"))


@pytest.fixture
async def server(codec: EncryptionCodec) -> AsyncIterator[httpx.AsyncClient]:
    app = create_codec_app(codec, ui_origins=[UI, "http://127.0.0.1:8233"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as client:
        yield client


async def test_decode_returns_the_original_payloads(server: httpx.AsyncClient, codec: EncryptionCodec) -> None:
    encrypted = await codec.encode(ORIGINAL)
    body = as_json(encrypted)
    # What travels is base64: the ciphertext, and metadata values such as the encoding.
    assert body["payloads"][0]["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="

    response = await server.post("/decode", json=body, headers={"X-Namespace": "default", "Origin": UI})

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == UI
    assert from_json(response.content) == ORIGINAL
    # The CLI may template the namespace into the endpoint's path.
    templated = await server.post("/default/decode", json=body)
    assert templated.status_code == 200 and from_json(templated.content) == ORIGINAL


async def test_encode_encrypts_with_the_current_key(server: httpx.AsyncClient, codec: EncryptionCodec) -> None:
    response = await server.post("/encode", json=as_json(ORIGINAL), headers={"X-Namespace": "default"})

    assert response.status_code == 200, response.text
    encrypted = from_json(response.content)
    assert [p.metadata["encoding"] for p in encrypted] == [ENCRYPTED_ENCODING] * 2
    assert {p.metadata[KEY_ID_METADATA] for p in encrypted} == {b"2026-11"}
    assert b"ada@example.com" not in response.content
    assert await codec.decode(encrypted) == ORIGINAL


async def test_a_payload_under_an_unknown_key_is_a_clear_400(server: httpx.AsyncClient) -> None:
    foreign = await EncryptionCodec(CodecKey.from_base64(new_key(), "2025-01")).encode(ORIGINAL[:1])

    response = await server.post("/decode", json=as_json(foreign))

    assert response.status_code == 400
    assert "key id '2025-01'" in response.json()["error"]
    garbage = await server.post(
        "/decode", content=b'{"payloads": "nope"}', headers={"Content-Type": "application/json"}
    )
    assert garbage.status_code == 400


async def test_the_ui_origin_may_call_from_a_browser_and_another_origin_may_not(server: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    for origin in (UI, "http://127.0.0.1:8233"):
        allowed = await server.options("/decode", headers={"Origin": origin, **preflight})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == origin
        allowed_headers = allowed.headers["access-control-allow-headers"].lower()
        assert "x-namespace" in allowed_headers and "content-type" in allowed_headers
        assert "POST" in allowed.headers["access-control-allow-methods"]

    refused = await server.options("/decode", headers={"Origin": "http://evil.example", **preflight})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # A simple request from elsewhere is answered, but without the header a browser needs to read it.
    cross = await server.post("/decode", json=as_json(ORIGINAL), headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in cross.headers


async def test_healthz_names_the_service_and_key_id_only(server: httpx.AsyncClient, codec: EncryptionCodec) -> None:
    body = (await server.get("/healthz")).json()

    assert body == {"status": "ok", "service": SERVICE_NAME, "key_id": "2026-11"}
