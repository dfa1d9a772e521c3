"""Connecting to any Temporal by configuration: envconfig's variables and profile file, explicit arguments winning."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from orderflow.temporal import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, client_connect_config, connect

CLOUD_ADDRESS = "orderflow-prod.a1b2c.tmprl.cloud:7233"


@pytest.fixture(autouse=True)
def no_temporal_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TEMPORAL_* variable from the machine, and an empty profile file instead of the user's own."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    profile_file = tmp_path / "temporal.toml"
    profile_file.write_text("")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile_file))
    return profile_file


def test_with_nothing_configured_it_is_the_local_dev_server_in_plaintext() -> None:
    config = client_connect_config()

    assert config == {"target_host": DEFAULT_ADDRESS, "namespace": DEFAULT_NAMESPACE}


def test_an_api_key_profile_carries_the_key_and_turns_tls_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", CLOUD_ADDRESS)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "orderflow-prod.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", "an-api-key")

    config = client_connect_config()

    assert config == {
        "target_host": CLOUD_ADDRESS,
        "namespace": "orderflow-prod.a1b2c",
        "api_key": "an-api-key",
        "tls": True,
    }


def test_an_mtls_profile_carries_the_client_certificate_key_and_server_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, content in {"client.pem": b"CLIENT CERT", "client.key": b"CLIENT KEY", "ca.pem": b"SERVER CA"}.items():
        (tmp_path / name).write_bytes(content)
    monkeypatch.setenv("TEMPORAL_ADDRESS", CLOUD_ADDRESS)
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(tmp_path / "client.pem"))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(tmp_path / "client.key"))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "orderflow-prod.a1b2c.tmprl.cloud")

    config = client_connect_config()

    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (
        b"CLIENT CERT",
        b"CLIENT KEY",
        b"SERVER CA",
    )
    assert tls.domain == "orderflow-prod.a1b2c.tmprl.cloud"
    assert "api_key" not in config


def test_explicit_address_and_namespace_win_over_the_profile_but_keep_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", CLOUD_ADDRESS)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "orderflow-prod.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", "an-api-key")

    config = client_connect_config("temporal.internal:7233", "staging")

    assert (config["target_host"], config["namespace"]) == ("temporal.internal:7233", "staging")
    assert (config.get("api_key"), config.get("tls")) == ("an-api-key", True)


async def test_the_dev_server_is_reached_from_the_environment_alone(
    dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = dev_server.client.service_client.config.target_host
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)

    client = await connect(codec=None)

    assert (client.service_client.config.target_host, client.namespace) == (address, DEFAULT_NAMESPACE)
    assert await client.service_client.check_health()


async def test_the_dev_server_is_reached_from_a_profile_file(
    dev_server: WorkflowEnvironment, no_temporal_environment: Path
) -> None:
    address = dev_server.client.service_client.config.target_host
    no_temporal_environment.write_text(f'[profile.default]\naddress = "{address}"\nnamespace = "default"\n')

    client = await connect(codec=None)

    assert client.service_client.config.target_host == address
    assert await client.service_client.check_health()


async def test_a_tls_profile_is_used_for_the_connection(
    dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dev server speaks plaintext: a client that really tries TLS cannot get through.
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_TLS", "true")

    with pytest.raises(RuntimeError, match="connect"):
        async with asyncio.timeout(10):
            await connect(codec=None)
