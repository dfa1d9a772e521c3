"""`orderflow dev --encrypt`: a key of its own, a codec server with it, and the Temporal UI pointed at it."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from orderflow.codec import ENCRYPTED_ENCODING, codec_from_settings
from orderflow.devstack import DevStack, StackPorts
from orderflow.settings import CodecSettings, get_settings

ORIGINAL = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"ada@example.com"}')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_configured_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key in the environment, so `--encrypt` has to make its own."""
    for name in [n for n in os.environ if n.startswith("ORDERFLOW_CODEC__")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    assert not get_settings().codec.enabled
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def test_encrypt_generates_a_key_once_and_the_ui_decodes_through_the_codec_server(
    tmp_path: Path, no_configured_key: None
) -> None:
    ports = StackPorts(
        temporal=free_port(), ui=free_port(), sandbox=free_port(), webhooks=free_port(), codec=free_port()
    )
    stack = DevStack(ports=ports, state_dir=tmp_path, services=["temporal"], encrypt=True, stop_grace=5)

    async with stack:
        key_file = tmp_path / "codec.key"
        assert stack.codec_key_file == key_file.resolve()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stack.codec is not None and stack.child_pids().keys() == {"temporal", "codec"}
        async with httpx.AsyncClient(timeout=5) as http:
            # The UI was started with the codec server as its remote codec endpoint.
            ui_settings = (await http.get(f"{stack.ui_url}/api/v1/settings")).json()
            assert ui_settings["Codec"]["Endpoint"] == stack.codec_url
            # What the UI's browser page would send, from the UI's own origin.
            [encrypted] = await stack.codec.encode([ORIGINAL])
            response = await http.post(
                f"{stack.codec_url}/decode",
                json=json_format.MessageToDict(Payloads(payloads=[encrypted])),
                headers={"Origin": stack.ui_url, "X-Namespace": "default"},
            )
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == stack.ui_url
        assert list(json_format.Parse(response.content, Payloads()).payloads) == [ORIGINAL]
        assert encrypted.metadata["encoding"] == ENCRYPTED_ENCODING
        key_id = stack.codec.key_id

    # A second run keeps the key (the first run's histories stay readable) and serves the same key id.
    first_key = key_file.read_text()
    again = DevStack(ports=ports, state_dir=tmp_path, encrypt=True)
    await again.start(services=[])  # only the key: no child needed to see which one it takes
    assert key_file.read_text() == first_key
    assert again.codec is not None and again.codec.key_id == key_id
    settings_codec = codec_from_settings(CodecSettings(key_file=key_file))
    assert settings_codec is not None and settings_codec.key_id == key_id
